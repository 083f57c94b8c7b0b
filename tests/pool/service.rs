//! The pool inside a service: a clonable handle, streams that outlive the call that
//! made them.

use std::future::IntoFuture;

use futures::StreamExt;
use procpool::{ProcessPoolExecutor, TaskError};

use crate::common;

fn square(x: u64) -> u64 {
    x * x
}

/// What an axum `State` or a spawned task asks of a value.
fn assert_service_state<T: Clone + Send + Sync + 'static>() {}

#[test]
fn the_pool_and_its_streams_fit_in_service_state_and_spawned_tasks() {
    assert_service_state::<ProcessPoolExecutor>();
    fn assert_spawnable<T: Send + 'static>(_: &T) {}
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    assert_spawnable(&pool.map_unordered(square, 0..3u64));
    assert_spawnable(&pool.map(square, vec![1u64]).into_future());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_one_pool_and_the_last_one_owns_it() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let handler = pool.clone();
    assert_eq!(handler.run(square, 7).await.unwrap(), 49);
    assert_eq!(pool.run(square, 8).await.unwrap(), 64);
    // One set of counters: each clone sees what the other did.
    assert_eq!(pool.stats().completed, 2);
    assert_eq!(handler.stats().completed, 2);

    // Dropping a clone is not dropping the pool.
    drop(handler);
    assert_eq!(pool.run(square, 9).await.unwrap(), 81);

    // Shutting down through one clone shuts the pool for all of them.
    let other = pool.clone();
    other.shutdown().await;
    assert!(pool.is_shutdown());
    assert!(matches!(
        pool.run(square, 1).await,
        Err(TaskError::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_stream_keeps_the_pool_alive_until_it_ends() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let stream = pool.map_unordered(square, 0..20u64).chunk_size(3);
    let ordered = pool.map(square, 0..10u64);
    // The only named handle goes away; the stream and the map hold the pool.
    drop(pool);
    let spawned = tokio::spawn(stream.collect::<Vec<_>>());
    let mapped = tokio::spawn(async move { ordered.await });
    let mut got: Vec<u64> = spawned
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..20u64).map(square).collect::<Vec<_>>());
    assert_eq!(
        mapped.await.unwrap().unwrap(),
        (0..10u64).map(square).collect::<Vec<_>>()
    );
}

fn identity(x: u32) -> u32 {
    x
}

fn create_file(path: String) -> bool {
    std::fs::write(path, b"ran").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_for_room_where_try_submit_is_refused() {
    let (pool, blocker) = common::held_pool(1).await;
    let first = pool.try_submit(identity, 1).unwrap();
    assert!(matches!(
        pool.try_submit(identity, 2),
        Err(TaskError::QueueFull { capacity: 1 })
    ));
    let mut waiting = pool.submit(identity, 2);
    assert!(
        futures::poll!(&mut waiting).is_pending(),
        "the queue is full"
    );
    assert_eq!(pool.stats().queued, 1);

    // The worker is freed: `first` leaves the queue, and the waiting submit gets in.
    blocker.cancel();
    let second = waiting.await.unwrap();
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(second.await.unwrap(), 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_dropped_while_it_waits_never_runs() {
    let dir = std::env::temp_dir().join(format!("procpool-room-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dropped = dir.join("dropped");
    let (pool, blocker) = common::held_pool(1).await;
    let first = pool.try_submit(identity, 1).unwrap();
    let mut waiting = pool.submit(create_file, dropped.to_str().unwrap().to_owned());
    assert!(futures::poll!(&mut waiting).is_pending());
    drop(waiting);

    blocker.cancel();
    assert_eq!(first.await.unwrap(), 1);
    // One worker, first in first out: had the dropped task been queued, it would have
    // run before this one.
    let later = dir.join("later");
    assert!(pool
        .run(create_file, later.to_str().unwrap().to_owned())
        .await
        .unwrap());
    assert!(later.exists());
    assert!(!dropped.exists(), "the dropped submit's task ran");
    pool.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_waiting_for_room_fails_when_the_pool_shuts_down() {
    let (pool, _blocker) = common::held_pool(1).await;
    let _first = pool.try_submit(identity, 1).unwrap();
    let mut waiting = pool.submit(identity, 2);
    assert!(futures::poll!(&mut waiting).is_pending());
    pool.shutdown_now().await;
    assert!(matches!(waiting.await, Err(TaskError::Shutdown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_waits_for_room_instead_of_failing_its_items() {
    let (pool, blocker) = common::held_pool(1).await;
    let mut stream = pool.map_unordered(identity, 0..10u32).chunk_size(1);
    // One poll queues the first chunk (the queue's one place); the second waits.
    assert!(futures::poll!(stream.next()).is_pending());
    assert_eq!(pool.stats().queued, 1);
    blocker.cancel();
    let mut got: Vec<u32> = stream.map(Result::unwrap).collect().await;
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    pool.shutdown().await;
}

/// Waits for `go`; answers 1.
fn wait_for_go(go: procpool::Event) -> u32 {
    go.blocking_wait().unwrap();
    1
}

fn reject(x: i32) -> i32 {
    assert!(x >= 0, "negative input {x}");
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_s_own_timeout_overrides_the_pool_s_both_ways() {
    use std::time::Duration;
    // The pool has no timeout; this task has one.
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let short = Duration::from_millis(100);
    match pool.task(common::spin_forever).timeout(short).run(()).await {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, short),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    // The worker was replaced; the next task has no timeout and runs.
    assert_eq!(pool.run(identity, 5).await.unwrap(), 5);
    pool.shutdown().await;

    // The pool's timeout is short; a task with its own long one outlives it. The
    // witness that the pool's timeout has passed: a task without one, started after
    // it on the other worker, timed out.
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .task_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let go = procpool::Event::new().unwrap();
    let long = pool
        .task(wait_for_go)
        .timeout(Duration::from_secs(60))
        .submit(go.clone())
        .await
        .unwrap();
    long.started().await.unwrap();
    assert!(matches!(
        pool.run(common::spin_forever, ()).await,
        Err(TaskError::TimedOut { .. })
    ));
    go.set();
    assert_eq!(long.await.unwrap(), 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_named_task_s_errors_carry_its_name() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let handle = pool.task(reject).name("thumb").submit(-1).await.unwrap();
    assert_eq!(handle.name(), Some("thumb"));
    let err = handle.await.unwrap_err();
    assert_eq!(err.name(), Some("thumb"));
    assert!(
        matches!(err.unnamed(), TaskError::Panicked(p) if p.message == "negative input -1"),
        "{err:?}"
    );
    let report = common::report(&err);
    assert!(
        report.contains("\"thumb\"") && report.contains("negative input -1"),
        "{report}"
    );
    // A named task that succeeds is a plain value; an unnamed error is not wrapped.
    assert_eq!(pool.task(reject).name("ok").run(3).await.unwrap(), 3);
    let plain = pool.run(reject, -2).await.unwrap_err();
    assert_eq!(plain.name(), None);
    assert!(matches!(plain, TaskError::Panicked(_)));
    // Refused before it is queued: named too.
    let refused = pool
        .task(reject)
        .name("zero")
        .timeout(std::time::Duration::ZERO)
        .try_submit(1)
        .unwrap_err();
    assert_eq!(refused.name(), Some("zero"));
    assert!(matches!(
        refused.unnamed(),
        TaskError::InvalidArgument { .. }
    ));
    pool.shutdown().await;
}

fn square_or_panic(x: u64) -> u64 {
    assert!(x % 5 != 4, "item {x} panics");
    x * x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_map_items_not_chunks() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    // 20 items in 7 chunks.
    let results: Vec<_> = pool
        .map_unordered(square, 0..20u64)
        .chunk_size(3)
        .collect()
        .await;
    assert_eq!(results.len(), 20);
    let s = pool.stats();
    assert_eq!((s.submitted, s.completed, s.failed), (20, 20, 0), "{s:?}");

    // Items that panic inside a chunk fail alone, and are counted so.
    let results: Vec<_> = pool
        .map_ordered_stream(square_or_panic, 0..20u64)
        .chunk_size(6)
        .collect()
        .await;
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 4);
    let s = pool.stats();
    assert_eq!(
        (s.submitted, s.completed, s.failed, s.panicked),
        (40, 36, 4, 4),
        "{s:?}"
    );
    assert_eq!((s.queued, s.running), (0, 0), "{s:?}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_counts_the_items_of_a_queued_chunk() {
    let (pool, blocker) = common::held_pool(1).await;
    let mut stream = pool.map_unordered(identity, 0..10u32).chunk_size(4);
    // The first chunk (4 items) takes the queue's one place; the next waits.
    assert!(futures::poll!(stream.next()).is_pending());
    let s = pool.stats();
    assert_eq!((s.queued, s.running), (4, 1), "{s:?}");
    blocker.cancel();
    assert_eq!(stream.count().await, 10);
    let s = pool.stats();
    // The blocker (1) and the map's 10 items.
    assert_eq!(
        (s.submitted, s.completed, s.cancelled),
        (11, 10, 1),
        "{s:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_latency_summary_covers_every_answered_task() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    assert_eq!(pool.stats().latency, procpool::LatencySummary::default());
    for i in 0..50 {
        pool.run(square, i).await.unwrap();
    }
    let _ = pool.run(square_or_panic, 4).await.unwrap_err();
    let l = pool.stats().latency;
    assert_eq!(l.count, 51, "{l:?}");
    assert!(l.mean > std::time::Duration::ZERO, "{l:?}");
    assert!(
        l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "quantiles out of order: {l:?}"
    );
    pool.shutdown().await;
}

/// Counts until its soft timeout says stop; then says how far it got.
fn count_until_told(_: ()) -> u64 {
    let mut n = 0u64;
    while !procpool::soft_timeout_expired() {
        n += 1;
        std::hint::spin_loop();
    }
    n
}

fn is_told(_: ()) -> bool {
    procpool::soft_timeout_expired()
}

fn ignore_everything(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_timeout_asks_the_task_to_stop_and_a_hard_one_still_kills() {
    use std::time::Duration;

    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let first = pool.run(common::whoami, ()).await.unwrap();
    // The task sees it, stops, and its result is delivered: nothing was killed.
    let n = pool
        .task(count_until_told)
        .soft_timeout(Duration::from_millis(20))
        .timeout(Duration::from_secs(60))
        .run(())
        .await
        .unwrap();
    assert!(n > 0);
    assert_eq!(
        pool.run(common::whoami, ()).await.unwrap(),
        first,
        "same worker"
    );
    // The next task on that worker is not told anything.
    assert!(!pool.run(is_told, ()).await.unwrap());
    // Nor is the parent.
    assert!(!procpool::soft_timeout_expired());

    // A task that does not listen is still killed at its hard timeout.
    let e = pool
        .task(ignore_everything)
        .soft_timeout(Duration::from_millis(10))
        .timeout(Duration::from_millis(100))
        .run(())
        .await
        .unwrap_err();
    assert!(
        matches!(e, TaskError::TimedOut { after } if after == Duration::from_millis(100)),
        "{e}"
    );

    // Out of range: zero, or not shorter than the hard timeout.
    for (soft, hard) in [(0, 100), (100, 100), (200, 100)] {
        let e = pool
            .task(is_told)
            .soft_timeout(Duration::from_millis(soft))
            .timeout(Duration::from_millis(hard))
            .run(())
            .await
            .unwrap_err();
        assert!(
            matches!(e, TaskError::InvalidArgument { .. }),
            "{soft} {hard}: {e}"
        );
    }
    pool.shutdown().await;
}
