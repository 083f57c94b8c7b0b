//! A parent killed with SIGKILL leaves no worker behind.
//!
//! The helper parent is a real process: a worker of this test's pool that builds four
//! pools of its own (one with an idle worker, one with a worker spinning in a task,
//! one whose worker is fed a stream of short tasks, so that between them it polls its
//! ring before it sleeps, and one whose spinning worker was forked by the helper's
//! fork server, which also holds a spare), reports their pids and is then killed with SIGKILL. This test process makes itself
//! the orphans' subreaper so that it can see how the grandchildren end and reap them.
//! It is the only test in this binary, because being a subreaper is process-wide.

mod common;

use procpool::{Exit, ProcessPoolExecutor, StartMethod, TaskError};

/// Runs in the helper parent: starts one idle and one busy grandchild and leaks both
/// pools so they outlive the task; a third grandchild is fed tasks one after the other,
/// for as long as the helper lives, from a thread of its own; a fourth, forked by the
/// helper's fork server, spins in a task. Returns their pids and the server's.
async fn start_grandchildren(_: ()) -> (u32, u32, u32, u32, u32) {
    let (streaming_tx, streaming_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
            for _ in 0..1000 {
                pool.run(common::whoami, ()).await.unwrap();
            }
            streaming_tx
                .send(pool.run(common::whoami, ()).await.unwrap())
                .unwrap();
            loop {
                let _ = pool.run(common::whoami, ()).await;
            }
        })
    });
    let streaming = streaming_rx.recv().unwrap();
    let idle_pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let idle = idle_pool.run(common::whoami, ()).await.unwrap();
    let busy_pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let running = procpool::Event::new().unwrap();
    let busy = busy_pool
        .try_submit(common::signal_then_spin_forever, running.clone())
        .unwrap();
    let busy_pid = busy.started().await.unwrap();
    running.wait().await.unwrap();
    let forked_pool = ProcessPoolExecutor::builder()
        .workers(1)
        .start_method(StartMethod::ForkServer)
        .build()
        .unwrap();
    let forked_running = procpool::Event::new().unwrap();
    let forked_busy = forked_pool
        .try_submit(common::signal_then_spin_forever, forked_running.clone())
        .unwrap();
    let forked_busy_pid = forked_busy.started().await.unwrap();
    forked_running.wait().await.unwrap();
    let server = common::ppid(forked_busy_pid).unwrap();
    std::mem::forget(busy);
    std::mem::forget(forked_busy);
    std::mem::forget(idle_pool);
    std::mem::forget(busy_pool);
    std::mem::forget(forked_pool);
    (idle, busy_pid, streaming, server, forked_busy_pid)
}

/// Reaps `pid`, which ended either by its parent-death signal (SIGKILL) or, having
/// seen the end of its socket first, by exiting 0.
fn assert_ended_by_signal_or_eof(pid: u32, what: &str) {
    assert!(
        matches!(
            common::reap(pid),
            Exit::Code(0) | Exit::Signal(libc::SIGKILL)
        ),
        "{what}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn workers_of_a_parent_killed_with_sigkill_are_gone() {
    common::become_subreaper();

    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let helper = pool.try_submit_async(start_grandchildren, ()).unwrap();
    let (idle, busy, streaming, server, forked_busy) = helper.await.unwrap();
    let helper_pid = pool.run(common::whoami, ()).await.unwrap();
    assert_eq!(common::ppid(server), Some(helper_pid));
    assert_eq!(common::state(forked_busy), Some('R'));
    // The server's spare, forked ahead of its next request.
    let spare = common::spare_of(server);
    assert_eq!(common::ppid(idle), Some(helper_pid));
    assert_eq!(common::ppid(busy), Some(helper_pid));
    assert_eq!(common::ppid(streaming), Some(helper_pid));
    assert_eq!(
        common::state(busy),
        Some('R'),
        "the busy grandchild is spinning"
    );

    // Kill the helper parent while it is running a task, so its pool sees it die.
    // Killed once it has begun the task: a task sent but not begun would go to the
    // next worker instead of failing.
    let running = procpool::Event::new().unwrap();
    let victim = pool
        .try_submit(common::signal_then_spin_forever, running.clone())
        .unwrap();
    assert_eq!(victim.started().await, Some(helper_pid));
    running.wait().await.unwrap();
    common::signal(helper_pid, libc::SIGKILL);
    match victim.await {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Signal(libc::SIGKILL)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }

    // The busy grandchild never reads its socket: only PR_SET_PDEATHSIG can end it.
    // The idle one sees EOF on its control socket and exits by itself.
    common::wait_gone_or_zombie(busy).await;
    common::wait_gone_or_zombie(idle).await;
    // The helper's fork server ends by its parent-death signal or the end of its
    // request socket; the worker it forked, spinning, only by its own parent-death
    // signal, tied to the server.
    common::wait_gone_or_zombie(server).await;
    common::wait_gone_or_zombie(forked_busy).await;
    assert_eq!(common::reap(forked_busy), Exit::Signal(libc::SIGKILL));
    // The spare by its parent-death signal, or the end of its socket to the server.
    common::wait_gone_or_zombie(spare).await;
    assert_ended_by_signal_or_eof(spare, "the spare ended");
    assert_ended_by_signal_or_eof(server, "the fork server ended");
    // The streaming one ends either way: by the signal, or by the end of its socket.
    common::wait_gone_or_zombie(streaming).await;
    assert_ended_by_signal_or_eof(streaming, "the streaming grandchild ended");
    assert_eq!(common::reap(busy), Exit::Signal(libc::SIGKILL));
    assert!(
        matches!(
            common::reap(idle),
            Exit::Code(0) | Exit::Signal(libc::SIGKILL)
        ),
        "the idle grandchild ended"
    );
    pool.shutdown().await;
}
