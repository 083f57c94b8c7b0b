//! One table: procpool beside its peers on the workloads W1–W5 of the performance
//! issue, every figure measured in this run on this machine.
//!
//! ```text
//! cargo bench --bench compare            # 5 runs per figure, medians
//! cargo bench --bench compare -- --quick # 3 runs, smaller counts
//! ```
//!
//! Peers: a raw unix socketpair ping-pong with a child process (the floor for any
//! cross-process round trip), tokio's `spawn_blocking` (in-process, no isolation), the
//! same work done serially in this process, and — when `python3` is found —
//! `benches/python/compare.py` (`concurrent.futures.ProcessPoolExecutor` and
//! `multiprocessing.Pool`, fork start method). BENCHMARKS.md explains each row.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "compare_plots/mod.rs"]
mod plots;

use common::{calibrate_10ms, spin, trivial, windowed};

use futures::StreamExt;
use procpool::{ProcessPoolExecutor, SharedMemory, StartMethod};

/// Set in a child of this bench to make it a raw echo peer or a memory probe.
const CHILD: &str = "PROCPOOL_COMPARE_CHILD";
/// The CPU a raw-floor child pins itself to, if set.
const PIN: &str = "PROCPOOL_COMPARE_PIN";
const PAYLOAD: usize = 16 << 20;

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

fn echo_shm(m: SharedMemory) -> SharedMemory {
    m
}

struct Sizes {
    runs: usize,
    round_trips: usize,
    tasks: u64,
    submits: u64,
    echoes: usize,
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        return child(&mode);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let s = if quick {
        Sizes {
            runs: 3,
            round_trips: 500,
            tasks: 200_000,
            submits: 100_000,
            echoes: 3,
        }
    } else {
        Sizes {
            runs: 5,
            round_trips: 2000,
            tasks: 1_000_000,
            submits: 1_000_000,
            echoes: 10,
        }
    };
    let rt = common::runtime();
    let mut rows = Rows::default();
    // `--only W1` (for example) measures one workload and prints it; `--only idle`
    // the CPU an idle pool uses.
    if let Some(only) = std::env::args().skip_while(|a| a != "--only").nth(1) {
        return only_one(&only, &rt, &s);
    }

    eprintln!("W1: sequential round trips");
    // Alternated run by run, so that the machine drifting (it does, on a VM) moves
    // both alike; the ratio is the median of the per-run ratios.
    let pool = common::ready_pool(&rt, 1);
    let (mut ours, mut floor, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.runs.max(7) {
        let o = rt.block_on(per_item_us(s.round_trips, || async {
            pool.run(trivial, 7).await.unwrap();
        }));
        let f = raw_ping_pong(s.round_trips);
        ours.push(o);
        floor.push(f);
        ratios.push(f / o);
    }
    rt.block_on(pool.shutdown());
    let (w1_pool, w1_sock) = (common::median(ours), common::median(floor));
    let w1_ratio = common::median(ratios);
    // The floor with its two sides placed, not left to the scheduler.
    let pinned = |apart| {
        let runs: Vec<f64> = (0..s.runs)
            .filter_map(|_| raw_ping_pong_pinned(s.round_trips, apart))
            .collect();
        (!runs.is_empty()).then(|| common::median(runs))
    };
    let (w1_apart, w1_same) = (pinned(true), pinned(false));
    // The same from a current-thread runtime: caller and driver share a thread.
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = ct.block_on(common::ready_pool_on(1));
    let (mut ours_ct, mut ratios_ct) = (Vec::new(), Vec::new());
    for _ in 0..s.runs.max(7) {
        let o = ct.block_on(per_item_us(s.round_trips, || async {
            pool.run(trivial, 7).await.unwrap();
        }));
        let f = raw_ping_pong(s.round_trips);
        ours_ct.push(o);
        ratios_ct.push(f / o);
    }
    ct.block_on(pool.shutdown());
    let (w1_ct, w1_ct_ratio) = (common::median(ours_ct), common::median(ratios_ct));
    let w1_blocking = median_of(s.runs, || {
        rt.block_on(per_item_us(s.round_trips, || async {
            tokio::task::spawn_blocking(|| trivial(7)).await.unwrap();
        }))
    });

    eprintln!("W2: {} trivial tasks", s.tasks);
    let pool = common::ready_pool(&rt, 2);
    let w2_map = median_of(s.runs, || rt.block_on(map_rate(&pool, s.tasks)));
    // `submit` and `spawn_blocking` alternate, run by run, as the W1 rows do, so that a
    // slow spell of the host falls on both sides of a ratio.
    let (w2_submit, w2_blocking, w2_ratio) = submit_beside_threads(&rt, &pool, &s);
    rt.block_on(pool.shutdown());

    eprintln!("W3: 64 tasks of ~10 ms on 2 workers");
    let iters = calibrate_10ms();
    let pool = common::ready_pool(&rt, 2);
    let w3 = median_of(s.runs, || {
        let t = Instant::now();
        for _ in 0..64 {
            std::hint::black_box(spin(std::hint::black_box(iters)));
        }
        let serial = t.elapsed();
        let pooled = rt.block_on(async {
            let t = Instant::now();
            let out = pool
                .map(spin, std::iter::repeat_n(iters, 64))
                .chunk_size(1)
                .await
                .unwrap();
            assert_eq!(out.len(), 64);
            t.elapsed()
        });
        serial.as_secs_f64() / pooled.as_secs_f64()
    });
    rt.block_on(pool.shutdown());

    eprintln!("W4: 16 MiB echoed");
    let pool = common::ready_pool(&rt, 1);
    let data: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
    let w4_vec = median_of(s.runs, || {
        rt.block_on(async {
            let mut v = data.clone();
            let t = Instant::now();
            for _ in 0..s.echoes {
                v = pool.run(echo, v).await.unwrap();
            }
            let rate = gbps(2 * PAYLOAD * s.echoes, t.elapsed());
            assert_eq!(v, data);
            rate
        })
    });
    let shm = SharedMemory::new(PAYLOAD).unwrap();
    let w4_shm = median_of(s.runs, || {
        rt.block_on(async {
            let t = Instant::now();
            for _ in 0..s.echoes {
                pool.run(echo_shm, shm.clone()).await.unwrap();
            }
            gbps(2 * PAYLOAD * s.echoes, t.elapsed())
        })
    });
    let mut back = vec![0u8; PAYLOAD];
    let w4_shm_copy = median_of(s.runs, || {
        rt.block_on(async {
            let t = Instant::now();
            for _ in 0..s.echoes {
                shm.write(0, &data);
                let m = pool.run(echo_shm, shm.clone()).await.unwrap();
                m.read(0, &mut back);
            }
            gbps(2 * PAYLOAD * s.echoes, t.elapsed())
        })
    });
    assert_eq!(back, data);
    rt.block_on(pool.shutdown());
    let w4_sock = median_of(s.runs, || raw_bulk_echo(&data, s.echoes));
    let w4_message = median_of(s.runs, || raw_message_echo(&data, s.echoes));

    eprintln!("W5: pool of 2 built, first result back");
    let w5 = median_of(s.runs.max(7), || rt.block_on(start_two_and_run(SPAWN)));
    let w5_floor = median_of(s.runs.max(7), raw_start_two_ms);
    // The first pool with the fork server starts it; the next ones find it running.
    let w5_fork_first = rt.block_on(start_two_and_run(FORK));
    let w5_fork = median_of(s.runs.max(7), || rt.block_on(start_two_and_run(FORK)));
    let (w5_heap, w5_fork_heap) = with_big_heap(|| {
        (
            heavy_w5(&rt, SPAWN, s.runs.max(7)),
            heavy_w5(&rt, FORK, s.runs.max(7)),
        )
    });

    eprintln!("Memory");
    let idle = rt.block_on(async {
        let pool = common::ready_pool_on(2).await;
        pool.map(trivial, 0..2).await.unwrap();
        // The workers only: the fork server that the W5 rows started is a child too.
        let kib: u64 = children_of_self()
            .iter()
            .filter(|&&p| !is_fork_server(p))
            .map(|&p| rss_kib(p, "VmRSS"))
            .sum();
        pool.shutdown().await;
        kib as f64 / 1024.0
    });
    let (base_peak, map_peak) = map_peak_rss();

    eprintln!("Idle CPU");
    let idle_cpu = median_of(s.runs.min(3), || rt.block_on(idle_cpu_ms()));

    eprintln!("Plots: W1 latency samples, map against workers");
    let w1_pool_samples = {
        let pool = common::ready_pool(&rt, 1);
        let samples = rt.block_on(async {
            for i in 0..200 {
                pool.run(trivial, i).await.unwrap();
            }
            let mut v = Vec::with_capacity(s.round_trips * 5);
            for i in 0..(s.round_trips * 5) as u64 {
                let t = Instant::now();
                pool.run(trivial, i).await.unwrap();
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
            v
        });
        rt.block_on(pool.shutdown());
        samples
    };
    let floor_samples = |apart| raw_ping_pong_samples(s.round_trips * 5, apart);
    let (apart_samples, same_samples) = (floor_samples(true), floor_samples(false));
    let map_by_workers: Vec<(u32, f64)> = [1u32, 2, 4]
        .into_iter()
        .map(|w| {
            let pool = common::ready_pool(&rt, w as usize);
            let rate = median_of(s.runs.min(3), || rt.block_on(map_rate(&pool, s.tasks)));
            rt.block_on(pool.shutdown());
            (w, rate)
        })
        .collect();

    eprintln!("Python");
    let py = common::python(
        "compare.py",
        &(if quick {
            vec!["--quick".into()]
        } else {
            vec![]
        }),
        s.runs.min(3),
    );
    let py = |name: &str| {
        py.as_ref()
            .and_then(|p| p.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
    };

    rows.time(
        "W1 round trip (us)",
        w1_pool,
        "raw socketpair, processes",
        Some(w1_sock),
        "≥ 1.0x",
    );
    rows.0.push([
        String::new(),
        String::new(),
        "  same, median of per-run ratios".into(),
        String::new(),
        format!("{w1_ratio:.2}x"),
        "≥ 1.0x".into(),
    ]);
    rows.time("", w1_pool, "raw, pinned to 2 CPUs", w1_apart, "≥ 2x");
    rows.time("", w1_pool, "raw, pinned to 1 CPU", w1_same, "-");
    rows.0.push([
        "W1, current-thread runtime".into(),
        fmt(w1_ct),
        "raw socketpair, median of per-run ratios".into(),
        String::new(),
        format!("{w1_ct_ratio:.2}x"),
        "≥ 2x".into(),
    ]);
    rows.time(
        "",
        w1_pool,
        "Python ProcessPoolExecutor",
        py("w1_round_trip_ppe"),
        "≥ 20x",
    );
    rows.time(
        "",
        w1_pool,
        "tokio spawn_blocking (threads)",
        Some(w1_blocking),
        "-",
    );
    rows.rate(
        "W2 map (tasks/s)",
        w2_map,
        "Python Pool.map, default chunks",
        py("w2_pool_map"),
        "≥ 6x",
    );
    rows.rate(
        "W2 submit (tasks/s)",
        w2_submit,
        "goal: 300k tasks/s",
        Some(300_000.0),
        "≥ 1.0x",
    );
    rows.rate("", w2_submit, "Python PPE submit", py("w2_ppe_submit"), "-");
    rows.rate(
        "",
        w2_submit,
        "tokio spawn_blocking (threads)",
        Some(w2_blocking),
        "-",
    );
    rows.0.push([
        String::new(),
        String::new(),
        "  same, median of per-run ratios".into(),
        String::new(),
        format!("{w2_ratio:.2}x"),
        "≥ 3x".into(),
    ]);
    rows.rate(
        "W3 speedup vs serial (x)",
        w3,
        "ideal on 2 workers: 2.0x",
        Some(1.9),
        "≥ 1.0x",
    );
    rows.rate("", w3, "Python PPE speedup", py("w3_speedup_ppe"), "-");
    rows.rate(
        "W4 Vec<u8> echo (GB/s)",
        w4_vec,
        "goal: 1.5 GB/s",
        Some(1.5),
        "≥ 1.0x",
    );
    rows.rate(
        "",
        w4_vec,
        "raw socketpair, processes",
        Some(w4_sock),
        "≥ 1.0x",
    );
    rows.rate(
        "",
        w4_vec,
        "  same, one message at a time",
        Some(w4_message),
        "-",
    );
    rows.rate("", w4_vec, "Python PPE bytes echo", py("w4_echo_ppe"), "-");
    rows.rate(
        "W4 SharedMemory (GB/s)",
        w4_shm,
        "goal: 5 GB/s",
        Some(5.0),
        "≥ 1.0x",
    );
    rows.rate(
        "W4 shm + copy in/out",
        w4_shm_copy,
        "goal: 5 GB/s",
        Some(5.0),
        "-",
    );
    rows.time(
        "W5 start 2 + result (ms)",
        w5,
        "goal: 1.0 ms",
        Some(1.0),
        "≥ 1.0x",
    );
    rows.time(
        "",
        w5,
        "floor: 2 execs, first runs main",
        Some(w5_floor),
        "-",
    );
    rows.time(
        "W5, 2 GiB parent heap (ms)",
        w5_heap,
        "goal: within 1.2x of W5",
        Some(w5 * 1.2),
        "≥ 1.0x",
    );
    rows.time(
        "W5, fork server (ms)",
        w5_fork,
        "goal: 1.0 ms",
        Some(1.0),
        "≥ 1.0x",
    );
    rows.time(
        "",
        w5_fork,
        "the process's first, starting the server",
        Some(w5_fork_first),
        "-",
    );
    rows.time(
        "W5 fork server, 2 GiB heap",
        w5_fork_heap,
        "goal: within 1.2x of W5 fork server",
        Some(w5_fork * 1.2),
        "≥ 1.0x",
    );
    rows.time("", w5, "Python PPE (fork)", py("w5_startup_ppe_fork"), "-");
    rows.time(
        "",
        w5,
        "Python PPE (spawn)",
        py("w5_startup_ppe_spawn"),
        "-",
    );
    rows.time(
        "Idle 2 workers RSS (MiB)",
        idle,
        "goal: 10 MiB",
        Some(10.0),
        "≥ 1.0x",
    );
    rows.time(
        "",
        idle,
        "Python PPE workers",
        py("mem_idle_workers_ppe"),
        "-",
    );
    rows.time(
        "Idle 1 s: CPU of parent + 2 workers (ms)",
        idle_cpu,
        "goal: 5 ms",
        Some(5.0),
        "≥ 1.0x",
    );
    rows.time(
        "map 10M peak RSS (MiB)",
        map_peak,
        "same process before the map",
        Some(base_peak),
        "bounded",
    );
    rows.print();

    // The plots, beside BENCHMARKS.md.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench");
    let _ = std::fs::create_dir_all(&dir);
    let mut lines = vec![plots::Latency::of("procpool pool.run", w1_pool_samples)];
    if let Some(v) = apart_samples {
        lines.push(plots::Latency::of("raw socketpair, 2 CPUs", v));
    }
    if let Some(v) = same_samples {
        lines.push(plots::Latency::of("raw socketpair, 1 CPU", v));
    }
    let python_at = ["w1_ppe_p50", "w1_ppe_p90", "w1_ppe_p99", "w1_ppe_p999"].map(&py);
    if python_at.iter().all(Option::is_some) {
        lines.push(plots::Latency {
            name: "Python ProcessPoolExecutor".into(),
            at: python_at.map(|v| v.unwrap_or(f64::NAN)),
        });
    }
    for l in &lines {
        let at: Vec<String> = l.at.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "W1 latency, {}: p50/p90/p99/p99.9 = {} us",
            l.name,
            at.join(" / ")
        );
    }
    let path = dir.join("w1_latency.svg");
    match plots::latency(&path, "W1: one trivial task, round trip", &lines) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    let mut map_lines = vec![("procpool map".to_owned(), map_by_workers.clone())];
    let python_map: Vec<(u32, f64)> = [1u32, 2, 4]
        .into_iter()
        .filter_map(|w| Some((w, py(&format!("map_pool_{w}"))?)))
        .collect();
    if !python_map.is_empty() {
        map_lines.push(("Python Pool.map".to_owned(), python_map));
    }
    for (name, pts) in &map_lines {
        let pts: Vec<String> = pts
            .iter()
            .map(|(w, r)| format!("{w}: {:.2} M/s", r / 1e6))
            .collect();
        println!(
            "map of {} trivial items, {name}: {}",
            s.tasks,
            pts.join(", ")
        );
    }
    let path = dir.join("map_throughput.svg");
    let title = format!("map of {} trivial items", s.tasks);
    match plots::throughput(&path, &title, &map_lines) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// Milliseconds from building a pool of 2 to its first result (shutdown not counted).
/// W2 `map`: `n` trivial items through `pool`; items per second.
async fn map_rate(pool: &ProcessPoolExecutor, n: u64) -> f64 {
    let t = Instant::now();
    let out = pool.map(trivial, 0..n).await.unwrap();
    assert_eq!(out.len() as u64, n);
    n as f64 / t.elapsed().as_secs_f64()
}

/// W2 `submit`: `s.runs` runs of `s.submits` trivial tasks through `pool`, each
/// followed by the same through `spawn_blocking`; the medians of both rates (tasks/s)
/// and of the per-run ratios.
fn submit_beside_threads(
    rt: &tokio::runtime::Runtime,
    pool: &ProcessPoolExecutor,
    s: &Sizes,
) -> (f64, f64, f64) {
    let (mut ours, mut threads, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.runs {
        let a = rt.block_on(windowed(s.submits, |i| {
            pool.try_submit(trivial, i).unwrap()
        }));
        let b = rt.block_on(windowed(s.submits, |i| {
            tokio::task::spawn_blocking(move || trivial(i))
        }));
        eprintln!(
            "W2 submit {a:.0} tasks/s, spawn_blocking {b:.0} tasks/s: {:.2}x",
            a / b
        );
        ours.push(a);
        threads.push(b);
        ratios.push(a / b);
    }
    (
        common::median(ours),
        common::median(threads),
        common::median(ratios),
    )
}

const SPAWN: StartMethod = StartMethod::Spawn;
const FORK: StartMethod = StartMethod::ForkServer;

async fn start_two_and_run(method: StartMethod) -> f64 {
    let t = Instant::now();
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .start_method(method)
        .build()
        .unwrap();
    pool.run(trivial, 1).await.unwrap();
    let took = t.elapsed();
    pool.shutdown().await;
    took.as_secs_f64() * 1e3
}

fn only_one(which: &str, rt: &tokio::runtime::Runtime, s: &Sizes) {
    match which {
        "W1" | "W1ct" => {
            // `W1ct`: from a current-thread runtime, where caller and driver share a
            // thread.
            let ct = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let on = |f: std::pin::Pin<Box<dyn std::future::Future<Output = f64> + '_>>| {
                if which == "W1" {
                    rt.block_on(f)
                } else {
                    ct.block_on(f)
                }
            };
            let pool = if which == "W1" {
                common::ready_pool(rt, 1)
            } else {
                ct.block_on(common::ready_pool_on(1))
            };
            let mut ratios = Vec::new();
            for _ in 0..s.runs.max(7) {
                let o = on(Box::pin(per_item_us(s.round_trips, || async {
                    pool.run(trivial, 7).await.unwrap();
                })));
                let f = raw_ping_pong(s.round_trips);
                println!("{which} procpool {o:.1} us, raw socketpair {f:.1} us");
                ratios.push(f / o);
            }
            println!(
                "W1 median of per-run ratios: {:.2}x",
                common::median(ratios)
            );
            for (apart, placed) in [(true, "2 CPUs"), (false, "1 CPU")] {
                if let Some(f) = raw_ping_pong_pinned(s.round_trips, apart) {
                    println!("raw socketpair pinned to {placed}: {f:.1} us");
                }
            }
            on(Box::pin(async {
                pool.shutdown().await;
                0.0
            }));
        }
        "W2" => {
            let pool = common::ready_pool(rt, 2);
            let (ours, threads, ratio) = submit_beside_threads(rt, &pool, s);
            let map = median_of(s.runs, || rt.block_on(map_rate(&pool, s.tasks)));
            println!(
                "W2 submit {ours:.0} tasks/s, spawn_blocking {threads:.0} tasks/s, median of per-run ratios {ratio:.2}x; map {map:.0} tasks/s",
            );
            rt.block_on(pool.shutdown());
        }
        "W1tail" => {
            // Where a 2-thread runtime's round trips go: each one timed, and whether
            // the caller's task came back on another thread.
            let pool = common::ready_pool(rt, 1);
            for _ in 0..s.runs.min(3) {
                let (lat, moved) =
                    rt.block_on(async { tokio::spawn(w1_tail(pool.clone(), 5000)).await.unwrap() });
                let mut sorted = lat.clone();
                sorted.sort_by(f64::total_cmp);
                let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
                let fast = lat.iter().filter(|&&us| us < 20.0).count();
                let mean = lat.iter().sum::<f64>() / lat.len() as f64;
                println!(
                    "W1 {} round trips: mean {mean:.1} us, p50/p80/p90/p99 = {:.1}/{:.1}/{:.1}/{:.1} us; \
                     {fast} under 20 us; the caller changed threads in {} ({} of them under 20 us)",
                    lat.len(),
                    at(0.5),
                    at(0.8),
                    at(0.9),
                    at(0.99),
                    moved.len(),
                    moved.iter().filter(|&&i| lat[i] < 20.0).count(),
                );
            }
            rt.block_on(pool.shutdown());
        }
        "map" => {
            let pool = common::ready_pool(rt, 2);
            for _ in 0..s.runs {
                let rate = rt.block_on(map_rate(&pool, s.tasks));
                println!("W2 map {rate:.0} tasks/s");
            }
            rt.block_on(pool.shutdown());
        }
        "W4" => {
            let pool = common::ready_pool(rt, 1);
            let data: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
            for _ in 0..s.runs {
                let rate = rt.block_on(async {
                    let mut v = data.clone();
                    let t = Instant::now();
                    for _ in 0..s.echoes {
                        v = pool.run(echo, v).await.unwrap();
                    }
                    gbps(2 * PAYLOAD * s.echoes, t.elapsed())
                });
                let stream = raw_bulk_echo(&data, s.echoes);
                let message = raw_message_echo(&data, s.echoes);
                println!(
                    "W4 echo {rate:.2} GB/s; raw socketpair streaming {stream:.2} GB/s ({:.2}x), \
                     one message at a time {message:.2} GB/s ({:.2}x)",
                    rate / stream,
                    rate / message
                );
            }
            rt.block_on(pool.shutdown());
        }
        "W5" => {
            // Alternating, so that both see the same machine; then the same with the
            // heap (allocated once, each method warmed up once: see `heavy_w5`).
            let (mut pool, mut floor, mut forked) = (Vec::new(), Vec::new(), Vec::new());
            let first = rt.block_on(start_two_and_run(FORK));
            for _ in 0..s.runs.max(7) {
                pool.push(rt.block_on(start_two_and_run(SPAWN)));
                floor.push(raw_start_two_ms());
                forked.push(rt.block_on(start_two_and_run(FORK)));
            }
            let (mut heavy, mut forked_heavy) = (Vec::new(), Vec::new());
            with_big_heap(|| {
                rt.block_on(start_two_and_run(SPAWN));
                rt.block_on(start_two_and_run(FORK));
                for _ in 0..s.runs.max(7) {
                    heavy.push(rt.block_on(start_two_and_run(SPAWN)));
                    forked_heavy.push(rt.block_on(start_two_and_run(FORK)));
                }
            });
            let show = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!("W5 runs, ms: {}", show(&pool));
            println!(
                "floor runs (2 execs, first runs main), ms: {}",
                show(&floor)
            );
            println!("W5 with 2 GiB of parent heap, ms: {}", show(&heavy));
            println!(
                "W5 {:.2} ms, floor {:.2} ms, with 2 GiB heap {:.2} ms (medians)",
                common::median(pool),
                common::median(floor),
                common::median(heavy)
            );
            println!("W5 with the fork server, first (starts it): {first:.2} ms");
            println!("W5 with the fork server, ms: {}", show(&forked));
            println!(
                "W5 with the fork server, 2 GiB of parent heap, ms: {}",
                show(&forked_heavy)
            );
            println!(
                "W5 fork server {:.2} ms, with 2 GiB heap {:.2} ms (medians)",
                common::median(forked),
                common::median(forked_heavy)
            );
        }
        "idle" => {
            for _ in 0..s.runs.min(3) {
                let ms = rt.block_on(idle_cpu_ms());
                println!("idle 1 s: {ms:.2} ms of CPU (parent + 2 workers)");
            }
        }
        other => eprintln!("--only takes W1, W1ct, W1tail, W2, map, W4, W5 or idle, not {other}"),
    }
}

/// `n` sequential round trips from a spawned task: each one's time (µs), and the
/// indices of those after which the task was on another thread than before.
async fn w1_tail(pool: ProcessPoolExecutor, n: u64) -> (Vec<f64>, Vec<usize>) {
    let (mut lat, mut moved) = (Vec::new(), Vec::new());
    for i in 0..n {
        let before = std::thread::current().id();
        let t = Instant::now();
        pool.run(trivial, i).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if std::thread::current().id() != before {
            moved.push(i as usize);
        }
    }
    (lat, moved)
}

/// Table rows: a procpool figure, a peer figure and "how many times better procpool
/// is" (peer over ours for times and sizes, ours over peer for rates).
#[derive(Default)]
struct Rows(Vec<[String; 6]>);

impl Rows {
    fn time(&mut self, what: &str, ours: f64, peer: &str, theirs: Option<f64>, goal: &str) {
        self.push(what, ours, peer, theirs, goal, |o, t| t / o);
    }

    fn rate(&mut self, what: &str, ours: f64, peer: &str, theirs: Option<f64>, goal: &str) {
        self.push(what, ours, peer, theirs, goal, |o, t| o / t);
    }

    fn push(
        &mut self,
        what: &str,
        ours: f64,
        peer: &str,
        theirs: Option<f64>,
        goal: &str,
        ratio: fn(f64, f64) -> f64,
    ) {
        self.0.push([
            what.to_owned(),
            fmt(ours),
            peer.to_owned(),
            theirs.map_or("-".into(), fmt),
            theirs.map_or("-".into(), |t| format!("{:.2}x", ratio(ours, t))),
            goal.to_owned(),
        ]);
    }

    fn print(&self) {
        let head = [
            "workload",
            "procpool",
            "peer",
            "peer value",
            "ratio",
            "goal",
        ];
        let mut widths = head.map(|h| h.chars().count());
        for row in &self.0 {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("| {} |", cells.join(" | "));
        };
        line(&head.map(String::from));
        line(&widths.map(|w| "-".repeat(w)));
        for row in &self.0 {
            line(row);
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn median_of(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    common::median((0..runs).map(|_| f()).collect())
}

fn gbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e9
}

async fn per_item_us<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let t = Instant::now();
    for _ in 0..n {
        f().await;
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// A child of this bench with `mode`, and our end of a socketpair that is its stdin.
fn spawn_child(mode: &str) -> (std::process::Child, UnixStream) {
    spawn_child_on(mode, None)
}

/// [`spawn_child`], the child pinned to `cpu` if given.
fn spawn_child_on(mode: &str, cpu: Option<usize>) -> (std::process::Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, mode)
        .env(PIN, cpu.map(|c| c.to_string()).unwrap_or_default())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    (child, ours)
}

/// W5 with the heap of [`with_big_heap`] in place: one start to warm up, as the
/// series without the heap has had (writing 2 GiB evicts every cache of the machine,
/// and a start right after it measured 0.76-1.09 ms where the warm ones took
/// 0.41-0.46), then the median of `runs`.
fn heavy_w5(rt: &tokio::runtime::Runtime, method: StartMethod, runs: usize) -> f64 {
    rt.block_on(start_two_and_run(method));
    median_of(runs, || rt.block_on(start_two_and_run(method)))
}

/// Runs `f` with 2 GiB of touched heap in this process (the case where a `fork`
/// would copy page tables for all of it; procpool's `posix_spawn` and its fork
/// server should not care).
fn with_big_heap<T>(f: impl FnOnce() -> T) -> T {
    let heap = vec![1u8; 2 << 30];
    let out = f();
    std::hint::black_box(&heap);
    out
}

/// The floor under W5: two processes of this binary started as the pool starts its
/// workers (`posix_spawn`, one after the other), until the first of them runs `main`
/// and says so on its socket; ms. No pool, no handshake, no task.
fn raw_start_two_ms() -> f64 {
    use rustix::event::{poll, PollFd, PollFlags};
    let t = Instant::now();
    let (mut a, sock_a) = spawn_child("hello");
    let (mut b, sock_b) = spawn_child("hello");
    let mut fds = [
        PollFd::new(&sock_a, PollFlags::IN),
        PollFd::new(&sock_b, PollFlags::IN),
    ];
    poll(&mut fds, None).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    a.wait().unwrap();
    b.wait().unwrap();
    ms
}

/// 8-byte ping-pong with a child process over a socketpair; microseconds per round.
fn raw_ping_pong(n: usize) -> f64 {
    let (mut child, mut sock) = spawn_child("ping");
    let mut buf = [7u8; 8];
    sock.write_all(&buf).unwrap();
    sock.read_exact(&mut buf).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        sock.write_all(&buf).unwrap();
        sock.read_exact(&mut buf).unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(sock);
    child.wait().unwrap();
    us
}

/// [`raw_ping_pong`] with both sides pinned: this thread to CPU 0, the child to CPU 1
/// (`apart`) or to CPU 0 too. A cross-CPU wake-up costs ~10× a same-CPU hand-off on
/// this VM, so an unpinned floor measures where the scheduler put the two sides.
/// `None` on a machine of one CPU.
fn raw_ping_pong_pinned(n: usize, apart: bool) -> Option<f64> {
    let samples = raw_ping_pong_samples(n, apart)?;
    Some(samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Each round of [`raw_ping_pong_pinned`], in µs.
fn raw_ping_pong_samples(n: usize, apart: bool) -> Option<Vec<f64>> {
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
    if std::thread::available_parallelism().map_or(1, |p| p.get()) < 2 {
        return None;
    }
    let previous = sched_getaffinity(None).ok()?;
    let mut cpu0 = CpuSet::new();
    cpu0.set(0);
    sched_setaffinity(None, &cpu0).ok()?;
    let (mut child, mut sock) = spawn_child_on("ping", Some(usize::from(apart)));
    let mut buf = [7u8; 8];
    sock.write_all(&buf).unwrap();
    sock.read_exact(&mut buf).unwrap();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        sock.write_all(&buf).unwrap();
        sock.read_exact(&mut buf).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(sock);
    child.wait().unwrap();
    sched_setaffinity(None, &previous).ok()?;
    Some(samples)
}

/// `data` sent to a child process and back `n` times (one copy each way, by the
/// kernel); GB/s counting both directions.
fn raw_bulk_echo(data: &[u8], n: usize) -> f64 {
    let (child, sock) = spawn_child("bulk");
    let mut back = vec![0u8; data.len()];
    let t = Instant::now();
    std::thread::scope(|scope| {
        let mut w = sock.try_clone().unwrap();
        scope.spawn(move || {
            for _ in 0..n {
                w.write_all(data).unwrap();
            }
        });
        let mut r = &sock;
        for _ in 0..n {
            r.read_exact(&mut back).unwrap();
        }
    });
    end_echo(child, sock, &back, data, n, t)
}

/// The rate of `n` echoes of `data` begun at `t`, once the last came `back` whole;
/// ends the child.
fn end_echo(
    mut child: std::process::Child,
    sock: UnixStream,
    back: &[u8],
    data: &[u8],
    n: usize,
    t: Instant,
) -> f64 {
    let rate = gbps(2 * data.len() * n, t.elapsed());
    assert_eq!(back, data);
    drop(sock);
    child.wait().unwrap();
    rate
}

/// The floor for an echo one message at a time, as a pool does it: the child reads a
/// whole message of `data.len()` bytes before it writes it back, and the next message
/// goes once the echo is read (GB/s both ways).
fn raw_message_echo(data: &[u8], n: usize) -> f64 {
    let (child, mut sock) = spawn_child("message");
    sock.write_all(&(data.len() as u64).to_le_bytes()).unwrap();
    let mut back = vec![0u8; data.len()];
    let t = Instant::now();
    for _ in 0..n {
        sock.write_all(data).unwrap();
        sock.read_exact(&mut back).unwrap();
    }
    end_echo(child, sock, &back, data, n, t)
}

/// Peak RSS of a fresh process before and after `map` over 10M items whose results are
/// consumed as they come (MiB).
fn map_peak_rss() -> (f64, f64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "map_rss")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text.split_whitespace().map(|x| x.parse::<f64>().unwrap());
    (v.next().unwrap() / 1024.0, v.next().unwrap() / 1024.0)
}

fn child(mode: &str) {
    use std::os::fd::AsFd;
    // stdin is our end of the socketpair.
    let mut sock = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
    if let Some(cpu) = std::env::var(PIN)
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
    {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).unwrap();
    }
    match mode {
        // The start floor: up and running `main`, one byte back.
        "hello" => sock.write_all(&[1]).unwrap(),
        "ping" => {
            let mut buf = [0u8; 8];
            while sock.read_exact(&mut buf).is_ok() && sock.write_all(&buf).is_ok() {}
        }
        "bulk" => {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n @ 1..) = sock.read(&mut buf) {
                if sock.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        "message" => {
            let mut len = [0u8; 8];
            sock.read_exact(&mut len).unwrap();
            let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
            while sock.read_exact(&mut buf).is_ok() && sock.write_all(&buf).is_ok() {}
        }
        "map_rss" => {
            let rt = common::runtime();
            let before = rss_kib(std::process::id(), "VmHWM");
            let sum = rt.block_on(async {
                let pool = common::ready_pool_on(2).await;
                let sum = pool
                    .map_ordered_stream(trivial, 0..10_000_000u64)
                    .fold(0u64, |acc, r| async move { acc.wrapping_add(r.unwrap()) })
                    .await;
                pool.shutdown().await;
                sum
            });
            std::hint::black_box(sum);
            let after = rss_kib(std::process::id(), "VmHWM");
            println!("{before} {after}");
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (ms) that this process and its children use during 1 s in which a pool
/// of 2 sits idle, right after 2,000 sequential tasks (so that every spin budget is
/// at its largest when the idleness starts).
async fn idle_cpu_ms() -> f64 {
    let pool = common::ready_pool_on(2).await;
    for i in 0..2_000 {
        pool.run(trivial, i).await.unwrap();
    }
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(children_of_self())
        .collect();
    let before: u64 = pids.iter().map(|&p| cpu_ns(p)).sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: u64 = pids.iter().map(|&p| cpu_ns(p)).sum();
    pool.shutdown().await;
    after.saturating_sub(before) as f64 / 1e6
}

/// CPU time of every thread of `pid` so far, in ns: the first field of each
/// `/proc/<pid>/task/<tid>/schedstat` (`/proc/<pid>/stat` counts in 10 ms ticks, too
/// coarse for a goal of 5 ms).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Whether `pid` is a procpool fork server (its marker variable ends in `:z`).
fn is_fork_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|&b| b == 0)
            .any(|var| var.starts_with(b"__PROCPOOL_WORKER_OF=") && var.ends_with(b":z"))
    })
}

fn children_of_self() -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}
