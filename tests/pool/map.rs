//! `map`, `map_unordered` and `map_ordered_stream`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use procpool::{PanicInfo, ProcessPoolExecutor, TaskError};

fn square(x: u64) -> u64 {
    x * x
}

fn fails_on_7(x: u32) -> u32 {
    if x == 7 {
        panic!("seven");
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_returns_results_in_input_order_for_every_chunk_size() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let expected: Vec<u64> = (0..1000).map(square).collect();
    assert_eq!(pool.map(square, 0..1000).await.unwrap(), expected);
    for chunk in [1, 3, 64, 5000] {
        assert_eq!(
            pool.map(square, 0..1000).chunk_size(chunk).await.unwrap(),
            expected
        );
    }
    // An iterator with no length hint.
    let unknown = (0..1000u64).filter(|_| true);
    assert_eq!(pool.map(square, unknown).await.unwrap(), expected);
    // Empty input.
    assert_eq!(
        pool.map(square, Vec::<u64>::new()).await.unwrap(),
        Vec::<u64>::new()
    );
    // starmap is map over tuples.
    let sums = pool
        .map(|(a, b): (u32, u32)| a + b, [(1, 2), (3, 4)])
        .await
        .unwrap();
    assert_eq!(sums, [3, 7]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn map_unordered_yields_every_result_exactly_once() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let mut seen: Vec<u64> = pool
        .map_unordered(square, 0..2000)
        .chunk_size(7)
        .map(Result::unwrap)
        .collect()
        .await;
    seen.sort_unstable();
    let expected: Vec<u64> = (0..2000).map(square).collect();
    assert_eq!(seen, expected);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_ordered_stream_is_in_order_and_keeps_going_past_a_panic() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let results: Vec<Result<u32, TaskError>> = pool
        .map_ordered_stream(fails_on_7, 0..20)
        .chunk_size(3)
        .collect()
        .await;
    assert_eq!(results.len(), 20);
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v as usize, i),
            Err(TaskError::Panicked(PanicInfo { message, .. })) => {
                assert_eq!(i, 7);
                assert_eq!(message, "seven");
            }
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn map_returns_the_first_error() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    match pool.map(fails_on_7, 0..100).chunk_size(5).await {
        Err(TaskError::Panicked(PanicInfo { message, .. })) => assert_eq!(message, "seven"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The pool is fine afterwards.
    assert_eq!(pool.map(fails_on_7, 0..5).await.unwrap(), [0, 1, 2, 3, 4]);
    pool.shutdown().await;
}

fn die_on_3(x: u32) -> u32 {
    if x == 3 {
        std::process::abort();
    }
    x
}

#[tokio::test(flavor = "current_thread")]
async fn a_crash_fails_only_its_item_and_the_rest_of_the_chunk_runs() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let results: Vec<Result<u32, TaskError>> = pool
        .map_ordered_stream(die_on_3, 0..12)
        .chunk_size(2)
        .collect()
        .await;
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(r, Err(TaskError::WorkerDied { .. })),
                "item {i}: {r:?}"
            );
        } else {
            assert_eq!(*r.as_ref().unwrap() as usize, i);
        }
    }
    pool.shutdown().await;
}

/// An iterator that counts how many items were taken from it.
struct Counted {
    next: u64,
    end: u64,
    taken: Arc<AtomicUsize>,
}

impl Iterator for Counted {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.next == self.end {
            return None;
        }
        self.taken.fetch_add(1, Ordering::SeqCst);
        self.next += 1;
        Some(self.next - 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_input_is_consumed_lazily_with_bounded_chunks_in_flight() {
    const ITEMS: u64 = 1_000_000;
    const CHUNK: usize = 1000;
    let workers = 2;
    let pool = ProcessPoolExecutor::builder()
        .workers(workers)
        .build()
        .unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let input = Counted {
        next: 0,
        end: ITEMS,
        taken: taken.clone(),
    };
    let mut stream = pool
        .map_ordered_stream(|x: u64| x ^ 0x55, input)
        .chunk_size(CHUNK);
    let mut received = 0usize;
    // Never more than 2 chunks per worker in flight, plus the chunk being handed out.
    let bound = (2 * workers + 1) * CHUNK;
    let mut max_ahead = 0;
    while let Some(r) = stream.next().await {
        assert_eq!(r.unwrap(), received as u64 ^ 0x55);
        received += 1;
        let ahead = taken.load(Ordering::SeqCst) - received;
        max_ahead = max_ahead.max(ahead);
        assert!(ahead <= bound, "{ahead} items taken but not yet yielded");
    }
    assert_eq!(received as u64, ITEMS);
    assert!(max_ahead > 0);
    pool.shutdown().await;
}

/// Counts its run of item `i`, and kills its worker on the items in `deadly`.
fn count_or_die(args: (u32, procpool::RawArray<u32>, Vec<u32>)) -> u32 {
    let (i, runs, deadly) = args;
    let before = runs.get(i as usize);
    runs.set(i as usize, before + 1);
    if deadly.contains(&i) && before == 0 {
        std::process::abort();
    }
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_in_a_chunk_fails_only_the_item_it_was_running() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let runs = procpool::RawArray::<u32>::zeroed(100).unwrap();
    let deadly = vec![13u32, 40, 41, 99];
    let items = (0..100u32).map(|i| (i, runs.clone(), deadly.clone()));
    // One chunk of all the items: four deaths in it, at its start, middle and end.
    let results: Vec<_> = pool
        .map_ordered_stream(count_or_die, items)
        .chunk_size(100)
        .collect()
        .await;
    assert_eq!(results.len(), 100);
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => {
                assert!(!deadly.contains(&(i as u32)), "item {i} should have failed");
                assert_eq!(v, i as u32, "in input order");
            }
            Err(TaskError::WorkerDied { exit }) => {
                assert!(deadly.contains(&(i as u32)), "item {i} failed: {exit}");
                assert_eq!(exit, procpool::Exit::Signal(libc::SIGABRT));
            }
            Err(e) => panic!("item {i}: {e:?}"),
        }
    }
    // A deadly item ran once: it failed and was not sent again. Every other item ran
    // once, plus once for each death after it in the chunk: the worker had finished
    // it, but its result died with the worker, so it went again.
    for (i, &n) in runs.to_vec().iter().enumerate() {
        let i = i as u32;
        let expected = if deadly.contains(&i) {
            1
        } else {
            1 + deadly.iter().filter(|&&d| d > i).count() as u32
        };
        assert_eq!(n, expected, "item {i} ran {n} times");
    }
    // Counted by item, each once: the items sent again are not submitted twice.
    let stats = pool.stats();
    assert_eq!(stats.worker_died, 4, "{stats:?}");
    assert_eq!(stats.cancelled, 0, "{stats:?}");
    assert_eq!(
        (stats.submitted, stats.completed, stats.failed),
        (100, 96, 4),
        "{stats:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_chunk_size_of_zero_is_an_error_not_a_panic() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    match pool.map(|x: u32| x + 1, 0..10u32).chunk_size(0).await {
        Err(TaskError::InvalidArgument { what }) => assert!(what.contains("chunk_size")),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let items: Vec<_> = pool
        .map_unordered(|x: u32| x + 1, 0..10u32)
        .chunk_size(0)
        .collect()
        .await;
    assert!(
        matches!(items.as_slice(), [Err(TaskError::InvalidArgument { .. })]),
        "{items:?}"
    );
    // Nothing was submitted.
    assert_eq!(pool.stats().submitted, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_map_stream_says_how_far_it_has_come() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let mut stream = pool
        .map_ordered_stream(|x: u64| x + 1, 0..50u64)
        .chunk_size(7);
    let p = stream.progress();
    assert_eq!((p.done, p.known, p.total), (0, 50, Some(50)));
    assert_eq!(stream.size_hint(), (50, Some(50)));
    for k in 1..=20u64 {
        assert_eq!(stream.next().await.unwrap().unwrap(), k);
    }
    let p = stream.progress();
    assert_eq!((p.done, p.known, p.total), (20, 50, Some(50)));
    assert_eq!(stream.size_hint(), (30, Some(30)));
    assert_eq!(stream.count().await, 30);

    // An input of unknown length: no total until it is exhausted.
    let mut stream = pool
        .map_unordered(|x: u64| x, (0..40u64).filter(|x| x % 2 == 0))
        .chunk_size(4);
    assert_eq!(stream.progress().total, None);
    stream.next().await.unwrap().unwrap();
    let p = stream.progress();
    assert!(p.known >= 4 && p.total.is_none(), "{p:?}");
    while stream.next().await.is_some() {}
    let p = stream.progress();
    assert_eq!((p.done, p.known, p.total), (20, 20, Some(20)));
    assert_eq!(stream.size_hint(), (0, Some(0)));
    pool.shutdown().await;
}

fn fail_at_three(x: u32) -> u32 {
    assert!(x != 3, "three is not allowed");
    x * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_map_keeps_the_results_before_the_failing_item() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let failed = pool
        .map(fail_at_three, 0..10u32)
        .chunk_size(2)
        .keep_partial()
        .await
        .unwrap_err();
    assert_eq!(failed.completed, [0, 10, 20]);
    assert_eq!(failed.failed_at, 3);
    assert!(
        matches!(failed.error, TaskError::Panicked(_)),
        "{}",
        failed.error
    );
    // All of it when nothing fails.
    let all = pool
        .map(fail_at_three, 0..3u32)
        .keep_partial()
        .await
        .unwrap();
    assert_eq!(all, [0, 10, 20]);
    pool.shutdown().await;
}

fn fail_at_12345(x: u32) -> u64 {
    assert!(x != 12_345, "12345 is not allowed");
    u64::from(x) * 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_a_large_automatic_chunk_keeps_exactly_the_results_before_it() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    // 40,000 items on 2 workers: automatic chunks of 4,096 growing to 5,000; the
    // failing item sits in a chunk well inside, and the map keeps every result before
    // it, in order.
    let failed = pool
        .map(fail_at_12345, 0..40_000u32)
        .keep_partial()
        .await
        .unwrap_err();
    assert_eq!(failed.failed_at, 12_345);
    assert_eq!(failed.completed.len(), 12_345);
    assert!(failed
        .completed
        .iter()
        .enumerate()
        .all(|(i, &v)| v == i as u64 * 3));
    assert!(
        matches!(failed.error, TaskError::Panicked(_)),
        "{}",
        failed.error
    );
    // The same through the stream: every item answered, the one error in place.
    let mut results = pool.map_ordered_stream(fail_at_12345, 0..40_000u32);
    let mut seen = 0u32;
    while let Some(r) = results.next().await {
        match r {
            Ok(v) => assert_eq!(v, u64::from(seen) * 3),
            Err(e) => {
                assert_eq!(seen, 12_345, "{e}");
                assert!(matches!(e, TaskError::Panicked(_)), "{e}");
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 40_000);
    pool.shutdown().await;
}

/// Never returns on its own: waits for an event nobody sets.
fn wait_for_ever(never: procpool::Event) -> u32 {
    never.blocking_wait().unwrap();
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_past_its_deadline_yields_one_error_and_ends() {
    use futures::StreamExt;
    use std::time::Duration;

    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let never = procpool::Event::new().unwrap();
    let limit = Duration::from_millis(50);
    let mut stream = pool
        .map_ordered_stream(wait_for_ever, vec![never.clone(); 3])
        .chunk_size(1)
        .timeout(limit);
    match stream.next().await {
        Some(Err(TaskError::MapTimedOut { after })) => assert_eq!(after, limit),
        other => panic!("{other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its deadline"
    );

    // Awaited, with what was done kept: nothing was.
    let failed = pool
        .map(wait_for_ever, vec![never.clone(); 2])
        .timeout(limit)
        .keep_partial()
        .await
        .unwrap_err();
    assert!(failed.completed.is_empty());
    assert!(matches!(failed.error, TaskError::MapTimedOut { .. }));

    // A zero deadline is refused, nothing submitted.
    let refused = pool
        .map(fail_at_three, 0..3u32)
        .timeout(Duration::ZERO)
        .await;
    assert!(matches!(refused, Err(TaskError::InvalidArgument { .. })));
    // The blocked tasks are still running: kill them.
    pool.shutdown_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_size_bounds_the_items_taken_ahead_of_the_results() {
    use futures::StreamExt;

    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    // An input that does not say its length: only what was taken is known.
    let input = (0..50u32).filter(|_| true);
    let mut stream = pool
        .map_ordered_stream(fail_at_three, input.map(|x| x + 4))
        .chunk_size(4)
        .buffer_size(3);
    let mut got = 0;
    while let Some(r) = stream.next().await {
        r.unwrap();
        got += 1;
        let p = stream.progress();
        assert!(p.known - p.done <= 3, "{p:?}");
    }
    assert_eq!(got, 50);
    let refused = pool.map(fail_at_three, 0..3u32).buffer_size(0).await;
    assert!(matches!(refused, Err(TaskError::InvalidArgument { .. })));
    pool.shutdown().await;
}
