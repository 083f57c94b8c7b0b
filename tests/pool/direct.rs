//! `run` through an idle worker's ring: the caller reads its own reply, with no hop
//! through the driver; and when it does not (a late, large or broken reply, a dropped
//! future, a dying or worn-out worker), everything the driver guarantees still holds.
//!
//! A driver lends its ring once its worker is idle. On a current-thread runtime the
//! driver runs between the caller's tasks, so after the first task answered by the
//! caller (`until_direct`), every next one finds the ring lent again: the counts below
//! are exact.

use crate::common;

use std::time::Duration;

use procpool::{Exit, PanicInfo, ProcessPoolExecutor, TaskError};

/// Long enough that a test which relies on the caller stopping early for some other
/// reason hangs (and fails) if it does not.
const FOREVER: Duration = Duration::from_secs(3600);

fn pool(poll: Duration) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .workers(1)
        .caller_poll(poll)
        .build()
        .unwrap()
}

/// Runs tasks until one is answered by its caller; returns the worker's pid.
async fn until_direct(pool: &ProcessPoolExecutor) -> u32 {
    for _ in 0..10_000 {
        let pid = pool.run(common::whoami, ()).await.unwrap();
        if pool.stats().direct > 0 {
            return pid;
        }
    }
    panic!(
        "no task was answered by its caller in 10 000: {:?}",
        pool.stats()
    );
}

fn panics(x: u32) -> u32 {
    if x == 13 {
        panic!("unlucky number {x}");
    }
    x
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

/// A task that cannot finish before the test lets it: it connects to the test's
/// [`Gate`] (an abstract Unix socket, so no descriptor rides in the argument, which
/// would keep the task off the ring) and waits for one byte.
fn gated(name: String) -> u64 {
    use std::io::Read;
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    let mut sock = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    let mut byte = [0u8];
    sock.read_exact(&mut byte).unwrap();
    u64::from(byte[0])
}

/// The test's side of [`gated`].
struct Gate {
    name: String,
    listener: std::os::unix::net::UnixListener,
}

impl Gate {
    fn new() -> Gate {
        use std::os::linux::net::SocketAddrExt;
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "procpool-test-gate-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        Gate { name, listener }
    }

    /// Waits for the task to connect (it is running), then lets it return `value`.
    fn open(&self, value: u8) {
        use std::io::Write;
        let (mut sock, _) = self.listener.accept().unwrap();
        sock.write_all(&[value]).unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_task_at_a_time_is_answered_by_its_caller_from_the_same_worker() {
    let pool = pool(FOREVER);
    let pid = until_direct(&pool).await;
    let before = pool.stats().direct;
    for i in 0..200u64 {
        assert_eq!(pool.run(|x: u64| x * 3, i).await.unwrap(), i * 3);
    }
    assert_eq!(pool.run(common::whoami, ()).await.unwrap(), pid);
    assert_eq!(pool.stats().direct, before + 201);
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
    assert!(
        !common::exists(pid),
        "shutdown took the lent ring back and reaped"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_read_by_its_caller_fails_only_its_task() {
    let pool = pool(FOREVER);
    let pid = until_direct(&pool).await;
    let before = pool.stats().direct;
    match pool.run(panics, 13).await {
        Err(TaskError::Panicked(PanicInfo { message, .. })) => {
            assert_eq!(message, "unlucky number 13")
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(pool.run(panics, 12).await.unwrap(), 12);
    assert_eq!(pool.run(common::whoami, ()).await.unwrap(), pid);
    let stats = pool.stats();
    assert_eq!(stats.direct, before + 3, "{stats:?}");
    assert_eq!((stats.failed, stats.panicked), (1, 1), "{stats:?}");
    assert_eq!(stats.worker_restarts, 0, "{stats:?}");
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_reply_too_large_for_a_slot_comes_through_the_bulk_area_to_the_caller() {
    let pool = pool(FOREVER);
    until_direct(&pool).await;
    let before = pool.stats().direct;
    // 64 KiB: over a ring slot, so it goes through the ring's bulk area, in shared
    // memory like a slot, and the caller reads it there.
    let big = pool.run(|n: usize| vec![7u8; n], 64 * 1024).await.unwrap();
    assert_eq!(big, vec![7u8; 64 * 1024]);
    assert_eq!(pool.stats().direct, before + 1);
    assert_eq!(pool.run(|x: u32| x + 1, 1).await.unwrap(), 2);
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

/// A reply holding a pipe end, whose descriptors must go on the socket.
fn a_pipe_end(_: ()) -> procpool::Connection<u32> {
    procpool::pipe::<u32>().unwrap().0
}

#[tokio::test(flavor = "current_thread")]
async fn a_reply_that_spills_to_the_socket_comes_through_the_driver() {
    let pool = pool(FOREVER);
    until_direct(&pool).await;
    let before = pool.stats().direct;
    // Descriptors go on the socket, which only the driver reads.
    let end = pool.run(a_pipe_end, ()).await.unwrap();
    drop(end);
    assert_eq!(pool.stats().direct, before);
    assert_eq!(pool.run(|x: u32| x + 1, 1).await.unwrap(), 2);
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_argument_too_large_for_a_slot_is_queued_as_before() {
    let pool = pool(FOREVER);
    until_direct(&pool).await;
    let before = pool.stats().direct;
    let n = pool
        .run(
            |v: Vec<u8>| v.iter().map(|&b| u64::from(b)).sum::<u64>(),
            vec![1u8; 100_000],
        )
        .await
        .unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(pool.stats().direct, before);
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_task_slower_than_the_poll_is_left_to_the_driver() {
    let budget = Duration::from_millis(1);
    let pool = pool(budget);
    until_direct(&pool).await;
    let before = pool.stats();
    let gate = Gate::new();
    let run = pool.run(gated, gate.name.clone());
    futures::pin_mut!(run);
    // The first poll writes the task and looks once; the budget runs from then. The
    // task cannot answer before the gate opens, so a poll that begins a budget after
    // the first one ended finds the budget spent, and hands the task to the driver.
    assert!(futures::poll!(run.as_mut()).is_pending());
    let spent = std::time::Instant::now() + budget;
    loop {
        let late = std::time::Instant::now() >= spent;
        assert!(futures::poll!(run.as_mut()).is_pending());
        if late {
            break;
        }
    }
    gate.open(200);
    assert_eq!(run.await.unwrap(), 200);
    let after = pool.stats();
    assert_eq!(after.direct, before.direct);
    assert_eq!(after.completed, before.completed + 1);
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_that_dies_under_a_polling_caller_fails_only_its_task() {
    // The caller would poll for an hour: the driver, seeing the worker exit, asks for
    // its ring back, and the caller hands the task over at once.
    let pool = pool(FOREVER);
    let pid = until_direct(&pool).await;
    match pool.run(exits, 3).await {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Code(3)),
        other => panic!("expected WorkerDied(3), got {other:?}"),
    }
    let next = pool.run(common::whoami, ()).await.unwrap();
    assert_ne!(next, pid);
    assert!(!common::exists(pid), "the dead worker was reaped");
    let stats = pool.stats();
    assert_eq!(
        (stats.worker_died, stats.worker_restarts),
        (1, 1),
        "{stats:?}"
    );
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_polled_task_times_out_as_any_other() {
    let timeout = Duration::from_millis(300);
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .caller_poll(FOREVER)
        .task_timeout(timeout)
        .build()
        .unwrap();
    let pid = until_direct(&pool).await;
    match pool.run(common::spin_forever, ()).await {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, timeout),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        !common::exists(pid),
        "the timed-out worker was killed and reaped"
    );
    assert_ne!(pool.run(common::whoami, ()).await.unwrap(), pid);
    assert_eq!(pool.stats().timed_out, 1);
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_dropped_while_its_caller_polls_is_seen_through_by_the_driver() {
    let pool = pool(FOREVER);
    let pid = until_direct(&pool).await;
    let before = pool.stats();
    let gate = Gate::new();
    {
        let run = pool.run(gated, gate.name.clone());
        futures::pin_mut!(run);
        // One poll: the task is written into the ring, and cannot answer yet.
        assert!(futures::poll!(run.as_mut()).is_pending());
    }
    gate.open(1);
    // Behind the dropped task, on the same (only) worker.
    assert_eq!(pool.run(common::whoami, ()).await.unwrap(), pid);
    let after = pool.stats();
    assert_eq!(after.completed, before.completed + 2, "{after:?}");
    assert_eq!(after.cancelled, 0, "{after:?}");
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn max_tasks_per_worker_counts_the_tasks_callers_read() {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .caller_poll(FOREVER)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(pool.run(common::whoami, ()).await.unwrap());
    }
    for (i, pair) in pids.windows(2).enumerate() {
        // Tasks 1-3 on the first worker, 4-6 on the second, and so on.
        assert_eq!(pair[0] == pair[1], (i + 1) % 3 != 0, "{pids:?}");
    }
    let stats = pool.stats();
    assert_eq!(stats.workers_recycled, 3, "{stats:?}");
    assert!(stats.direct > 0, "{stats:?}");
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_run_on_many_threads_all_get_their_own_answers() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let callers: Vec<_> = (0..4u64)
        .map(|c| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    let x = c * 1_000_000 + i;
                    assert_eq!(pool.run(|x: u64| x * 2, x).await.unwrap(), x * 2);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    // And a caller on a thread of its own, as `Runtime::block_on` is.
    let p = pool.clone();
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for i in 0..500u64 {
            assert_eq!(handle.block_on(p.run(|x: u64| x + 1, i)).unwrap(), i + 1);
        }
    })
    .join()
    .unwrap();
    let stats = pool.stats();
    assert_eq!(stats.submitted, 2500, "{stats:?}");
    assert_eq!(stats.completed, 2500, "{stats:?}");
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_now_ends_a_caller_polling_for_a_task_that_never_ends() {
    // The caller would poll for an hour; the abort makes it hand the task to the
    // driver, which kills the worker and fails the task as cancelled.
    let pool = pool(FOREVER);
    let pid = until_direct(&pool).await;
    let running = procpool::Event::new().unwrap();
    let caller = {
        let (pool, running) = (pool.clone(), running.clone());
        tokio::spawn(async move { pool.run(common::signal_then_spin_forever, running).await })
    };
    running.wait().await.unwrap();
    pool.shutdown_now().await;
    match caller.await.unwrap() {
        Err(TaskError::Cancelled) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(!common::exists(pid), "the worker was killed and reaped");
    assert_eq!(pool.stats().cancelled, 1);
}
