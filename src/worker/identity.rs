//! What a child procpool started knows about itself: its parent, whether it is a
//! daemon, its name. Set by the worker entry before user code runs; read by
//! [`crate::current_process`] and [`crate::parent_process`].

use std::sync::OnceLock;

/// Who this process is, when procpool started it.
#[derive(Debug)]
pub(crate) struct Identity {
    /// The parent's pid.
    pub(crate) parent: u32,
    /// Whether it is daemonic.
    pub(crate) daemon: bool,
    /// Its name, and whether it is a one-shot `Process` child (else a pool worker).
    pub(crate) name: OnceLock<(String, bool)>,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

/// Records, in a freshly started child, who its parent is and whether it is a daemon.
pub(crate) fn set_parent(parent: u32, daemon: bool) {
    let _ = IDENTITY.set(Identity {
        parent,
        daemon,
        name: OnceLock::new(),
    });
}

/// Records a child's name and whether it is a one-shot `Process` child.
pub(crate) fn set_name(name: String, one_shot: bool) {
    if let Some(id) = IDENTITY.get() {
        let _ = id.name.set((name, one_shot));
    }
}

/// This process's identity; `None` in a process procpool did not start.
pub(crate) fn get() -> Option<&'static Identity> {
    IDENTITY.get()
}
