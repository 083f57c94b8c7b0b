//! When a parent exits, its daemonic children die with it and its non-daemonic
//! children run on. The parent is a real helper process (a `Process` child of this
//! test) that starts one of each and returns without joining them. This test process
//! makes itself the orphans' subreaper to watch and reap them, so it is the only test
//! in its binary.

mod common;

use procpool::{Exit, Process};

fn sleep_forever(_: ()) -> u32 {
    loop {
        std::thread::park();
    }
}

/// Runs in the helper parent: one daemonic and one non-daemonic child, both left
/// running (their `Process` values are forgotten, not dropped: dropping would kill the
/// daemon itself, and this test is about the parent's exit).
fn start_children(_: ()) -> (u32, u32) {
    let daemon = Process::builder()
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    let plain = Process::builder()
        .daemon(false)
        .spawn(sleep_forever, ())
        .unwrap();
    let pids = (daemon.pid(), plain.pid());
    std::mem::forget(daemon);
    std::mem::forget(plain);
    pids
}

#[tokio::test(flavor = "current_thread")]
async fn daemon_children_die_with_their_parent_and_others_survive() {
    common::become_subreaper();

    let mut helper = Process::spawn(start_children, ()).unwrap();
    let helper_pid = helper.pid();
    let (daemon, plain) = helper.join().await.unwrap();
    assert_eq!(
        helper.exit_code(),
        Some(Exit::Code(0)),
        "the helper parent exited"
    );

    // The daemon was killed by the kernel when its parent went (PR_SET_PDEATHSIG), or,
    // if its parent was gone before it had armed that signal, it saw so and exited
    // with procpool's "orphaned" code without running anything.
    common::wait_gone_or_zombie(daemon).await;
    let exit = common::reap(daemon);
    assert!(
        matches!(exit, Exit::Signal(libc::SIGKILL) | Exit::Code(102)),
        "daemon ended by {exit:?}"
    );

    // The other one runs on, now a child of this subreaper.
    if common::state(plain) == Some('Z') {
        panic!("the non-daemon died: {:?}", common::reap(plain));
    }
    assert_eq!(common::ppid(plain), Some(std::process::id()));
    assert_ne!(common::ppid(plain), Some(helper_pid));
    common::signal(plain, libc::SIGTERM);
    assert_eq!(common::reap(plain), Exit::Signal(libc::SIGTERM));
}
