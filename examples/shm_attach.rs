//! A second program that attaches to a named shared memory segment made by another
//! process (`tests/ipc/shm.rs` runs it): it prints the first `len` bytes it finds, then
//! writes its answer after them.
//!
//! ```text
//! cargo run --example shm_attach -- <name> <len> <answer>
//! ```

use procpool::SharedMemory;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: shm_attach <name> <len> <answer>";
    let name = args.next().ok_or(usage)?;
    let len: usize = args.next().ok_or(usage)?.parse()?;
    let answer = args.next().ok_or(usage)?;
    let mem = SharedMemory::open(&name)?;
    let mut found = vec![0u8; len];
    mem.read(0, &mut found);
    println!("found {}", String::from_utf8_lossy(&found));
    mem.write(len, answer.as_bytes());
    Ok(())
}
