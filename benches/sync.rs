//! Locks, events and shared values across processes, beside Python's
//! `multiprocessing` doing the same work in the same run.
//!
//! `cargo bench --bench sync` prints one table: procpool's figure, Python's
//! (`benches/python/sync.py`, when `python3` is on the PATH) and the ratio (how many
//! times better procpool is). Median of `RUNS` runs each.
//!
//! - `lock_uncontended`: lock + unlock in one process, ns per pair.
//! - `lock_contended_2`: two child processes each lock + unlock `N` times on one lock;
//!   ns per pair.
//! - `event_round_trip`: parent sets event A, a child waiting on A clears it and sets
//!   B, the parent waiting on B clears it; µs per round trip (the parent async).
//! - `value_increments_2`: two children each do `N` locked increments of one shared
//!   `Value<i64>`; increments per second.
//!
//! The two-process cases are timed inside the children, from a barrier that all
//! three processes pass once both children are running (so that neither process
//! start-up nor the wake-up of a late child counts), to the end of the slower
//! child's loop. Each runs three times: unpinned, with both children pinned to one
//! CPU (`_one_cpu`: they take turns, and most takes find the lock free), and pinned
//! to two CPUs (`_two_cpus`: they run at once and the lock's cache line travels
//! between cores). Unpinned, the figure is whichever of the two the scheduler chose,
//! or a mix; the pinned rows say what each placement costs. Python's script does
//! the same.
//!
//! `PROCPOOL_BENCH_QUICK=1` for a short smoke run.

use std::time::Instant;

use procpool::{Barrier, Event, Lock, Process, Value};

mod common;

const RUNS: usize = 5;

fn n() -> usize {
    if std::env::var_os("PROCPOOL_BENCH_QUICK").is_some() {
        10_000
    } else {
        100_000
    }
}

/// Where the two children of a contended case run: CPUs to pin them to, if any.
#[derive(Clone, Copy)]
enum Placement {
    Unpinned,
    OneCpu,
    TwoCpus,
}

impl Placement {
    const ALL: [Placement; 3] = [Placement::Unpinned, Placement::OneCpu, Placement::TwoCpus];

    fn suffix(self) -> &'static str {
        match self {
            Placement::Unpinned => "",
            Placement::OneCpu => "_one_cpu",
            Placement::TwoCpus => "_two_cpus",
        }
    }

    /// The CPU of each child, from the CPUs this process may use; `None` when there
    /// are not two of them for `TwoCpus`.
    fn cpus(self) -> Option<[Option<usize>; 2]> {
        let allowed = rustix::thread::sched_getaffinity(None).ok()?;
        let mut usable = (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c));
        let first = usable.next()?;
        match self {
            Placement::Unpinned => Some([None, None]),
            Placement::OneCpu => Some([Some(first), Some(first)]),
            Placement::TwoCpus => Some([Some(first), Some(usable.next()?)]),
        }
    }
}

/// Pins this process to `cpu`, then waits at `start` with the parent and the other
/// child, and starts the clock.
fn line_up(cpu: Option<usize>, start: &Barrier) -> Instant {
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).unwrap();
    }
    start.blocking_wait().unwrap();
    Instant::now()
}

/// A child of `lock_contended`: its loop's time, ns.
fn contend((lock, n, start, cpu): (Lock, usize, Barrier, Option<usize>)) -> u64 {
    let t = line_up(cpu, &start);
    for _ in 0..n {
        drop(lock.blocking_lock().unwrap());
    }
    t.elapsed().as_nanos() as u64
}

fn bounce((mine, theirs, n): (Event, Event, usize)) {
    for _ in 0..n {
        theirs.blocking_wait().unwrap();
        theirs.clear();
        mine.set();
    }
}

/// A child of `value_increments`: its loop's time, ns.
fn increment((v, n, start, cpu): (Value<i64>, usize, Barrier, Option<usize>)) -> u64 {
    let t = line_up(cpu, &start);
    for _ in 0..n {
        v.update(|x| *x += 1);
    }
    t.elapsed().as_nanos() as u64
}

/// Runs `child` in two processes placed at `cpus`, lined up at one barrier with
/// this one; the slower child's time, s.
async fn two_children<A, F>(child: F, shared: &A, n: usize, cpus: [Option<usize>; 2]) -> f64
where
    A: procpool::Message + Clone,
    F: procpool::Task<(A, usize, Barrier, Option<usize>), u64> + Copy,
{
    let start = Barrier::new(3).unwrap();
    let ps: Vec<_> = cpus
        .iter()
        .map(|&cpu| Process::spawn(child, (shared.clone(), n, start.clone(), cpu)).unwrap())
        .collect();
    start.wait().await.unwrap();
    let mut slowest = 0;
    for mut p in ps {
        slowest = slowest.max(p.join().await.unwrap());
    }
    slowest as f64 / 1e9
}

fn lock_uncontended(n: usize) -> f64 {
    let lock = Lock::new().unwrap();
    let t0 = Instant::now();
    for _ in 0..n {
        drop(lock.blocking_lock().unwrap());
    }
    t0.elapsed().as_secs_f64() / n as f64 * 1e9
}

async fn lock_contended(n: usize, cpus: [Option<usize>; 2]) -> f64 {
    let lock = Lock::new().unwrap();
    two_children(contend, &lock, n, cpus).await / (2 * n) as f64 * 1e9
}

async fn event_round_trip(n: usize) -> f64 {
    let trips = (n / 50).max(100);
    let (a, b) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::spawn(bounce, (b.clone(), a.clone(), trips)).unwrap();
    let t0 = Instant::now();
    for _ in 0..trips {
        a.set();
        b.wait().await.unwrap();
        b.clear();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().await.unwrap();
    dt / trips as f64 * 1e6
}

async fn value_increments(n: usize, cpus: [Option<usize>; 2]) -> f64 {
    let v = Value::new(0i64).unwrap();
    let secs = two_children(increment, &v, n, cpus).await;
    assert_eq!(v.load(), 2 * n as i64);
    (2 * n) as f64 / secs
}

/// The name of a two-process row at a placement (the names live as long as the table).
fn row(name: &str, at: Placement) -> &'static str {
    format!("{name}{}", at.suffix()).leak()
}

fn main() {
    let n = n();
    let rt = common::runtime();
    let mut ours: Vec<(&str, f64, &str)> = Vec::new();
    rt.block_on(async {
        let (mut uncontended, mut events) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            // Blocking code: off the runtime's threads, as a user's would be.
            uncontended.push(
                tokio::task::spawn_blocking(move || lock_uncontended(n))
                    .await
                    .unwrap(),
            );
            events.push(event_round_trip(n).await);
        }
        ours.push(("lock_uncontended", common::median(uncontended), "ns"));
        let mut values = Vec::new();
        for at in Placement::ALL {
            let Some(cpus) = at.cpus() else {
                println!("(one CPU here: no {} rows)", at.suffix());
                continue;
            };
            let (mut locks, mut incs) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                locks.push(lock_contended(n, cpus).await);
                incs.push(value_increments(n, cpus).await);
            }
            ours.push((row("lock_contended_2", at), common::median(locks), "ns"));
            values.push((row("value_increments_2", at), common::median(incs), "ops/s"));
        }
        ours.push(("event_round_trip", common::median(events), "us"));
        ours.extend(values);
    });
    let py = common::python("sync.py", &[n.to_string()], RUNS);
    common::print_table(
        &format!("n = {n}, median of {RUNS} runs"),
        &ours,
        py.as_deref(),
    );
}
