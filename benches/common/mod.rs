//! Set-up shared by the benches.
#![allow(dead_code)]

use procpool::ProcessPoolExecutor;

/// The runtime every bench drives procpool from: two worker threads, all drivers.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A pool of `workers` processes, started and ready, built on `rt`.
pub(crate) fn ready_pool(rt: &tokio::runtime::Runtime, workers: usize) -> ProcessPoolExecutor {
    rt.block_on(async {
        let pool = ProcessPoolExecutor::builder()
            .workers(workers)
            .build()
            .unwrap();
        pool.ready().await.unwrap();
        pool
    })
}

/// Runs `benches/python/<script>` with `args` `runs` times and returns the median of
/// each figure it prints (`{"name": .., "value": .., "unit": ..}` per line); `None`
/// when python3 is missing or fails.
pub(crate) fn python(script: &str, args: &[String], runs: usize) -> Option<Vec<(String, f64)>> {
    let path = format!("{}/benches/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut all: Vec<Vec<(String, f64)>> = Vec::new();
    for _ in 0..runs {
        let out = std::process::Command::new("python3")
            .arg(&path)
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        all.push(
            text.lines()
                .filter_map(|l| {
                    let name = l.split("\"name\": \"").nth(1)?.split('"').next()?;
                    let value = l.split("\"value\": ").nth(1)?.split(',').next()?;
                    Some((name.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        );
    }
    let names: Vec<String> = all.first()?.iter().map(|(n, _)| n.clone()).collect();
    Some(
        names
            .into_iter()
            .map(|n| {
                let vals = all
                    .iter()
                    .filter_map(|r| r.iter().find(|(m, _)| *m == n).map(|(_, v)| *v))
                    .collect();
                (n, median(vals))
            })
            .collect(),
    )
}

/// The median of `v` (which must not be empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints procpool's figures beside Python's with the ratio "how many times better
/// procpool is": Python's time over ours for times (`ns`, `us`), ours over Python's for
/// rates. A name ending in `_blocking` compares with Python's figure without it.
pub(crate) fn print_table(title: &str, ours: &[(&str, f64, &str)], py: Option<&[(String, f64)]>) {
    println!("\n{title}");
    println!(
        "{:<26} {:>12} {:>12} {:>8}  unit",
        "workload", "procpool", "python3", "ratio"
    );
    for &(name, value, unit) in ours {
        let py_name = name.trim_end_matches("_blocking");
        let theirs = py.and_then(|p| p.iter().find(|(n, _)| n == py_name).map(|(_, v)| *v));
        let (theirs_s, ratio_s) = match theirs {
            Some(t) => {
                let ratio = if unit == "us" || unit == "ns" {
                    t / value
                } else {
                    value / t
                };
                (format!("{t:.1}"), format!("{ratio:.1}x"))
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!("{name:<26} {value:>12.1} {theirs_s:>12} {ratio_s:>8}  {unit}");
    }
}

/// A pool of `workers` processes, started and ready, on the current runtime.
pub(crate) async fn ready_pool_on(workers: usize) -> ProcessPoolExecutor {
    let pool = ProcessPoolExecutor::builder()
        .workers(workers)
        .queue_capacity(1 << 17)
        .build()
        .unwrap();
    pool.ready().await.unwrap();
    pool
}

/// The trivial task of the throughput and round-trip workloads.
pub(crate) fn trivial(x: u64) -> u64 {
    x.wrapping_mul(2654435761)
}

/// `n` steps of an LCG: CPU work the optimiser cannot remove.
pub(crate) fn spin(n: u64) -> u64 {
    let mut x = 1u64;
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::hint::black_box(x);
    }
    x
}

/// Iterations of [`spin`] that take about 10 ms here.
pub(crate) fn calibrate_10ms() -> u64 {
    let n = 1_000_000;
    let t = std::time::Instant::now();
    std::hint::black_box(spin(std::hint::black_box(n)));
    let per = t.elapsed().as_secs_f64() / n as f64;
    (0.010 / per) as u64
}

/// Submits `n` tasks one by one with at most 65,536 outstanding (the pool's default
/// queue capacity), awaiting the oldest when the window is full; tasks per second.
pub(crate) async fn windowed<H, T, E>(n: u64, mut submit: impl FnMut(u64) -> H) -> f64
where
    H: std::future::Future<Output = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    const WINDOW: usize = 1 << 16;
    let t = std::time::Instant::now();
    let mut window = std::collections::VecDeque::with_capacity(WINDOW);
    for i in 0..n {
        if window.len() == WINDOW {
            let h: H = window.pop_front().expect("full");
            h.await.unwrap();
        }
        window.push_back(submit(i));
    }
    for h in window {
        h.await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}
