//! Elastic pools: workers started on demand up to a maximum, retired when idle, and
//! `resize` at run time.

use std::time::Duration;

use procpool::{Error, Event, ProcessPoolExecutor};

use crate::common;

/// Waits for `go`, then answers with this worker's pid.
fn wait_then_pid(go: Event) -> u32 {
    go.blocking_wait().unwrap();
    std::process::id()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elastic_pool_starts_workers_on_demand_and_retires_them_when_idle() {
    let pool = ProcessPoolExecutor::builder()
        .min_workers(0)
        .max_workers(2)
        .idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    // Nothing runs until there is work.
    pool.ready().await.unwrap();
    assert_eq!(pool.stats().workers_live, 0);
    assert_eq!(pool.workers(), 2);

    let first = pool.run(pid, ()).await.unwrap();
    assert_ne!(first, std::process::id());
    assert!(pool.stats().workers_live >= 1);

    // Two tasks that hold their workers: both run at once, on two workers; a third
    // waits, since the maximum is two.
    let go = Event::new().unwrap();
    let a = pool.submit(wait_then_pid, go.clone()).await.unwrap();
    let b = pool.submit(wait_then_pid, go.clone()).await.unwrap();
    let (pa, pb) = (a.started().await.unwrap(), b.started().await.unwrap());
    assert_ne!(pa, pb);
    let c = pool.submit(pid, ()).await.unwrap();
    assert_eq!(pool.stats().workers_live, 2);
    go.set();
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (pa, pb));
    c.await.unwrap();

    // Idle past the timeout: every worker retires (the minimum is zero), and each is
    // reaped.
    pool.__wait_for_live_workers(0).await;
    assert!(!common::exists(pa) && !common::exists(pb));
    let s = pool.stats();
    assert_eq!((s.worker_restarts, s.workers_recycled), (0, 0), "{s:?}");

    // Work again: a fresh worker starts for it.
    let again = pool.run(pid, ()).await.unwrap();
    assert!(again != pa && again != pb);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimum_is_kept_through_idleness() {
    let pool = ProcessPoolExecutor::builder()
        .min_workers(1)
        .max_workers(3)
        .idle_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    assert_eq!(pool.stats().workers_live, 1);
    let go = Event::new().unwrap();
    let held = common::start_held(&pool, wait_then_pid, &go, 3).await;
    assert_eq!(pool.stats().workers_live, 3);
    go.set();
    for h in held {
        h.await.unwrap();
    }
    pool.__wait_for_live_workers(1).await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_grows_and_shrinks_a_fixed_pool_without_stopping_running_tasks() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    pool.ready().await.unwrap();
    pool.resize(3).unwrap();
    assert_eq!(pool.workers(), 3);
    pool.ready().await.unwrap();
    assert_eq!(pool.stats().workers_live, 3);

    let go = Event::new().unwrap();
    let held = common::start_held(&pool, wait_then_pid, &go, 3).await;
    let mut pids: Vec<u32> = held.iter().filter_map(|h| h.worker_pid()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three tasks on three workers");

    // Shrinking waits for the running tasks; none is killed.
    pool.resize(1).unwrap();
    assert_eq!(pool.workers(), 1);
    go.set();
    for h in held {
        h.await.unwrap();
    }
    pool.__wait_for_live_workers(1).await;
    let s = pool.stats();
    assert_eq!((s.worker_restarts, s.failed), (0, 0), "{s:?}");
    pool.run(pid, ()).await.unwrap();
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_elastic_settings_are_refused_with_the_option_named() {
    let refused = |b: procpool::PoolBuilder| match b.build() {
        Err(Error::InvalidConfig { what }) => what,
        Ok(_) => panic!("built"),
        Err(e) => panic!("{e:?}"),
    };
    let b = ProcessPoolExecutor::builder;
    assert!(refused(b().min_workers(3).max_workers(2)).contains("min_workers"));
    assert!(refused(b().max_workers(0)).contains("max_workers"));
    assert!(refused(b().max_workers(2).idle_timeout(Duration::ZERO)).contains("idle_timeout"));
    assert!(refused(b().workers(2).max_workers(4)).contains("workers"));

    let pool = b().workers(1).build().unwrap();
    assert!(matches!(pool.resize(0), Err(Error::InvalidConfig { .. })));
    pool.shutdown().await;
    assert!(matches!(pool.resize(2), Err(Error::Shutdown)));
}
