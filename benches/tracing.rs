//! What `tracing` costs the pool: W1 (sequential round trips) and W2 (many trivial
//! tasks through `try_submit`), with no subscriber, and with an fmt subscriber (writing
//! to a sink) that receives one event per task forwarded from the worker, inside the
//! task's span.
//!
//! Three configurations: no subscriber; a bare registry at `INFO` (spans and events
//! are made, forwarded and dispatched, nothing is formatted: what procpool itself
//! spends); and fmt. A global subscriber cannot be taken back, so each runs in a
//! child process of this bench (itself, started again with `--as MODE`); the parent
//! alternates them, 7 rounds, and prints the medians and the ratios to no subscriber.
//!
//! ```text
//! cargo bench --bench tracing            # 7 rounds, 1,000,000 tasks (W2)
//! cargo bench --bench tracing -- --quick # 3 rounds, 100,000 tasks
//! ```
//!
//! The cost of the feature itself, with no subscriber, is the difference between two
//! builds; see BENCHMARKS.md for the alternating runs of `--bench compare` with and
//! without `--no-default-features`.

mod common;

use std::process::Command;
use std::time::Instant;

/// The task: one event per call, as a service that logs each job would emit.
fn traced(x: u64) -> u64 {
    tracing::info!(x, "task ran");
    x.wrapping_mul(2654435761)
}

/// W1s, W2s and in-process event costs of one configuration, by round.
type Figures = (Vec<f64>, Vec<f64>, Vec<f64>);

fn w1(f: &Figures) -> &Vec<f64> {
    &f.0
}

fn w2(f: &Figures) -> &Vec<f64> {
    &f.1
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, tasks, round_trips) = if quick {
        (3, 100_000, 500)
    } else {
        (7, 1_000_000, 2000)
    };
    if let Some(i) = args.iter().position(|a| a == "--as") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or("none");
        child(mode, tasks, round_trips);
        return;
    }
    let me = std::env::current_exe().expect("this bench's path");
    let mut figures: std::collections::BTreeMap<&str, Figures> = Default::default();
    for round in 0..rounds {
        for mode in ["none", "registry", "fmt"] {
            let mut cmd = Command::new(&me);
            cmd.args(["--as", mode]);
            if quick {
                cmd.arg("--quick");
            }
            let out = cmd.output().expect("the bench starts itself");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let figure: Vec<f64> = text
                .split_whitespace()
                .map(|f| f.parse().expect("a figure"))
                .collect();
            let [w1, w2, local] = figure[..] else {
                panic!("three figures, not {text}");
            };
            eprintln!(
                "round {round} {mode:>4}: W1 {w1:.1} us, W2 {w2:.0} tasks/s, event here {local:.0} ns"
            );
            let entry = figures.entry(mode).or_default();
            entry.0.push(w1);
            entry.1.push(w2);
            entry.2.push(local);
        }
    }
    // Ratios within a round, then their median: the machine's drift between rounds
    // cancels out.
    let ratio = |mode: &str, pick: fn(&Figures) -> &Vec<f64>| {
        let per_round = pick(&figures[mode])
            .iter()
            .zip(pick(&figures["none"]))
            .map(|(m, n)| m / n)
            .collect();
        common::median(per_round)
    };
    let median =
        |mode: &str, pick: fn(&Figures) -> &Vec<f64>| common::median(pick(&figures[mode]).clone());
    println!(
        "tracing, medians of {rounds} alternating rounds (ratios: median of per-round ratios):"
    );
    println!("| | no subscriber | registry only (procpool's own cost) | fmt to a sink, 1 forwarded event per task |");
    println!("|---|---|---|---|");
    println!(
        "| W1 round trip (us) | {:.1} | {:.1} ({:.2}x) | {:.1} ({:.2}x) |",
        median("none", w1),
        median("registry", w1),
        ratio("registry", w1),
        median("fmt", w1),
        ratio("fmt", w1),
    );
    println!(
        "| W2 submit (tasks/s) | {:.0}k | {:.0}k ({:.2}x) | {:.0}k ({:.2}x) |",
        median("none", w2) / 1e3,
        median("registry", w2) / 1e3,
        ratio("registry", w2),
        median("fmt", w2) / 1e3,
        ratio("fmt", w2),
    );
    let local = common::median(figures["fmt"].2.clone());
    println!(
        "the fmt subscriber alone (the same event, in a span like a task's, in one process): {local:.0} ns per event"
    );
}

/// One configuration: prints `<W1 us> <W2 tasks/s> <ns per event emitted here>`.
fn child(mode: &str, tasks: u64, round_trips: usize) {
    match mode {
        "fmt" => tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .init(),
        // Spans and events made, forwarded and dispatched, but nothing formatted:
        // what procpool itself spends.
        "registry" => {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber =
                tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO);
            tracing::subscriber::set_global_default(subscriber).unwrap();
        }
        _ => {}
    }
    let rt = common::runtime();
    let pool = common::ready_pool(&rt, 2);
    let w1 = rt.block_on(async {
        for i in 0..100 {
            pool.run(traced, i).await.unwrap();
        }
        let t = Instant::now();
        for i in 0..round_trips as u64 {
            pool.run(traced, i).await.unwrap();
        }
        t.elapsed().as_secs_f64() * 1e6 / round_trips as f64
    });
    let w2 = rt.block_on(common::windowed(tasks, |i| {
        pool.try_submit(traced, i).unwrap()
    }));
    rt.block_on(pool.shutdown());
    // The subscriber's own cost: the same event emitted here, in a span like a task's.
    let n = 200_000u64;
    let span = tracing::info_span!(
        "task",
        task.id = 1u64,
        task.name = "traced",
        worker.pid = 1u32
    );
    let _in = span.enter();
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(traced(i));
    }
    let local_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("{w1} {w2} {local_ns}");
}
