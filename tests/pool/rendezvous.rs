//! Tasks that wait for each other never deadlock in one worker while another is idle,
//! with default settings (adaptive pipelining), even after quick tasks taught the pool
//! to send tasks ahead.

use std::time::Duration;

use procpool::{Barrier, ProcessPoolExecutor, Queue};

fn quick(x: u64) -> u64 {
    x + 1
}

fn meet(barrier: Barrier) -> usize {
    barrier.blocking_wait().unwrap()
}

fn produce(q: Queue<u64>) -> u64 {
    q.blocking_put(42).unwrap();
    0
}

fn consume(q: Queue<u64>) -> u64 {
    q.blocking_get().unwrap()
}

const WORKERS: usize = 2;

/// A guard against a hang only: a deadlock never ends.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_tasks_meet_at_a_barrier_of_n_after_a_warm_up_fifty_times() {
    for round in 0..50 {
        let pool = ProcessPoolExecutor::builder()
            .workers(WORKERS)
            .build()
            .unwrap();
        let warm: Vec<_> = (0..20)
            .map(|i| pool.try_submit(quick, i).unwrap())
            .collect();
        for r in futures::future::join_all(warm).await {
            r.unwrap();
        }
        let barrier = Barrier::new(WORKERS).unwrap();
        let meeting: Vec<_> = (0..WORKERS)
            .map(|_| pool.try_submit(meet, barrier.clone()).unwrap())
            .collect();
        let results = tokio::time::timeout(HANG, futures::future::join_all(meeting))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the tasks deadlocked"));
        let mut indices: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..WORKERS).collect::<Vec<_>>(), "round {round}");
        assert_eq!(pool.stats().cancelled, 0);
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_queued_before_its_producer_gets_the_item_twenty_times() {
    let pool = ProcessPoolExecutor::builder()
        .workers(WORKERS)
        .build()
        .unwrap();
    for round in 0..20 {
        let warm: Vec<_> = (0..20)
            .map(|i| pool.try_submit(quick, i).unwrap())
            .collect();
        for r in futures::future::join_all(warm).await {
            r.unwrap();
        }
        let q = Queue::unbounded().unwrap();
        let consumer = pool.try_submit(consume, q.clone()).unwrap();
        let producer = pool.try_submit(produce, q.clone()).unwrap();
        let (got, put) = tokio::time::timeout(HANG, futures::future::join(consumer, producer))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the consumer waited behind the producer"));
        assert_eq!(got.unwrap(), 42);
        assert_eq!(put.unwrap(), 0);
    }
    pool.shutdown().await;
}
