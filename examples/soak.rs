//! A soak: minutes of mixed work through one pool while workers are killed at random,
//! with the parent's counts, descriptors, threads and memory printed every 10 s.
//!
//! ```text
//! cargo run --release --example soak -- --minutes 10 --workers 4 --kill-every-ms 50
//! ```
//!
//! The work: short tasks submitted one by one, `map_unordered` rounds, tasks that
//! panic, tasks that run past the pool's timeout, tasks cancelled on purpose, and
//! echoes of 256 KiB to 4 MiB (through the workers' bulk areas), checked byte for
//! byte.
//! Every result is checked against what that task may legitimately end with; anything
//! else (a wrong value, a `Cancelled` nobody asked for, an error of the wrong kind) is
//! a *spurious* result. Meanwhile a killer sends `SIGKILL` to a random worker. At the
//! end it says whether the descriptors and threads stayed flat and how far memory
//! moved after the first report, and exits non-zero on any spurious result.
// Picking a worker to kill needs `kill(2)` through a pidfd, which std does not wrap.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use procpool::{ProcessPoolExecutor, TaskError};

struct Args {
    minutes: f64,
    workers: usize,
    kill_every: Duration,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 1.0,
        workers: 4,
        kill_every: Duration::from_millis(50),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--minutes" => a.minutes = value.parse().unwrap_or(a.minutes),
            "--workers" => a.workers = value.parse().unwrap_or(a.workers),
            "--kill-every-ms" => a.kill_every = Duration::from_millis(value.parse().unwrap_or(50)),
            other => eprintln!("soak: ignoring unknown argument {other}"),
        }
    }
    a
}

/// Busy for `us` microseconds, then returns `x + 1`.
fn work((x, us): (u64, u64)) -> u64 {
    let end = Instant::now() + Duration::from_micros(us);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    x + 1
}

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

/// Echo `i`'s bytes: 256 KiB to 4 MiB, a word depending on `i` over and over.
fn large(i: u64) -> Vec<u8> {
    let words = (32usize << 10) << (i % 5);
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        .to_le_bytes()
        .repeat(words)
}

fn panics(x: u64) -> u64 {
    panic!("soak panic {x}")
}

fn sleeps(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    died: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    cancelled_on_purpose: AtomicU64,
    /// Large echoes that came back whole (also counted in `ok`).
    echoed: AtomicU64,
    spurious: AtomicU64,
    kills: AtomicU64,
}

impl Tally {
    fn spurious(&self, what: String) {
        self.spurious.fetch_add(1, Ordering::Relaxed);
        eprintln!("SPURIOUS: {what}");
    }

    /// A task that should return `want`; a kill may make it `WorkerDied`.
    fn value(&self, r: Result<u64, TaskError>, want: u64) {
        match r {
            Ok(v) if v == want => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(TaskError::WorkerDied { .. }) => self.died.fetch_add(1, Ordering::Relaxed),
            other => {
                self.spurious(format!("wanted {want}, got {other:?}"));
                0
            }
        };
    }
}

fn children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut fields = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split(' '))
            .into_iter()
            .flatten();
        let (state, ppid) = (fields.next(), fields.next());
        if ppid == Some(me.as_str()) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs `pid` through a pidfd, if it is still our child.
fn kill(pid: u32) -> bool {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !children().contains(&pid) {
        return false; // reaped and reused between the scan and the open
    }
    // SAFETY: the pidfd is open for the call; a null siginfo and flags 0 send a plain
    // signal.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    rc == 0
}

struct Sample {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn sample() -> Sample {
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    Sample {
        fds: count("/proc/self/fd"),
        threads: count("/proc/self/task"),
        rss_kib,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let pool = Arc::new(
        ProcessPoolExecutor::builder()
            .workers(args.workers)
            .task_timeout(Duration::from_millis(500))
            .build()
            .expect("a pool"),
    );
    pool.ready().await.expect("workers up");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    println!(
        "soak: {} min, {} workers, a random worker killed every {:?}",
        args.minutes, args.workers, args.kill_every
    );

    let killer = {
        let (tally, stop) = (tally.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seed = std::process::id() as u64 | 1;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(args.kill_every);
                let kids = children();
                if kids.is_empty() {
                    continue;
                }
                // xorshift: a random worker, no dependency needed.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if kill(kids[(seed % kids.len() as u64) as usize]) {
                    tally.kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let submitter = {
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let results = (0..100).map(|k| pool.run(work, (i + k, 20)));
                for (k, r) in futures::future::join_all(results)
                    .await
                    .into_iter()
                    .enumerate()
                {
                    tally.value(r, i + k as u64 + 1);
                }
                i += 100;
            }
        })
    };

    let mapper = {
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut seen = vec![false; 1000];
                let mut s = pool.map_unordered(work, (0..1000u64).map(|x| (x, 5)));
                while let Some(r) = s.next().await {
                    match r {
                        Ok(v) if (1..=1000).contains(&v) && !seen[v as usize - 1] => {
                            seen[v as usize - 1] = true;
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        r => tally.value(r, u64::MAX),
                    }
                }
            }
        })
    };

    let odd_ones = {
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // A panic: the worker survives it.
                match pool.run(panics, i).await {
                    Err(TaskError::Panicked(_)) => {
                        tally.panicked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TaskError::WorkerDied { .. }) => {
                        tally.died.fetch_add(1, Ordering::Relaxed);
                    }
                    other => tally.spurious(format!("a panicking task gave {other:?}")),
                }
                // Past the 500 ms timeout.
                if i.is_multiple_of(10) {
                    match pool.run(sleeps, 2000).await {
                        Err(TaskError::TimedOut { .. }) => {
                            tally.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TaskError::WorkerDied { .. }) => {
                            tally.died.fetch_add(1, Ordering::Relaxed);
                        }
                        other => tally.spurious(format!("a sleeping task gave {other:?}")),
                    }
                }
                // Cancelled on purpose, queued or running.
                let h = match pool.submit(sleeps, 50).await {
                    Ok(h) => h,
                    Err(e) => {
                        tally.spurious(format!("submitting a task gave {e:?}"));
                        continue;
                    }
                };
                h.cancel();
                match h.await {
                    Err(TaskError::Cancelled) => {
                        tally.cancelled_on_purpose.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(50) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TaskError::WorkerDied { .. }) => {
                        tally.died.fetch_add(1, Ordering::Relaxed);
                    }
                    other => tally.spurious(format!("a cancelled task gave {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let echoes = {
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let sent = large(i);
                match pool.run(echo, sent.clone()).await {
                    Ok(back) if back == sent => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tally.echoed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TaskError::WorkerDied { .. }) => {
                        tally.died.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(back) => tally.spurious(format!(
                        "echo {i} of {} bytes came back as {} different ones",
                        sent.len(),
                        back.len()
                    )),
                    Err(e) => tally.spurious(format!("echo {i} gave {e:?}")),
                }
            }
        })
    };

    let started = Instant::now();
    let mut first: Option<Sample> = None;
    let (mut fds, mut threads, mut rss) = ((usize::MAX, 0), (usize::MAX, 0), (u64::MAX, 0));
    let mut last_rss = 0;
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>6} {:>5} {:>7} {:>9}",
        "t(s)",
        "submitted",
        "completed",
        "died",
        "panic",
        "timeout",
        "cancelled",
        "kills",
        "spur",
        "fds",
        "threads",
        "rss(KiB)"
    );
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10).min(end - Instant::now())).await;
        let s = sample();
        let st = pool.stats();
        println!(
            "{:>6.0} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>6} {:>5} {:>7} {:>9}",
            started.elapsed().as_secs_f64(),
            st.submitted,
            st.completed,
            st.worker_died,
            st.panicked,
            st.timed_out,
            st.cancelled,
            tally.kills.load(Ordering::Relaxed),
            tally.spurious.load(Ordering::Relaxed),
            s.fds,
            s.threads,
            s.rss_kib
        );
        // The first report ends the warm-up; ranges are taken from it on.
        if first.is_some() {
            fds = (fds.0.min(s.fds), fds.1.max(s.fds));
            threads = (threads.0.min(s.threads), threads.1.max(s.threads));
            rss = (rss.0.min(s.rss_kib), rss.1.max(s.rss_kib));
        }
        last_rss = s.rss_kib;
        first.get_or_insert(s);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = killer.join();
    for t in [submitter, mapper, odd_ones, echoes] {
        let _ = t.await;
    }
    pool.shutdown().await;

    let spurious = tally.spurious.load(Ordering::Relaxed);
    let st = pool.stats();
    println!(
        "\nresults: {} ok ({} of them large echoes), {} worker died, {} panicked, {} timed \
         out, {} cancelled on purpose, {} spurious; {} kills, {} worker restarts",
        tally.ok.load(Ordering::Relaxed),
        tally.echoed.load(Ordering::Relaxed),
        tally.died.load(Ordering::Relaxed),
        tally.panicked.load(Ordering::Relaxed),
        tally.timed_out.load(Ordering::Relaxed),
        tally.cancelled_on_purpose.load(Ordering::Relaxed),
        spurious,
        tally.kills.load(Ordering::Relaxed),
        st.worker_restarts
    );
    println!(
        "pool counts add up: submitted {} = completed {} + failed {} + cancelled {}: {}",
        st.submitted,
        st.completed,
        st.failed,
        st.cancelled,
        st.submitted == st.completed + st.failed + st.cancelled
    );
    let mut flat = true;
    if let Some(first) = first {
        let drift = |v: u64| (v as f64 - first.rss_kib as f64) / first.rss_kib as f64 * 100.0;
        println!(
            "after warm-up: fds {}..{} (first {}), threads {}..{} (first {}), RSS {}..{} KiB \
             (first {}, last {}: {:+.1}%, max {:+.1}%)",
            fds.0.min(first.fds),
            fds.1.max(first.fds),
            first.fds,
            threads.0.min(first.threads),
            threads.1.max(first.threads),
            first.threads,
            rss.0.min(first.rss_kib),
            rss.1.max(first.rss_kib),
            first.rss_kib,
            last_rss,
            drift(last_rss),
            drift(rss.1.max(first.rss_kib)),
        );
        flat = threads.1.max(first.threads) == threads.0.min(first.threads);
    }
    if spurious > 0 || !flat {
        eprintln!("soak: FAILED ({spurious} spurious results, threads flat: {flat})");
        std::process::exit(1);
    }
}
