//! 64-byte items through `Queue` and `pipe`, process to process, beside Python's
//! `multiprocessing.Queue` and `Pipe` doing the same work in the same run.
//!
//! `cargo bench --bench channels` prints one table: procpool's figure, Python's, and
//! the ratio (how many times better procpool is: items/s over items/s, or Python's
//! microseconds over ours). Python runs only when `python3` is on the PATH.
//!
//! Workloads (each measured `RUNS` times, median reported):
//! - throughput: a child puts/sends `ITEMS` items; the parent gets/receives them all
//!   with the async API; items per second from the child's start to the last item.
//! - round trip: the parent puts/sends one item, a child echoes it back on a second
//!   queue (the other end of the pipe); mean time per round trip over `TRIPS`.
//!   `pipe_round_trip_blocking` is the same with the parent on a plain thread using
//!   the blocking API, as Python's parent is.
//!
//! Set `PROCPOOL_BENCH_QUICK=1` for a short smoke run (what CI could afford), and
//! `PROCPOOL_BENCH_CURRENT_THREAD=1` to drive the parent from a current-thread runtime
//! instead of the default two-worker one.

use std::time::Instant;

use procpool::{Connection, Process, Queue};

mod common;

const RUNS: usize = 5;

fn sizes() -> (usize, usize) {
    if std::env::var_os("PROCPOOL_BENCH_QUICK").is_some() {
        (10_000, 500)
    } else {
        (200_000, 5_000)
    }
}

fn item() -> Vec<u8> {
    (0..64).collect()
}

fn queue_producer((q, n): (Queue<Vec<u8>>, usize)) {
    let it = item();
    for _ in 0..n {
        q.blocking_put(it.clone()).unwrap();
    }
}

fn queue_echo((inq, outq, n): (Queue<Vec<u8>>, Queue<Vec<u8>>, usize)) {
    for _ in 0..n {
        outq.blocking_put(inq.blocking_get().unwrap()).unwrap();
    }
}

fn pipe_producer((tx, n): (procpool::pipe::Sender<Vec<u8>>, usize)) {
    let it = item();
    for _ in 0..n {
        tx.blocking_send(&it).unwrap();
    }
}

fn pipe_echo((conn, n): (Connection<Vec<u8>>, usize)) {
    for _ in 0..n {
        let v = conn.blocking_recv().unwrap();
        conn.blocking_send(&v).unwrap();
    }
}

async fn queue_throughput(items: usize) -> f64 {
    let q = Queue::unbounded().unwrap();
    let t0 = Instant::now();
    let mut p = Process::spawn(queue_producer, (q.clone(), items)).unwrap();
    for _ in 0..items {
        q.get().await.unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().await.unwrap();
    items as f64 / dt
}

async fn queue_round_trip(trips: usize) -> f64 {
    let (a, b) = (Queue::unbounded().unwrap(), Queue::unbounded().unwrap());
    let mut p = Process::spawn(queue_echo, (a.clone(), b.clone(), trips)).unwrap();
    a.put(item()).await.unwrap();
    b.get().await.unwrap();
    let t0 = Instant::now();
    for _ in 0..trips - 1 {
        a.put(item()).await.unwrap();
        b.get().await.unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().await.unwrap();
    dt / (trips - 1) as f64 * 1e6
}

async fn pipe_throughput(items: usize) -> f64 {
    let (rx, tx) = procpool::pipe::simplex().unwrap();
    let t0 = Instant::now();
    let mut p = Process::spawn(pipe_producer, (tx, items)).unwrap();
    for _ in 0..items {
        rx.recv().await.unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().await.unwrap();
    items as f64 / dt
}

async fn pipe_round_trip(trips: usize) -> f64 {
    let (x, y) = procpool::pipe::<Vec<u8>>().unwrap();
    let mut p = Process::spawn(pipe_echo, (y, trips)).unwrap();
    x.send(&item()).await.unwrap();
    x.recv().await.unwrap();
    let t0 = Instant::now();
    for _ in 0..trips - 1 {
        x.send(&item()).await.unwrap();
        x.recv().await.unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().await.unwrap();
    dt / (trips - 1) as f64 * 1e6
}

/// The same round trip with the parent on a plain thread using the blocking API, as
/// Python's parent is: separates the kernel's cost from tokio's wake-up path.
async fn pipe_round_trip_blocking(trips: usize) -> f64 {
    let (x, y) = procpool::pipe::<Vec<u8>>().unwrap();
    let mut p = Process::spawn(pipe_echo, (y, trips)).unwrap();
    let dt = tokio::task::spawn_blocking(move || {
        x.blocking_send(&item()).unwrap();
        x.blocking_recv().unwrap();
        let t0 = Instant::now();
        for _ in 0..trips - 1 {
            x.blocking_send(&item()).unwrap();
            x.blocking_recv().unwrap();
        }
        t0.elapsed().as_secs_f64()
    })
    .await
    .unwrap();
    p.join().await.unwrap();
    dt / (trips - 1) as f64 * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let (items, trips) = sizes();
    let rt = if std::env::var_os("PROCPOOL_BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        common::runtime()
    };
    let mut ours: Vec<(&str, f64, &str)> = Vec::new();
    rt.block_on(async {
        let mut qt = Vec::new();
        let mut qr = Vec::new();
        let mut pt = Vec::new();
        let mut pr = Vec::new();
        let mut prb = Vec::new();
        for _ in 0..RUNS {
            qt.push(queue_throughput(items).await);
            qr.push(queue_round_trip(trips).await);
            pt.push(pipe_throughput(items).await);
            pr.push(pipe_round_trip(trips).await);
            prb.push(pipe_round_trip_blocking(trips).await);
        }
        ours.push(("queue_throughput", common::median(qt), "items/s"));
        ours.push(("queue_round_trip", common::median(qr), "us"));
        ours.push(("pipe_throughput", common::median(pt), "items/s"));
        ours.push(("pipe_round_trip", common::median(pr), "us"));
        ours.push(("pipe_round_trip_blocking", common::median(prb), "us"));
    });
    let py = common::python("channels.py", &[items.to_string(), trips.to_string()], RUNS);
    let title = format!(
        "64-byte items, {items} per throughput run, {trips} round trips, median of {RUNS} runs"
    );
    common::print_table(&title, &ours, py.as_deref());
}
