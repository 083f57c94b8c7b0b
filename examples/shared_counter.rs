//! A counter shared by 4 processes, each adding 10,000: with `Value::update` (under
//! the value's lock) the total is exact; with plain load-then-store it is not.
//!
//! `cargo run --release --example shared_counter`

use procpool::{Array, Process, Value};

fn add_locked(v: Value<i64>) {
    for _ in 0..10_000 {
        v.update(|x| *x += 1);
    }
}

fn add_racy(v: Value<i64>) {
    for _ in 0..10_000 {
        // Two locked steps are not one: increments from other processes in between
        // are lost (Python's `v.value += 1` has the same problem).
        let x = v.load();
        v.store(x + 1);
    }
}

fn fill((a, i): (Array<u32>, usize)) {
    a.set(i, (i as u32 + 1) * 100);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for locked in [true, false] {
        let v = Value::new(0i64)?;
        let mut ps = Vec::new();
        for _ in 0..4 {
            ps.push(if locked {
                Process::spawn(add_locked, v.clone())?
            } else {
                Process::spawn(add_racy, v.clone())?
            });
        }
        for p in &mut ps {
            p.join().await?;
        }
        let name = if locked { "update" } else { "load+store" };
        println!("{name:>10}: 4 x 10,000 increments -> {}", v.load());
    }

    let a = Array::zeroed(4)?;
    let mut ps = Vec::new();
    for i in 0..4 {
        ps.push(Process::spawn(fill, (a.clone(), i))?);
    }
    for p in &mut ps {
        p.join().await?;
    }
    println!("array written by 4 children: {:?}", a.to_vec());
    Ok(())
}
