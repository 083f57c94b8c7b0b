//! Pipelining: tasks sent to a worker ahead of time are never lost and never run
//! twice, whatever happens to the task in front of them; a cancelled one the worker
//! has not begun is skipped without harming the worker.
//!
//! Each test fixes the depth (`pipeline_depth`) so that the tasks behind a blocker are
//! really in the worker's socket, and waits on `TaskHandle::started` (sent) and on an
//! `Event` set by the blocker (begun), never on time.

use crate::common;

use std::time::Duration;

use procpool::{Event, ProcessPoolExecutor, RawValue, TaskError};

/// Counts a run and says where it ran.
fn count(c: RawValue<u64>) -> u32 {
    c.fetch_add(1);
    std::process::id()
}

/// Sets `running`, waits for `go`, then returns its pid, or aborts if `crash`.
fn block(args: (Event, Event, bool)) -> u32 {
    let (running, go, crash) = args;
    running.set();
    go.blocking_wait().unwrap();
    if crash {
        std::process::abort();
    }
    std::process::id()
}

fn counters(n: usize) -> Vec<RawValue<u64>> {
    (0..n).map(|_| RawValue::new(0u64).unwrap()).collect()
}

fn pool(depth: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(depth)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_not_yet_begun_is_skipped_and_the_worker_goes_on() {
    let pool = pool(4);
    let (running, go) = (Event::new().unwrap(), Event::new().unwrap());
    let blocker = pool
        .try_submit(block, (running.clone(), go.clone(), false))
        .unwrap();
    let c = counters(3);
    let handles: Vec<_> = c
        .iter()
        .map(|c| pool.try_submit(count, c.clone()).unwrap())
        .collect();
    for h in &handles {
        h.started().await.expect("sent to the worker");
    }
    running.wait().await.unwrap();
    handles[1].cancel();
    go.set();
    let pid = blocker.await.unwrap();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await);
    }
    assert_eq!(results[0].as_ref().unwrap(), &pid);
    assert!(matches!(results[1], Err(TaskError::Cancelled)));
    assert_eq!(results[2].as_ref().unwrap(), &pid);
    let runs: Vec<u64> = c.iter().map(|c| c.load_atomic()).collect();
    assert_eq!(runs, [1, 0, 1]);
    let stats = pool.stats();
    assert_eq!((stats.worker_restarts, stats.cancelled), (0, 1));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_running_task_kills_its_worker_and_the_tasks_behind_run_once_elsewhere() {
    let pool = pool(4);
    let (running, go) = (Event::new().unwrap(), Event::new().unwrap());
    let blocker = pool
        .try_submit(block, (running.clone(), go, false))
        .unwrap();
    let c = counters(3);
    let handles: Vec<_> = c
        .iter()
        .map(|c| pool.try_submit(count, c.clone()).unwrap())
        .collect();
    for h in &handles {
        h.started().await.expect("sent to the worker");
    }
    running.wait().await.unwrap();
    let victim = blocker.worker_pid().unwrap();
    handles[2].cancel();
    blocker.cancel();
    assert!(matches!(blocker.await, Err(TaskError::Cancelled)));
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await);
    }
    let next = *results[0].as_ref().unwrap();
    assert_ne!(next, victim);
    assert_eq!(results[1].as_ref().unwrap(), &next);
    assert!(matches!(results[2], Err(TaskError::Cancelled)));
    let runs: Vec<u64> = c.iter().map(|c| c.load_atomic()).collect();
    assert_eq!(runs, [1, 1, 0]);
    assert!(!common::exists(victim));
    let stats = pool.stats();
    assert_eq!(
        (stats.worker_restarts, stats.cancelled, stats.completed),
        (1, 2, 2)
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_only_the_running_task_and_the_tasks_behind_run_once_elsewhere() {
    let pool = pool(8);
    let (running, go) = (Event::new().unwrap(), Event::new().unwrap());
    let doomed = pool
        .try_submit(block, (running.clone(), go.clone(), true))
        .unwrap();
    let c = counters(5);
    let handles: Vec<_> = c
        .iter()
        .map(|c| pool.try_submit(count, c.clone()).unwrap())
        .collect();
    for h in &handles {
        h.started().await.expect("sent to the worker");
    }
    running.wait().await.unwrap();
    let victim = doomed.worker_pid().unwrap();
    go.set();
    assert!(matches!(doomed.await, Err(TaskError::WorkerDied { .. })));
    for h in handles {
        assert_ne!(h.await.unwrap(), victim);
    }
    let runs: Vec<u64> = c.iter().map(|c| c.load_atomic()).collect();
    assert_eq!(runs, [1; 5]);
    assert_eq!(pool.stats().worker_restarts, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fails_only_the_running_task_and_the_tasks_behind_run_once_elsewhere() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(4)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let running = Event::new().unwrap();
    let stuck = pool
        .try_submit(common::signal_then_spin_forever, running.clone())
        .unwrap();
    let c = counters(3);
    let handles: Vec<_> = c
        .iter()
        .map(|c| pool.try_submit(count, c.clone()).unwrap())
        .collect();
    running.wait().await.unwrap();
    let victim = stuck.worker_pid().unwrap();
    assert!(matches!(stuck.await, Err(TaskError::TimedOut { .. })));
    for h in handles {
        assert_ne!(h.await.unwrap(), victim);
    }
    let runs: Vec<u64> = c.iter().map(|c| c.load_atomic()).collect();
    assert_eq!(runs, [1; 3]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_never_sent_more_than_max_tasks_per_worker() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(16)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..10)
        .map(|_| pool.try_submit(common::whoami, ()).unwrap())
        .collect();
    let mut per_worker = std::collections::BTreeMap::new();
    for h in handles {
        *per_worker.entry(h.await.unwrap()).or_insert(0) += 1;
    }
    let mut sizes: Vec<u32> = per_worker.into_values().collect();
    sizes.sort();
    assert_eq!(sizes, [1, 3, 3, 3]);
    assert_eq!(pool.stats().workers_recycled, 3);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_tasks_with_adaptive_depth_come_back_in_full() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..20_000u64)
        .map(|i| pool.try_submit(|x: u64| x * 3, i).unwrap())
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), i as u64 * 3);
    }
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.worker_restarts), (20_000, 0));
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_pipeline_depth_outside_1_to_max_pipeline_is_refused() {
    for depth in [0, procpool::MAX_PIPELINE + 1] {
        match ProcessPoolExecutor::builder().pipeline_depth(depth).build() {
            Err(procpool::Error::InvalidConfig { what }) => assert!(what.contains("pipeline")),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}
