//! Who holds a lock: a process, named so that a recycled pid is not mistaken for it.
//!
//! A process is its pid plus its start time (field 22 of `/proc/<pid>/stat`, clock
//! ticks since boot): the pair is unique over the life of the system. A holder is
//! alive if a process with that pid exists, has that start time, and is not a zombie
//! (a killed process that is not reaped yet holds nothing any more).

use std::sync::OnceLock;

/// A process that may hold a lock or permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) pid: u32,
    pub(crate) start: u64,
}

/// `(state, start time)` of a process, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume
    // after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22, 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// This process.
pub(crate) fn me() -> Owner {
    static ME: OnceLock<Owner> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        Owner {
            pid,
            start: stat(pid).map_or(0, |s| s.1),
        }
    })
}

/// Whether `owner` still runs.
pub(crate) fn is_alive(owner: Owner) -> bool {
    if owner == me() {
        return true;
    }
    match stat(owner.pid) {
        Some((state, start)) => start == owner.start && state != 'Z' && state != 'X',
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = me();
        assert!(me.start > 0);
        assert!(is_alive(me));
        // The same pid started at another time is a different process.
        assert!(!is_alive(Owner {
            pid: me.pid,
            start: me.start + 1
        }));
        assert!(!is_alive(Owner {
            pid: u32::MAX / 2,
            start: 1
        }));
    }
}
