//! Panics, aborts, exits, timeouts and cancellation: only the task in flight fails,
//! and the pool goes on.

use crate::common;

use std::time::Duration;

use procpool::{Exit, PanicInfo, ProcessPoolExecutor, TaskError};

fn panics(x: u32) -> u32 {
    if x == 13 {
        panic!("unlucky number {x}");
    }
    x
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_is_an_error_and_the_same_worker_serves_the_next_task() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let before = pool.run(common::whoami, ()).await.unwrap();
    match pool.run(panics, 13).await {
        Err(TaskError::Panicked(PanicInfo {
            message, location, ..
        })) => {
            assert_eq!(message, "unlucky number 13");
            let location = location.expect("a location");
            assert!(location.starts_with("tests/pool/crash.rs:"), "{location}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(pool.run(panics, 12).await.unwrap(), 12);
    assert_eq!(
        pool.run(common::whoami, ()).await.unwrap(),
        before,
        "same worker"
    );
    let stats = pool.stats();
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.worker_restarts, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_fails_only_its_task_and_the_next_hundred_succeed() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let handle = pool.try_submit(aborts, ()).unwrap();
    let victim = handle.started().await.expect("dispatched");
    match handle.await {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Signal(libc::SIGABRT)),
        other => panic!("expected WorkerDied(SIGABRT), got {other:?}"),
    }
    let handles: Vec<_> = (0..100u64)
        .map(|i| pool.try_submit(|x: u64| x + 1, i).unwrap())
        .collect();
    for (i, r) in futures::future::join_all(handles)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap(), i as u64 + 1);
    }
    let pids: Vec<u32> =
        futures::future::join_all((0..10).map(|_| pool.try_submit(common::whoami, ()).unwrap()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert!(!pids.contains(&victim), "the dead worker was replaced");
    assert!(!common::exists(victim), "the dead worker was reaped");
    assert_eq!(pool.stats().worker_restarts, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn exit_in_a_task_reports_the_code() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    match pool.run(exits, 3).await {
        Err(TaskError::WorkerDied { exit }) => {
            assert_eq!(exit, Exit::Code(3));
            assert_eq!(exit.code(), Some(3));
        }
        other => panic!("expected WorkerDied(3), got {other:?}"),
    }
    assert_eq!(pool.run(panics, 5).await.unwrap(), 5);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_killed_while_idle_is_replaced_without_failing_anything() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let pid = pool.run(common::whoami, ()).await.unwrap();
    common::signal(pid, libc::SIGKILL);
    common::wait_gone(pid).await;
    let next = pool.run(common::whoami, ()).await.unwrap();
    assert_ne!(next, pid);
    let stats = pool.stats();
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.worker_restarts, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_timed_out_task_kills_its_worker_and_the_pool_goes_on() {
    let timeout = Duration::from_millis(300);
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .task_timeout(timeout)
        .build()
        .unwrap();
    let handle = pool.try_submit(common::spin_forever, ()).unwrap();
    let victim = handle.started().await.expect("dispatched");
    match handle.await {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, timeout),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        !common::exists(victim),
        "the timed-out worker was killed and reaped"
    );
    let next = pool.run(common::whoami, ()).await.unwrap();
    assert_ne!(next, victim);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_infinite_loop_replaces_the_worker() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let running = procpool::Event::new().unwrap();
    let handle = pool
        .try_submit(common::signal_then_spin_forever, running.clone())
        .unwrap();
    let victim = handle.started().await.expect("dispatched");
    assert!(handle.is_running());
    // Dispatched is not begun: wait until the worker runs it, so the cancel must kill.
    running.wait().await.unwrap();
    handle.cancel();
    assert!(matches!(handle.await, Err(TaskError::Cancelled)));
    assert!(
        !common::exists(victim),
        "the cancelled worker was killed and reaped"
    );
    assert_ne!(pool.run(common::whoami, ()).await.unwrap(), victim);
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 1);
    assert_eq!(stats.worker_restarts, 1);
    pool.shutdown().await;
}

fn touch(path: String) -> bool {
    std::fs::write(path, b"ran").is_ok()
}

#[tokio::test(flavor = "current_thread")]
async fn queued_tasks_that_are_cancelled_or_dropped_never_run() {
    let dir = std::env::temp_dir().join(format!("procpool-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cancelled_path = dir.join("cancelled");
    let dropped_path = dir.join("dropped");

    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let blocker = pool.try_submit(common::spin_forever, ()).unwrap();
    blocker.started().await.expect("dispatched");
    let cancelled = pool
        .try_submit(touch, cancelled_path.to_str().unwrap().to_owned())
        .unwrap();
    let dropped = pool
        .try_submit(touch, dropped_path.to_str().unwrap().to_owned())
        .unwrap();
    cancelled.cancel();
    assert!(cancelled.is_finished());
    drop(dropped);
    blocker.cancel();
    assert!(matches!(blocker.await, Err(TaskError::Cancelled)));
    assert!(matches!(cancelled.await, Err(TaskError::Cancelled)));
    // One worker takes tasks in order: once this one ran, the two above were skipped.
    assert_eq!(pool.run(panics, 1).await.unwrap(), 1);
    assert!(!cancelled_path.exists(), "a cancelled queued task ran");
    assert!(!dropped_path.exists(), "a dropped queued task ran");
    assert_eq!(pool.stats().cancelled, 3);
    pool.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 4096]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(frame[0])
}

#[tokio::test(flavor = "current_thread")]
async fn a_stack_overflow_is_a_worker_death_by_sigsegv() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    match pool.run(recurse, 0).await {
        // The worker runs before std's start-up, which installs the handler that
        // turns an overflow into a message and SIGABRT; here it is a plain SIGSEGV.
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Signal(libc::SIGSEGV)),
        other => panic!("expected WorkerDied(SIGSEGV), got {other:?}"),
    }
    assert_eq!(pool.run(panics, 1).await.unwrap(), 1);
    pool.shutdown().await;
}
