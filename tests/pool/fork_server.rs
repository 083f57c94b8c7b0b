//! `StartMethod::ForkServer`: workers forked by a fork server instead of started by
//! `exec`. Everything a worker started by `exec` guarantees must hold: results, crash
//! reports with the right exit, timeouts, the pool's environment and no zombie. (The
//! server is shared by every such pool of the process, so the tests that kill it are
//! in a binary of their own, `tests/pool_fork_server.rs`.)

use crate::common;

use std::time::Duration;

use procpool::{Exit, ProcessPoolExecutor, StartMethod, TaskError};

fn forked_pool(workers: usize) -> procpool::PoolBuilder {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .start_method(StartMethod::ForkServer)
}

/// (its pid, its parent's pid, the pid `parent_process()` names, its process group)
fn family(_: ()) -> (u32, u32, u32, u32) {
    let me = std::process::id();
    let parent = procpool::parent_process().unwrap_or(0);
    let group = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
    (me, std::os::unix::process::parent_id(), parent, group)
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

fn env_of(key: String) -> Option<String> {
    std::env::var(key).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_workers_run_tasks_and_maps_and_know_their_parent() {
    let pool = forked_pool(2).build().unwrap();
    assert_eq!(pool.run(|x: u64| x * 2, 21).await.unwrap(), 42);
    let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..10_000u64).await.unwrap();
    assert_eq!(squares, (0..10_000u64).map(|x| x * x).collect::<Vec<_>>());

    let me = std::process::id();
    let (worker, server, parent, group) = pool.run(family, ()).await.unwrap();
    assert_ne!(worker, me);
    assert_eq!(parent, me, "parent_process() names the pool's process");
    assert_ne!(server, me, "the worker is the fork server's child");
    assert_eq!(common::ppid(server), Some(me), "the server is ours");
    assert_eq!(group, worker, "a worker leads its own process group");
    assert_eq!(
        common::pgrp(server),
        Some(server),
        "so does the server (a terminal's Ctrl-C does not reach it)"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_forked_workers_exit_is_reported_as_it_died() {
    let pool = forked_pool(1).build().unwrap();
    let (victim, ..) = pool.run(family, ()).await.unwrap();
    match pool.run(exits, 7).await {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Code(7)),
        other => panic!("expected WorkerDied(code 7), got {other:?}"),
    }
    assert!(
        !common::exists(victim),
        "the server reaped it before it reported"
    );
    match pool.run(aborts, ()).await {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Signal(libc::SIGABRT)),
        other => panic!("expected WorkerDied(SIGABRT), got {other:?}"),
    }
    assert_eq!(pool.run(|x: u32| x + 1, 1).await.unwrap(), 2);
    assert_eq!(pool.stats().worker_restarts, 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_forked_worker_past_its_timeout_is_killed_and_replaced() {
    let pool = forked_pool(1)
        .task_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    match pool.run(common::spin_forever, ()).await {
        Err(TaskError::TimedOut { .. }) => {}
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(pool.run(|x: u32| x + 1, 1).await.unwrap(), 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_pools_environment_reaches_forked_workers() {
    let pool = forked_pool(1)
        .env("PROCPOOL_FORK_SERVER_TEST", "forked")
        .build()
        .unwrap();
    let seen = pool
        .run(env_of, "PROCPOOL_FORK_SERVER_TEST".to_string())
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("forked"));
    let marker = pool
        .run(env_of, "__PROCPOOL_WORKER_OF".to_string())
        .await
        .unwrap();
    assert_eq!(marker, None, "the server's marker is not a worker's");
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_environment_too_large_for_a_fork_request_is_refused_at_build() {
    // 40 KiB fits; 70 KiB cannot (a request is at most 64 KiB), and must be refused
    // up front rather than fail every start of every worker.
    let fits = forked_pool(1)
        .env("PROCPOOL_BIG", "x".repeat(40 * 1024))
        .build()
        .unwrap();
    let seen = fits.run(env_of, "PROCPOOL_BIG".to_string()).await.unwrap();
    assert_eq!(seen.map(|v| v.len()), Some(40 * 1024));
    fits.shutdown().await;

    match forked_pool(1)
        .env("PROCPOOL_BIG", "x".repeat(70 * 1024))
        .build()
    {
        Err(procpool::Error::InvalidConfig { what }) => assert!(what.contains("64 KiB"), "{what}"),
        Ok(_) => panic!("a 70 KiB environment was accepted for a fork server"),
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
    }
    // The same environment is fine for workers started by exec.
    let spawned = ProcessPoolExecutor::builder()
        .workers(1)
        .env("PROCPOOL_BIG", "x".repeat(70 * 1024))
        .build()
        .unwrap();
    let seen = spawned
        .run(env_of, "PROCPOOL_BIG".to_string())
        .await
        .unwrap();
    assert_eq!(seen.map(|v| v.len()), Some(70 * 1024));
    spawned.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn after_shutdown_no_forked_worker_is_left_running_or_unreaped() {
    let pool = forked_pool(2).build().unwrap();
    pool.ready().await.unwrap();
    let pids: Vec<u32> = futures::future::join_all((0..20).map(|_| pool.run(family, ())))
        .await
        .into_iter()
        .map(|r| r.unwrap().0)
        .collect();
    pool.shutdown().await;
    for pid in pids {
        assert!(!common::exists(pid), "worker {pid} left behind");
    }
}
