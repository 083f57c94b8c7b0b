//! Submitting single tasks: functions, closures, argument types, concurrency, runtimes.

use crate::common;

use procpool::{CodecError, ProcessPoolExecutor, TaskError};
use serde::{Deserialize, Serialize};

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
    quantities: Vec<u16>,
    express: Option<bool>,
}

fn summarise(o: Order) -> (u32, usize, u32, bool) {
    (
        o.id,
        o.item.len(),
        o.quantities.iter().map(|&q| u32::from(q)).sum(),
        o.express.unwrap_or(false),
    )
}

fn checksum(data: Vec<u8>) -> (usize, u64) {
    (data.len(), data.iter().map(|&b| u64::from(b)).sum())
}

fn shout(s: String) -> String {
    format!("{}!", s.to_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fn_items_and_closures_run_in_another_process() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    assert_eq!(pool.run(fib, 20).await.unwrap(), 6765);
    let product = pool.run(|(x, y): (u64, u64)| x * y, (6, 7)).await.unwrap();
    assert_eq!(product, 42);
    let pid = pool.run(common::whoami, ()).await.unwrap();
    assert_ne!(
        pid,
        std::process::id(),
        "the task must not run in the parent"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn structs_strings_and_a_64_mib_vec_round_trip() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let order = Order {
        id: 7,
        item: "grüner Tee".into(),
        quantities: vec![1, 2, 300],
        express: Some(true),
    };
    assert_eq!(
        pool.run(summarise, order.clone()).await.unwrap(),
        (7, 11, 303, true)
    );
    // The struct itself comes back intact.
    assert_eq!(pool.run(|o: Order| o, order.clone()).await.unwrap(), order);
    assert_eq!(
        pool.run(shout, "hello".to_string()).await.unwrap(),
        "HELLO!"
    );

    let big: Vec<u8> = (0..64 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected: u64 = big.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(pool.run(checksum, big).await.unwrap(), (64 << 20, expected));
    // And 64 MiB coming back.
    let back = pool.run(|n: usize| vec![3u8; n], 64 << 20).await.unwrap();
    assert_eq!(back.len(), 64 << 20);
    assert!(back.iter().all(|&b| b == 3));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_submits_are_all_correct() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..1000u64)
        .map(|i| pool.try_submit(|x: u64| x * x + 1, i).unwrap())
        .collect();
    let results = futures::future::join_all(handles).await;
    for (i, r) in results.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(r.unwrap(), i * i + 1);
    }
    let stats = pool.stats();
    assert_eq!(stats.completed, 1000);
    assert_eq!(stats.failed, 0);
    pool.shutdown().await;
}

async fn fetch_and_double(x: u32) -> u32 {
    // Real async work on the worker's runtime: a spawned task under a timer (a
    // timeout needs the runtime's time driver).
    let h = tokio::spawn(async move { x * 2 });
    tokio::time::timeout(std::time::Duration::from_secs(60), h)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn submit_async_runs_on_the_workers_runtime() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    assert_eq!(
        pool.try_submit_async(fetch_and_double, 21)
            .unwrap()
            .await
            .unwrap(),
        42
    );
    let r = pool
        .try_submit_async(|s: String| async move { s.len() }, "four".to_string())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r, 4);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn handles_report_their_worker_and_completion() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let h = pool.try_submit(common::whoami, ()).unwrap();
    let dispatched = h.started().await.expect("ran in a worker");
    assert_eq!(h.worker_pid(), Some(dispatched));
    let pid = h.await.unwrap();
    assert_eq!(pid, dispatched);
    pool.shutdown().await;
}

/// A type whose `Serialize` and `Deserialize` disagree: the parent cannot decode the
/// worker's result.
#[derive(Debug)]
struct Lopsided;

impl Serialize for Lopsided {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(200)
    }
}

impl<'de> Deserialize<'de> for Lopsided {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = bool::deserialize(d)?;
        let _ = b;
        Ok(Lopsided)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn encode_and_decode_failures_are_typed_and_name_the_type() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_frame_size(4096)
        .build()
        .unwrap();
    match pool.run(|_: ()| Lopsided, ()).await {
        Err(TaskError::Decode(CodecError { type_name, .. })) => {
            assert!(type_name.ends_with("Lopsided"), "{type_name}")
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    // An argument over the frame limit is refused in the parent.
    match pool.run(checksum, vec![0u8; 10_000]).await {
        Err(TaskError::Encode(CodecError { reason, .. })) => {
            assert!(reason.contains("limit"), "{reason}")
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    // A result over the frame limit is refused in the worker, which goes on.
    let pid = pool.run(common::whoami, ()).await.unwrap();
    match pool.run(|n: usize| vec![1u8; n], 10_000).await {
        Err(TaskError::Encode(CodecError {
            type_name, reason, ..
        })) => {
            assert!(type_name.contains("Vec<u8>"), "{type_name}");
            assert!(reason.contains("limit"), "{reason}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(pool.run(common::whoami, ()).await.unwrap(), pid);
    pool.shutdown().await;
}

#[test]
fn building_outside_a_runtime_is_a_typed_error() {
    match ProcessPoolExecutor::builder().workers(1).build() {
        Err(procpool::Error::NoRuntime) => {}
        other => panic!("expected NoRuntime, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn invalid_settings_are_typed_errors() {
    for builder in [
        ProcessPoolExecutor::builder().workers(0),
        ProcessPoolExecutor::builder().queue_capacity(0),
        ProcessPoolExecutor::builder().max_frame_size(10),
        ProcessPoolExecutor::builder().max_tasks_per_worker(0),
    ] {
        assert!(matches!(
            builder.build(),
            Err(procpool::Error::InvalidConfig { .. })
        ));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_is_reported_not_blocked_on() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let blocker = pool.try_submit(common::spin_forever, ()).unwrap();
    blocker.started().await.expect("dispatched");
    let a = pool.try_submit(|x: u8| x, 1).unwrap();
    let b = pool.try_submit(|x: u8| x, 2).unwrap();
    match pool.try_submit(|x: u8| x, 3) {
        Err(TaskError::QueueFull { capacity }) => assert_eq!(capacity, 2),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(pool.stats().queued, 2);
    blocker.cancel();
    assert!(matches!(blocker.await, Err(TaskError::Cancelled)));
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(b.await.unwrap(), 2);
    pool.shutdown().await;
}

#[test]
fn a_runtime_without_io_is_refused_with_a_typed_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    match ProcessPoolExecutor::builder().workers(1).build() {
        Err(procpool::Error::NoRuntime) => {}
        other => panic!("expected NoRuntime, got {other:?}"),
    }
}

/// The refusal above, run again in a child test process of its own (this binary, with
/// output not captured), must leave its stderr without a panic message.
#[test]
fn the_refusal_of_a_runtime_without_io_prints_nothing() {
    const CHILD: &str = "PROCPOOL_TEST_REFUSAL_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return a_runtime_without_io_is_refused_with_a_typed_error();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "submit::the_refusal_of_a_runtime_without_io_prints_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
    assert!(!stderr.contains("panicked"), "the probe printed: {stderr}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_argument_that_does_not_serialise_fails_the_submit_at_once() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    // Refused in the call, before any waiting: the submit future is ready.
    let submit = pool.submit(|_: common::Unserialisable| 0u8, common::Unserialisable);
    match futures::FutureExt::now_or_never(submit).expect("refused at once") {
        Err(TaskError::Encode(CodecError {
            type_name, reason, ..
        })) => {
            assert!(type_name.ends_with("Unserialisable"), "{type_name}");
            // postcard reports a custom serde error without its text.
            assert!(!reason.is_empty());
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    pool.shutdown().await;
}

fn reverse(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

async fn reverse_async(v: Vec<u8>) -> Vec<u8> {
    reverse(v)
}

#[tokio::test(flavor = "current_thread")]
async fn byte_vectors_travel_whole_as_argument_result_and_inside_other_types() {
    // A `Vec<u8>` argument or result is the frame body itself (no serde); check every
    // size class: empty, one byte, within one read-ahead, and far beyond it.
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    for len in [0usize, 1, 1000, 100_000, 5 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let mut expected = data.clone();
        expected.reverse();
        assert_eq!(
            pool.run(reverse, data.clone()).await.unwrap(),
            expected,
            "{len}"
        );
        assert_eq!(
            pool.try_submit_async(reverse_async, data.clone())
                .unwrap()
                .await
                .unwrap(),
            expected
        );
        // Raw on one side only, postcard on the other.
        assert_eq!(pool.run(checksum, data.clone()).await.unwrap().0, len);
        assert_eq!(
            pool.run(|n: usize| vec![9u8; n], len).await.unwrap(),
            vec![9u8; len]
        );
        // Nested: postcard as before.
        let (back, n) = pool
            .run(
                |(v, n): (Vec<u8>, u32)| (reverse(v), n + 1),
                (data.clone(), 41),
            )
            .await
            .unwrap();
        assert_eq!((back, n), (expected, 42));
    }
    // Other element types are not raw.
    assert_eq!(
        pool.run(
            |v: Vec<i8>| v.into_iter().rev().collect::<Vec<i8>>(),
            vec![-1, 2]
        )
        .await
        .unwrap(),
        vec![2, -1]
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_never_overfill_the_queue() {
    let (pool, blocker) = common::held_pool(100).await;
    // 8 threads × 50 submits race for 100 places while the only worker is busy.
    let handles: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..50u32)
                        .map(|i| pool.try_submit(|x: u32| x, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let mut queued = Vec::new();
    let mut full = 0;
    for h in handles {
        match h {
            Ok(h) => queued.push(h),
            Err(TaskError::QueueFull { capacity: 100 }) => full += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((queued.len(), full), (100, 300));
    assert_eq!(pool.stats().queued, 100);
    blocker.cancel();
    for h in queued {
        h.await.unwrap();
    }
    pool.shutdown().await;
}

fn worker_pid(_: ()) -> u32 {
    std::process::id()
}

/// Sequential tasks on a pool of idle workers all go to the worker used last
/// (most recently used first), on either runtime.
async fn sequential_tasks_keep_to_one_worker() {
    let pool = ProcessPoolExecutor::builder().workers(4).build().unwrap();
    pool.ready().await.unwrap();
    let first = pool.run(worker_pid, ()).await.unwrap();
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..50 {
        pids.insert(pool.run(worker_pid, ()).await.unwrap());
    }
    assert_eq!(pids.into_iter().collect::<Vec<_>>(), vec![first]);
    // With tasks side by side, the others still take their share.
    let side_by_side: Vec<_> = (0..4)
        .map(|_| pool.try_submit(worker_pid, ()).unwrap())
        .collect();
    for t in side_by_side {
        t.await.unwrap();
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sequential_tasks_go_to_the_worker_used_last() {
    sequential_tasks_keep_to_one_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_tasks_go_to_the_worker_used_last_on_two_threads() {
    sequential_tasks_keep_to_one_worker().await;
}

fn wait_then_answer(ev: procpool::Event) -> u32 {
    ev.blocking_wait().unwrap();
    7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The test's body runs in `block_on`, a thread of its own: after quick replies, a
/// caller there polls for its result a while before it sleeps
/// (`src/pool/await_poll.rs`). A result that comes only after the polling still wakes
/// it, one that comes during it is taken, and a cancel during it ends the wait.
async fn a_caller_on_a_thread_of_its_own_polls_then_sleeps_and_misses_nothing() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    for i in 0..500u64 {
        assert_eq!(pool.run(fib, i % 20).await.unwrap(), fib(i % 20));
    }
    // Set from another thread once the task has started: whenever that lands,
    // before, during or after the caller's polling, the answer arrives.
    let ev = procpool::Event::new().unwrap();
    let started = procpool::Event::new().unwrap();
    let setter = {
        let (ev, started) = (ev.clone(), started.clone());
        std::thread::spawn(move || {
            started.blocking_wait().unwrap();
            ev.set();
        })
    };
    fn announce_then_wait(evs: (procpool::Event, procpool::Event)) -> u32 {
        evs.1.set();
        wait_then_answer(evs.0)
    }
    assert_eq!(
        pool.run(announce_then_wait, (ev.clone(), started))
            .await
            .unwrap(),
        7
    );
    setter.join().unwrap();
    // Quick replies again, then one that never comes unless cancelled.
    for i in 0..100u64 {
        assert_eq!(pool.run(fib, i % 10).await.unwrap(), fib(i % 10));
    }
    let never = procpool::Event::new().unwrap();
    let mut handle = pool.submit(wait_then_answer, never).await.unwrap();
    assert!(futures::poll!(&mut handle).is_pending());
    handle.cancel();
    assert!(matches!(handle.await, Err(TaskError::Cancelled)));
    assert_eq!(pool.run(fib, 10).await.unwrap(), 55);
    pool.shutdown().await;
}
