//! Kill patterns an operator's kill loop or an OOM killer would try. Whatever dies and
//! whenever, the pool heals: no task says `Cancelled` unless it was cancelled, every
//! task resolves, the counts add up, and no zombie is left.
//!
//! The storms SIGKILL *every* child of this process, so the tests of this file take
//! [`STORM`] and run one at a time. A storm is paced by the work itself: it strikes
//! each time a number of results has come in, while the rest are running. Every wait
//! is on a result, a pid or an event, and no assertion depends on time.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::Dice;
use procpool::{Event, PoolStats, ProcessPoolExecutor, RawValue, TaskError};

static STORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// SIGKILLs every child of this process each time `every` more results have come in.
struct Storm {
    every: u64,
    results: u64,
    /// Children killed so far.
    kills: u64,
}

impl Storm {
    fn every(every: u64) -> Storm {
        Storm {
            every,
            results: 0,
            kills: 0,
        }
    }

    /// One more result came in: strike if it is the storm's turn.
    fn result(&mut self) {
        self.results += 1;
        if self.results.is_multiple_of(self.every) {
            self.kills += common::kill_children();
        }
    }
}

/// Busy for `us` microseconds, then returns `i`.
fn work(args: (u64, u64)) -> u64 {
    let (i, us) = args;
    let end = Instant::now() + Duration::from_micros(us);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    i
}

/// The second worker to start stops in its initializer (its handshake) and says so;
/// every other one starts normally.
fn second_start_hangs(args: (RawValue<u32>, RawValue<u32>, Event)) -> Result<(), String> {
    let (starts, pid, waiting) = args;
    if starts.fetch_add(1) == 1 {
        pid.store(std::process::id());
        waiting.set();
        loop {
            thread::park();
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_killed_in_its_handshake_then_three_submits_all_run() {
    let _storm = STORM.lock().await;
    let (starts, pid, waiting) = (
        RawValue::new(0u32).unwrap(),
        RawValue::new(0u32).unwrap(),
        Event::new().unwrap(),
    );
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .initializer(
            second_start_hangs,
            (starts.clone(), pid.clone(), waiting.clone()),
        )
        .build()
        .unwrap();
    let first = pool.run(common::whoami, ()).await.unwrap();
    common::signal(first, libc::SIGKILL);
    // The replacement is in its handshake until it is killed.
    waiting.wait().await.unwrap();
    let replacement = pid.load();
    assert_ne!(replacement, first);
    common::signal(replacement, libc::SIGKILL);
    let handles: Vec<_> = (0..3u64)
        .map(|i| pool.try_submit(work, (i, 0)).unwrap())
        .collect();
    for (i, r) in futures::future::join_all(handles)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap(), i as u64, "task {i} ran");
    }
    pool.ready().await.unwrap();
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 0, "{stats:?}");
    assert_eq!(stats.completed, 4, "{stats:?}");
    assert!(stats.worker_start_failures >= 1, "{stats:?}");
    assert_eq!(stats.degraded, None, "{stats:?}");
    assert_eq!(stats.workers_live, 1, "{stats:?}");
    common::assert_adds_up(stats);
    assert_eq!(
        starts.load(),
        3,
        "first, the one killed in its handshake, the next"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_kills_leaves_a_healthy_pool() {
    let _storm = STORM.lock().await;
    let pool = ProcessPoolExecutor::builder().workers(4).build().unwrap();
    pool.ready().await.unwrap();
    let handles: Vec<_> = (0..2000u64)
        .map(|i| pool.try_submit(work, (i, 200)).unwrap())
        .collect();
    // A kill every 10 results, while the tasks behind them run.
    let mut storm = Storm::every(10);
    let mut ok = 0;
    for (i, handle) in handles.into_iter().enumerate() {
        let r = handle.await;
        storm.result();
        match r {
            Ok(v) => {
                assert_eq!(v, i as u64);
                ok += 1;
            }
            Err(TaskError::WorkerDied { .. }) => {}
            Err(e) => panic!("task {i}: {e:?} (only Ok or WorkerDied may come of a kill)"),
        }
    }
    let kills = storm.kills;
    assert!(kills > 0);
    // Healed: ready, serving, and nothing left unreaped. The last strike came with the
    // last result and may have hit replacements in their handshake: `ready` reports
    // each such start as it fails, and is ready once their slots have started again.
    let mut handshakes_killed = 0;
    while let Err(e) = pool.ready().await {
        handshakes_killed += 1;
        assert!(
            handshakes_killed <= 4,
            "more failed starts than workers: {e:?}"
        );
    }
    for i in 0..8u64 {
        assert_eq!(pool.run(work, (i, 0)).await.unwrap(), i);
    }
    // `ready` may have counted a worker killed by the last strike whose death the
    // pool had not seen yet (under load, its pidfd is read later): wait for all four
    // to be up again, not merely for `ready`.
    let healed =
        tokio::time::timeout(Duration::from_secs(60), pool.__wait_for_live_workers(4)).await;
    assert!(healed.is_ok(), "not healed: {:?}", pool.stats());
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 0, "{stats:?}");
    assert_eq!(stats.failed, stats.worker_died, "{stats:?}");
    assert_eq!(stats.completed, ok + 8, "{stats:?}");
    assert!(
        stats.failed <= kills,
        "{} failed for {kills} kills",
        stats.failed
    );
    assert_eq!(stats.workers_live, 4, "{stats:?}");
    common::assert_adds_up(stats);
    assert_eq!(common::zombie_children(), Vec::<u32>::new());
    pool.shutdown().await;
    assert!(common::live_children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_over_submits_cancels_nothing_and_fails_at_most_one_task_a_kill() {
    let _storm = STORM.lock().await;
    let pool = ProcessPoolExecutor::builder().workers(4).build().unwrap();
    let mut storm = Storm::every(25);
    let mut results = Vec::new();
    // Waves of submits under the storm, and one after it.
    for _ in 0..10 {
        let wave: Vec<_> = (0..200u64)
            .map(|i| pool.try_submit(work, (i, 50)).unwrap())
            .collect();
        for handle in wave {
            results.push(handle.await);
            storm.result();
        }
    }
    let kills = storm.kills;
    let after: Vec<_> = (0..50u64)
        .map(|i| pool.try_submit(work, (i, 0)).unwrap())
        .collect();
    for r in futures::future::join_all(after).await {
        r.unwrap();
    }
    let failed = results
        .iter()
        .filter(|r| match r {
            Ok(_) => false,
            Err(TaskError::WorkerDied { .. }) => true,
            Err(e) => panic!("{e:?}: only Ok or WorkerDied may come of a kill"),
        })
        .count() as u64;
    assert!(failed <= kills, "{failed} failed for {kills} kills");
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 0, "{stats:?}");
    assert_eq!(stats.worker_died, failed, "{stats:?}");
    common::assert_adds_up(stats);
    pool.shutdown().await;
}

/// Runs `stream`s of the pool's maps under a kill storm: every item resolves once, as
/// its value or `WorkerDied`; returns (items failed, kills).
async fn maps_under_a_storm(pool: &ProcessPoolExecutor, chunk: Option<usize>) -> (u64, u64) {
    use futures::StreamExt;
    let mut storm = Storm::every(100);
    let mut failed = 0;
    let mut check = |i: usize, r: Result<u64, TaskError>, expected: Option<u64>| match r {
        Ok(v) => {
            if let Some(e) = expected {
                assert_eq!(v, e, "item {i}");
            }
        }
        Err(TaskError::WorkerDied { .. }) => failed += 1,
        Err(e) => panic!("item {i}: {e:?}: only a value or WorkerDied may come of a kill"),
    };
    for round in 0..3 {
        let items = (0..2000u64).map(|i| (i, 20));
        let unordered = pool.map_unordered(work, items.clone());
        let ordered = pool.map_ordered_stream(work, items);
        let (mut unordered, mut ordered) = match chunk {
            Some(n) => (unordered.chunk_size(n), ordered.chunk_size(n)),
            None => (unordered, ordered),
        };
        let mut seen = vec![false; 2000];
        let mut n = 0;
        while let Some(r) = unordered.next().await {
            if let Ok(v) = &r {
                assert!(
                    !std::mem::replace(&mut seen[*v as usize], true),
                    "{v} twice"
                );
            }
            check(n, r, None);
            storm.result();
            n += 1;
        }
        assert_eq!(n, 2000, "round {round}: one result per item (unordered)");
        let mut n = 0;
        while let Some(r) = ordered.next().await {
            check(n, r, Some(n as u64));
            storm.result();
            n += 1;
        }
        assert_eq!(n, 2000, "round {round}: one result per item (ordered)");
        // `map` stops at the first error (and drops its queued chunks, which counts
        // them cancelled: by the map, not the pool); otherwise it is whole and in order.
        let items = (0..500u64).map(|i| (i, 20));
        let mapped = match chunk {
            Some(n) => pool.map(work, items).chunk_size(n).await,
            None => pool.map(work, items).await,
        };
        match mapped {
            Ok(v) => assert_eq!(v, (0..500).collect::<Vec<_>>()),
            Err(TaskError::WorkerDied { .. }) => {}
            Err(e) => panic!("map: {e:?}"),
        }
    }
    (failed, storm.kills)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_over_maps_fails_at_most_one_item_a_kill() {
    let _storm = STORM.lock().await;
    let pool = ProcessPoolExecutor::builder().workers(4).build().unwrap();
    for chunk in [Some(4), None] {
        let (failed, kills) = maps_under_a_storm(&pool, chunk).await;
        eprintln!("chunk {chunk:?}: {failed} items failed, {kills} kills");
        assert!(kills > 0);
        assert!(
            failed <= kills,
            "chunk {chunk:?}: {failed} items failed for {kills} kills"
        );
    }
    for i in 0..20u64 {
        assert_eq!(pool.run(work, (i, 0)).await.unwrap(), i);
    }
    common::assert_adds_up(pool.stats());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_tasks_with_workers_killed_at_random_all_resolve() {
    const N: u64 = 1_000_000;
    const WINDOW: usize = 4096;
    let _storm = STORM.lock().await;
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let mut kills = 0;
    let common::Storm { died, .. } = common::storm(
        N,
        WINDOW,
        Dice(0x2545_f491_4f6c_dd1d),
        (20_000, 150_000),
        |i| pool.try_submit(work, (i, 0)).unwrap(),
        |_| kills += common::kill_children(),
    )
    .await;
    eprintln!("{N} tasks: {died} failed, {kills} workers killed");
    let stats = holds_after_a_storm(pool, died, kills).await;
    assert_eq!(stats.submitted, N, "{stats:?}");
    assert_eq!(stats.cancelled, 0, "{stats:?}");
}

/// After a storm of `kills` that failed `died` tasks: at least one kill, at most one
/// failure a kill, the pool's counts agree with that, and the pool shuts down leaving
/// no child. Its statistics from before the shutdown, for more checks.
async fn holds_after_a_storm(pool: ProcessPoolExecutor, died: u64, kills: u64) -> PoolStats {
    assert!(kills > 0);
    assert!(died <= kills, "{died} failed for {kills} kills");
    let stats = pool.stats();
    assert_eq!(stats.worker_died, died, "{stats:?}");
    common::assert_adds_up(stats);
    pool.shutdown().await;
    assert!(common::live_children().is_empty());
    stats
}

/// Task `i`'s argument: a megabyte and some (a large frame, through the
/// bulk area), a word depending on `i` over and over.
fn large(i: u64) -> Vec<u8> {
    let words = (128 << 10) + (i % 7) as usize * 512;
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        .to_le_bytes()
        .repeat(words)
}

fn echo_large(v: Vec<u8>) -> Vec<u8> {
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_both_ways_under_a_storm_come_back_whole_or_fail_with_their_worker() {
    // Killed workers die in the middle of copying a task out of the bulk area or a
    // reply into it (the storm strikes while others run): no reply is ever taken
    // half-written, and every task resolves.
    const N: u64 = 2000;
    let _storm = STORM.lock().await;
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let mut kills = 0;
    let common::Storm { died, .. } = common::storm_checking(
        N,
        8,
        Dice(0x9e37_79b9_7f4a_7c15),
        (5, 40),
        |i| pool.try_submit(echo_large, large(i)).unwrap(),
        |i, v: Vec<u8>| assert!(v == large(i), "task {i}'s echo differs"),
        |_| kills += common::kill_children(),
    )
    .await;
    eprintln!("{N} large echoes: {died} failed, {kills} workers killed");
    holds_after_a_storm(pool, died, kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_run_that_read_their_own_replies_all_resolve_under_a_storm() {
    // Three callers awaiting one task at a time on two workers: most of their tasks
    // go through a lent ring and are read by the caller, some through the queue, and
    // a kill can strike either way, at any point of either.
    const CALLERS: u64 = 3;
    const EACH: u64 = 10_000;
    let _storm = STORM.lock().await;
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for c in 0..CALLERS {
        let (pool, tx) = (pool.clone(), tx.clone());
        tokio::spawn(async move {
            for i in 0..EACH {
                let x = c * EACH + i;
                let r = pool.run(work, (x, 0)).await;
                if tx.send((x, r)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let mut strike_at = dice.roll(100, 700);
    let (mut results, mut died, mut kills) = (0u64, 0u64, 0u64);
    while let Some((x, r)) = rx.recv().await {
        match r {
            Ok(v) => assert_eq!(v, x),
            Err(TaskError::WorkerDied { .. }) => died += 1,
            Err(e) => panic!("task {x}: {e:?}: only its value or WorkerDied may come"),
        }
        results += 1;
        if results == strike_at {
            kills += common::kill_children();
            strike_at += dice.roll(100, 700);
        }
    }
    assert_eq!(
        results,
        CALLERS * EACH,
        "every caller's every task resolved"
    );
    eprintln!(
        "{results} tasks ({} read by their callers): {died} failed, {kills} workers killed",
        pool.stats().direct
    );
    assert!(kills > 0);
    assert!(died <= kills, "{died} failed for {kills} kills");
    let stats = pool.stats();
    assert_eq!(stats.cancelled, 0, "{stats:?}");
    assert_eq!(stats.worker_died, died, "{stats:?}");
    common::assert_adds_up(stats);
    pool.shutdown().await;
    assert!(common::live_children().is_empty());
}
