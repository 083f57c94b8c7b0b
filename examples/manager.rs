//! The seeds' manager scenarios.
//!
//! `cargo run --release --example manager`
//!
//! 1. Seed 000: a child changes a shared value (250 → 260), a string, a list element,
//!    appends to a list and sets a dict key; the parent sees all of it.
//! 2. Seed 002: a process pool's tasks update shared counters while a tokio task in the
//!    parent watches the progress — with `update`, a compare-and-set that retries on a
//!    conflict, so no increment is lost (Python's `value.value += 1` through a proxy loses them).

use std::time::Duration;

use procpool::manager::{DictProxy, ListProxy, Manager, ValueProxy};
use procpool::{Process, ProcessPoolExecutor};

fn child(
    (v, s, l, d): (
        ValueProxy<i32>,
        ValueProxy<String>,
        ListProxy<i32>,
        DictProxy<String, i32>,
    ),
) {
    v.blocking_set(&260).unwrap();
    s.blocking_set(&"hello world".to_owned()).unwrap();
    // `get` returns a copy: change it, then write it back with `set`.
    let first = l.blocking_get(0).unwrap().unwrap_or_default();
    l.blocking_set(0, &(first * 10)).unwrap();
    l.blocking_push(&4).unwrap();
    d.blocking_insert(&"set by the child".to_owned(), &1)
        .unwrap();
}

fn work(done: ValueProxy<u64>) -> u64 {
    // Some CPU work, then one more task counted.
    let n: u64 = (0..2_000_000u64).map(|i| i % 7).sum();
    done.blocking_update(|d| d + 1).unwrap();
    n
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::start().await?;

    println!("1. a child changes shared objects");
    let v = manager.value(&250i32).await?;
    let s = manager.value(&"hello".to_owned()).await?;
    let l = manager.list::<i32>().await?;
    for i in 1..=3 {
        l.push(&i).await?;
    }
    let d = manager.dict::<String, i32>().await?;
    let mut p = Process::spawn(child, (v.clone(), s.clone(), l.clone(), d.clone()))?;
    p.join().await?;
    println!("  value: {}", v.get().await?);
    println!("  string: {:?}", s.get().await?);
    println!("  list: {:?}", l.to_vec().await?);
    println!("  dict: {:?}", d.items().await?);

    println!("2. pool tasks update a counter while the parent watches");
    let done = manager.value(&0u64).await?;
    let total = 24u64;
    let pool = ProcessPoolExecutor::builder().workers(2).build()?;
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = u64::MAX;
            loop {
                let now = done.get().await.unwrap_or(total);
                if now != last {
                    println!("  progress: {now}/{total}");
                    last = now;
                }
                if now >= total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let results = pool
        .map(work, std::iter::repeat_n(done.clone(), total as usize))
        .await?;
    watcher.await?;
    println!(
        "  {} tasks done, counter = {}",
        results.len(),
        done.get().await?
    );
    pool.shutdown().await;
    manager.shutdown().await?;
    Ok(())
}
