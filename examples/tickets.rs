//! The seed's ticket rush: 100 buyer processes, 5 tickets, one lock.
//!
//! `cargo run --release --example tickets`
//!
//! Every buyer first looks at how many tickets are left (no lock needed to look),
//! then buys under the lock, so exactly 5 succeed. Python's version keeps the count in
//! a JSON file; here it is a shared `RawValue`, and the `Lock` protects the
//! check-then-decrement.

use procpool::sync::LockError;
use procpool::{Lock, Process, RawValue};

fn buyer((lock, tickets): (Lock, RawValue<i64>)) -> bool {
    println!("  {} sees {} left", std::process::id(), tickets.load());
    let _held = match lock.blocking_lock() {
        Ok(g) => g,
        // A buyer died holding the lock: the count is a single word, still valid.
        Err(LockError::OwnerDied(g)) => g,
        Err(e) => panic!("{e}"),
    };
    let left = tickets.load();
    if left > 0 {
        tickets.store(left - 1);
        println!("  {} bought a ticket", std::process::id());
        true
    } else {
        false
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock = Lock::new()?;
    let tickets = RawValue::new(5i64)?;
    let buyers = (0..100)
        .map(|_| Process::spawn(buyer, (lock.clone(), tickets.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sold = 0;
    for mut b in buyers {
        if b.join().await? {
            sold += 1;
        }
    }
    println!("sold {sold} tickets to 100 buyers; {} left", tickets.load());
    Ok(())
}
