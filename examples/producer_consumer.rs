//! The seeds' producer/consumer scenarios with procpool's queues.
//!
//! `cargo run --release --example producer_consumer`
//!
//! 1. Five producer and five consumer processes on a `Queue` of 3 (seed 000).
//! 2. A producer that closes the queue when done; the consumer drains it (seed 003's
//!    "closing signal", without a `None` sentinel).
//! 3. A `JoinableQueue` with three producers and two daemon consumers: the producers
//!    wait in `join` until every item has been processed (seed 003).

use std::time::{SystemTime, UNIX_EPOCH};

use procpool::{JoinableQueue, Process, Queue};

fn put_data(q: Queue<String>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let data = format!("{} {:.6}", std::process::id(), now.as_secs_f64());
    println!("  put: {data}");
    q.blocking_put(data).unwrap();
}

fn get_data(q: Queue<String>) {
    let data = q.blocking_get().unwrap();
    println!("  got: {data}");
}

fn cook(q: Queue<String>) {
    for i in 0..5 {
        q.blocking_put(format!("bun {i}")).unwrap();
    }
    // Everyone waiting on the queue learns that nothing more will come.
    q.close();
}

fn eater(args: (JoinableQueue<String>, String)) {
    let (q, name) = args;
    loop {
        let item = q.blocking_get().unwrap();
        println!("  {name} ({}) eats {item}", std::process::id());
        q.task_done().unwrap();
    }
}

fn producer(args: (JoinableQueue<String>, String)) {
    let (q, what) = args;
    for i in 0..3 {
        q.blocking_put(format!("{what} {i}")).unwrap();
    }
    // Wait until every item in the queue has been processed.
    q.blocking_join().unwrap();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("1. five producers, five consumers, Queue(3)");
    let q = Queue::bounded(3)?;
    let producers = (0..5)
        .map(|_| Process::spawn(put_data, q.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let consumers = (0..5)
        .map(|_| Process::spawn(get_data, q.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    for mut p in producers.into_iter().chain(consumers) {
        p.join().await?;
    }
    println!("  queue empty again: {}", q.is_empty());

    println!("2. a producer that closes the queue");
    let q = Queue::unbounded()?;
    let mut p = Process::spawn(cook, q.clone())?;
    let mut stream = std::pin::pin!(q.stream());
    use futures::StreamExt;
    while let Some(item) = stream.next().await {
        println!("  parent eats {}", item?);
    }
    p.join().await?;
    println!("  closed and drained");

    println!("3. JoinableQueue: 3 producers, 2 daemon consumers");
    let q = JoinableQueue::unbounded()?;
    let _consumers = ["c1", "c2"]
        .into_iter()
        .map(|n| {
            Process::builder()
                .daemon(true)
                .spawn(eater, (q.clone(), n.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let producers = ["bun", "bone", "slop"]
        .into_iter()
        .map(|w| Process::spawn(producer, (q.clone(), w.to_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    for mut p in producers {
        p.join().await?;
    }
    println!(
        "  main: all producers done, {} items unfinished; the daemon consumers end with us",
        q.unfinished()
    );
    Ok(())
}
