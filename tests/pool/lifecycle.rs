//! Start-up, recycling, initializers, shutdown and the build fingerprint.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};

use procpool::{CodecError, Error, PanicInfo, ProcessPoolExecutor, TaskError};

#[tokio::test(flavor = "current_thread")]
async fn max_tasks_per_worker_recycles_every_two_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_tasks_per_worker(2)
        .build()
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(pool.run(common::whoami, ()).await.unwrap());
    }
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[2], pids[3]);
    assert_eq!(pids[4], pids[5]);
    assert_ne!(pids[1], pids[2]);
    assert_ne!(pids[3], pids[4]);
    assert_ne!(pids[0], pids[4]);
    pool.shutdown().await;
    let stats = pool.stats();
    assert_eq!(stats.workers_recycled, 3);
    assert_eq!(stats.worker_restarts, 0);
    for pid in pids {
        assert!(!common::exists(pid), "recycled worker {pid} was not reaped");
    }
}

static INIT_RUNS: AtomicU32 = AtomicU32::new(0);
static INIT_VALUE: AtomicU32 = AtomicU32::new(0);

fn init_worker(value: u32) -> Result<(), String> {
    INIT_RUNS.fetch_add(1, Ordering::SeqCst);
    INIT_VALUE.store(value, Ordering::SeqCst);
    Ok(())
}

fn observe_init(_: ()) -> (u32, u32, u32) {
    (
        std::process::id(),
        INIT_RUNS.load(Ordering::SeqCst),
        INIT_VALUE.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initializer_runs_once_in_every_worker_before_its_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .max_tasks_per_worker(5)
        .initializer(init_worker, 77)
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    let seen =
        futures::future::join_all((0..40).map(|_| pool.try_submit(observe_init, ()).unwrap()))
            .await;
    let mut pids = std::collections::HashSet::new();
    for r in seen {
        let (pid, runs, value) = r.unwrap();
        assert_eq!(runs, 1, "initializer ran {runs} times in worker {pid}");
        assert_eq!(value, 77);
        pids.insert(pid);
    }
    // 40 tasks at 5 per worker: recycled workers ran the initializer too.
    assert!(pids.len() >= 8, "only {} workers seen", pids.len());
    // The parent never ran it.
    assert_eq!(INIT_RUNS.load(Ordering::SeqCst), 0);
    pool.shutdown().await;
}

fn failing_init(reason: String) -> Result<(), String> {
    Err(reason)
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_initializer_is_reported_by_ready_and_by_every_task() {
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .initializer(failing_init, "no model file".to_string())
        .build()
        .unwrap();
    match pool.ready().await {
        Err(Error::Initializer(PanicInfo { message, .. })) => assert_eq!(message, "no model file"),
        other => panic!("expected Initializer, got {other:?}"),
    }
    match pool.run(common::whoami, ()).await {
        Err(TaskError::WorkerStart(Error::Initializer(PanicInfo { message, .. }))) => {
            assert_eq!(message, "no model file")
        }
        other => panic!("expected WorkerStart, got {other:?}"),
    }
    pool.shutdown().await;
}

fn panicking_init(_: ()) -> Result<(), String> {
    panic!("initializer exploded")
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_initializer_is_reported_with_its_location() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .initializer(panicking_init, ())
        .build()
        .unwrap();
    match pool.ready().await {
        Err(Error::Initializer(PanicInfo {
            message, location, ..
        })) => {
            assert_eq!(message, "initializer exploded");
            assert!(location.unwrap().starts_with("tests/pool/lifecycle.rs:"));
        }
        other => panic!("expected Initializer, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_of_another_build_is_refused() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .expect_fingerprint_for_testing(0x5eed)
        .build()
        .unwrap();
    match pool.ready().await {
        Err(Error::FingerprintMismatch { expected, found }) => {
            assert_eq!(expected, 0x5eed);
            assert_ne!(found, 0x5eed);
        }
        other => panic!("expected FingerprintMismatch, got {other:?}"),
    }
    let err = pool.run(common::whoami, ()).await.unwrap_err();
    assert!(matches!(
        err,
        TaskError::WorkerStart(Error::FingerprintMismatch { .. })
    ));
    let report = common::report(&err);
    assert!(report.contains("restart"), "{report}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_queued_and_running_tasks_then_reaps() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let pids: Vec<u32> =
        futures::future::join_all((0..2).map(|_| pool.try_submit(common::whoami, ()).unwrap()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let handles: Vec<_> = (0..50u64)
        .map(|i| pool.try_submit(|x: u64| x * 3, i).unwrap())
        .collect();
    pool.shutdown().await;
    assert!(pool.is_shutdown());
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), i as u64 * 3);
    }
    for pid in pids {
        assert!(
            !common::exists(pid),
            "worker {pid} left behind after shutdown"
        );
    }
    assert!(matches!(
        pool.run(|x: u8| x, 1).await,
        Err(TaskError::Shutdown)
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_now_cancels_running_and_queued_tasks() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let running = pool.try_submit(common::spin_forever, ()).unwrap();
    let pid = running.started().await.expect("dispatched");
    let queued: Vec<_> = (0..5u8)
        .map(|i| pool.try_submit(|x: u8| x, i).unwrap())
        .collect();
    pool.shutdown_now().await;
    assert!(matches!(running.await, Err(TaskError::Cancelled)));
    for h in queued {
        assert!(matches!(h.await, Err(TaskError::Cancelled)));
    }
    assert!(
        !common::exists(pid),
        "worker left behind after shutdown_now"
    );
    assert!(matches!(
        pool.run(|x: u8| x, 1).await,
        Err(TaskError::Shutdown)
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_pool_kills_and_reaps_workers_and_cancels_queued_tasks() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let busy = pool.try_submit(common::spin_forever, ()).unwrap();
    let busy_pid = busy.started().await.expect("dispatched");
    let idle_pid = pool.run(common::whoami, ()).await.unwrap();
    let queued = pool.try_submit(common::spin_forever, ()).unwrap();
    let queued2 = pool.try_submit(common::spin_forever, ()).unwrap();
    drop(pool);
    assert!(matches!(busy.await, Err(TaskError::Cancelled)));
    assert!(matches!(queued.await, Err(TaskError::Cancelled)));
    assert!(matches!(queued2.await, Err(TaskError::Cancelled)));
    common::wait_gone(busy_pid).await;
    common::wait_gone(idle_pid).await;
}

#[test]
fn a_pool_dropped_after_its_runtime_leaves_no_zombie() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pool, pid) = rt.block_on(async {
        let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
        let pid = pool.run(common::whoami, ()).await.unwrap();
        (pool, pid)
    });
    drop(rt); // the drivers are gone with it
    drop(pool); // the worker handle's Drop kills it and the supervisor reaps it
    let check = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    check.block_on(common::wait_gone(pid));
}

fn read_env(key: String) -> Option<String> {
    std::env::var(key).ok()
}

#[tokio::test(flavor = "current_thread")]
async fn workers_get_extra_environment_and_not_the_worker_marker() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .env("PROCPOOL_TEST_SETTING", "on")
        .build()
        .unwrap();
    assert_eq!(
        pool.run(read_env, "PROCPOOL_TEST_SETTING".into())
            .await
            .unwrap()
            .as_deref(),
        Some("on")
    );
    // The marker that routes a worker is removed before any task runs, so a pool built
    // inside a task starts real workers of its own.
    assert_eq!(
        pool.run(read_env, "__PROCPOOL_WORKER_OF".into())
            .await
            .unwrap(),
        None
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn ready_after_shutdown_now_does_not_hang() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    pool.shutdown_now().await;
    // Either the workers made it before the abort, or `ready` says the pool is gone.
    assert!(matches!(pool.ready().await, Ok(()) | Err(Error::Shutdown)));
}

fn remember_table(table: Vec<u32>) -> Result<(), String> {
    INIT_VALUE.store(table.iter().sum(), Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn an_initializer_argument_of_several_mib_is_delivered() {
    let table: Vec<u32> = (0..2_000_000).map(|i| i % 3).collect();
    let expected: u32 = table.iter().sum();
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .initializer(remember_table, table)
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    let (_, _, value) = pool.run(observe_init, ()).await.unwrap();
    assert_eq!(value, expected);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn workers_lead_their_own_process_group() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let pid = pool.run(common::whoami, ()).await.unwrap();
    // So a terminal's Ctrl-C, sent to the parent's group, does not hit the workers.
    assert_eq!(common::pgrp(pid), Some(pid));
    assert_ne!(common::pgrp(pid), common::pgrp(std::process::id()));
    pool.shutdown().await;
}

fn identity(_: ()) -> (String, bool, bool, Option<u32>) {
    let me = procpool::current_process();
    (
        me.name,
        me.kind == procpool::ProcessKind::PoolWorker,
        me.daemon,
        procpool::parent_process(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_pool_worker_knows_what_it_is() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let (name, is_worker, daemon, parent) = pool.run(identity, ()).await.unwrap();
    assert!(name.starts_with("PoolWorker-"), "{name}");
    assert!(is_worker);
    assert!(daemon, "pool workers are daemonic, as in Python");
    assert_eq!(parent, Some(std::process::id()));
    assert_eq!(
        procpool::current_process().kind,
        procpool::ProcessKind::Main
    );
    assert_eq!(procpool::parent_process(), None);
    assert_eq!(
        procpool::cpu_count(),
        std::thread::available_parallelism().unwrap().get()
    );
    pool.shutdown().await;
}

fn init_with(_: common::Unserialisable) -> Result<(), String> {
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn an_initializer_argument_that_does_not_serialise_fails_build() {
    let built = ProcessPoolExecutor::builder()
        .workers(1)
        .initializer(init_with, common::Unserialisable)
        .build();
    match built {
        Err(Error::Encode(CodecError {
            type_name, reason, ..
        })) => {
            assert!(type_name.ends_with("Unserialisable"), "{type_name}");
            // postcard reports a custom serde error without its text.
            assert!(!reason.is_empty());
        }
        other => panic!("expected Encode, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_drains_what_finishes_in_time() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..20u64)
        .map(|i| pool.try_submit(|x: u64| x * 2, i).unwrap())
        .collect();
    pool.shutdown_timeout(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), i as u64 * 2);
    }
    assert!(matches!(
        pool.run(|x: u8| x, 1).await,
        Err(TaskError::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_kills_what_is_left_at_the_deadline() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(1)
        .build()
        .unwrap();
    let stuck = pool.try_submit(common::spin_forever, ()).unwrap();
    let pid = stuck.started().await.expect("dispatched");
    let queued: Vec<_> = (0..2u32)
        .map(|i| pool.try_submit(|x: u32| x, i).unwrap())
        .collect();
    let after = std::time::Duration::from_millis(200);
    match pool.shutdown_timeout(after).await {
        Err(procpool::Error::ShutdownTimedOut {
            after: a,
            unfinished,
        }) => assert_eq!((a, unfinished), (after, 3)),
        other => panic!("expected ShutdownTimedOut, got {other:?}"),
    }
    // Reaped before it returned.
    assert!(!common::exists(pid), "worker {pid} outlived the shutdown");
    for h in std::iter::once(stuck).chain(queued) {
        match h.await {
            Err(TaskError::ShutdownTimedOut { after: a }) => assert_eq!(a, after),
            other => panic!("expected ShutdownTimedOut, got {other:?}"),
        }
    }
    let s = pool.stats();
    assert_eq!((s.failed, s.cancelled), (3, 0), "{s:?}");
}

/// Waits for `go`, then answers 7.
fn wait_then_seven(go: procpool::Event) -> u32 {
    go.blocking_wait().unwrap();
    7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancel_pending_cancels_the_queued_and_lets_the_running_finish() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(1)
        .build()
        .unwrap();
    let go = procpool::Event::new().unwrap();
    let running = common::start_held(&pool, wait_then_seven, &go, 1)
        .await
        .pop()
        .unwrap();
    let queued: Vec<_> = (0..5)
        .map(|_| pool.try_submit(wait_then_seven, go.clone()).unwrap())
        .collect();
    let stopping = tokio::spawn({
        let pool = pool.clone();
        async move { pool.shutdown_cancel_pending().await }
    });
    // The queued five end before the running one may finish: it waits for `go`.
    for task in queued {
        assert!(matches!(task.await, Err(TaskError::Cancelled)));
    }
    assert!(matches!(
        pool.try_submit(wait_then_seven, go.clone()),
        Err(TaskError::Shutdown)
    ));
    go.set();
    assert_eq!(running.await.unwrap(), 7, "the running task finished");
    stopping.await.unwrap();
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.cancelled), (1, 5));
    assert_eq!(stats.workers_live, 0);
}
