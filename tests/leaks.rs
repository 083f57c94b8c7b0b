//! Nothing grows with use: 200,000 submits through one pool and 2,000 processes leave
//! this process with the descriptors and threads it had after warming up, and its
//! memory within a few MiB. Alone in its binary: it counts the whole process.

mod common;

use procpool::{Process, ProcessPoolExecutor};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Resident memory in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What this process holds: descriptors, threads, resident KiB.
#[derive(Clone, Copy, Debug)]
struct Footprint {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

impl Footprint {
    fn now() -> Footprint {
        Footprint {
            fds: open_fds(),
            threads: threads(),
            rss_kib: rss_kib(),
        }
    }

    /// The same descriptors and threads as `self`, and memory within the slack.
    fn assert_flat(self, after: &str) {
        let now = Footprint::now();
        assert_eq!(now.fds, self.fds, "descriptors after {after}");
        assert_eq!(now.threads, self.threads, "threads after {after}");
        let grown = now.rss_kib.saturating_sub(self.rss_kib);
        assert!(grown < RSS_SLACK_KIB, "RSS grew {grown} KiB over {after}");
    }
}

fn double(x: u64) -> u64 {
    x * 2
}

/// Memory may settle after warm-up (allocator arenas, caches); 16 MiB is far above
/// that noise and far below what a leak of even a few bytes per task would cost here
/// (200,000 tasks).
const RSS_SLACK_KIB: u64 = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_grows_over_200_000_submits_and_2_000_processes() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let wave = |base: u64| {
        let handles: Vec<_> = (0..10_000)
            .map(|i| pool.try_submit(double, base + i).unwrap())
            .collect();
        async move {
            for (i, r) in futures::future::join_all(handles)
                .await
                .into_iter()
                .enumerate()
            {
                assert_eq!(r.unwrap(), (base + i as u64) * 2);
            }
        }
    };
    // Warm up: workers started, buffers and queues at their working size.
    for w in 0..2 {
        wave(w * 10_000).await;
    }
    let before = Footprint::now();
    for w in 2..22 {
        wave(w * 10_000).await;
    }
    assert_eq!(pool.stats().completed, 220_000);
    before.assert_flat("200,000 submits");
    pool.shutdown().await;

    // 2,000 processes, 50 at a time.
    let batch = |base: u32| async move {
        let ps: Vec<_> = (base..base + 50)
            .map(|i| Process::spawn(|x: u32| x + 1, i).unwrap())
            .collect();
        for (k, mut p) in ps.into_iter().enumerate() {
            assert_eq!(p.join().await.unwrap(), base + k as u32 + 1);
        }
    };
    batch(0).await;
    let before = Footprint::now();
    for b in 1..=40 {
        batch(b * 50).await;
    }
    before.assert_flat("2,000 processes");
    assert!(common::zombie_children().is_empty());
}
