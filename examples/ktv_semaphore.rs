//! The seed's KTV: 13 singers, a room for 4, a `Semaphore(4)` at the door.
//!
//! `cargo run --release --example ktv_semaphore`
//!
//! Each singer counts who is inside with a shared atomic counter and records the
//! most ever inside: it never passes 4.

use std::time::Duration;

use procpool::{Process, RawValue, Semaphore};

fn sing((room, inside, most): (Semaphore, RawValue<i64>, RawValue<i64>)) {
    let permit = room.blocking_acquire().unwrap();
    if permit.reclaimed() {
        println!("  (a singer died inside; their place was given back)");
    }
    let now = inside.fetch_add(1) + 1;
    let mut seen = most.load_atomic();
    while now > seen {
        match most.compare_exchange(seen, now) {
            Ok(_) => break,
            Err(v) => seen = v,
        }
    }
    println!("  {} sings ({now} inside)", std::process::id());
    // The song: a little work, so that singers overlap.
    std::thread::sleep(Duration::from_millis(20));
    inside.fetch_sub(1);
    drop(permit);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let room = Semaphore::new(4)?;
    let inside = RawValue::new(0i64)?;
    let most = RawValue::new(0i64)?;
    let singers = (0..13)
        .map(|_| Process::spawn(sing, (room.clone(), inside.clone(), most.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    for mut s in singers {
        s.join().await?;
    }
    println!(
        "13 singers done; at most {} were inside at once; {} places free",
        most.load_atomic(),
        room.value()
    );
    Ok(())
}
