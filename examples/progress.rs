//! A long `map` with a progress bar: 10,000 items through the pool, the bar fed by
//! the stream's own count of what is done and what is known.
//!
//! ```text
//! cargo run --release --example progress
//! ```

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use procpool::ProcessPoolExecutor;

/// About a millisecond of work per item.
fn digest(n: u64) -> u64 {
    (0..1_000_000u64).fold(n, |acc, x| acc.rotate_left(5) ^ x.wrapping_mul(0x9e37_79b9))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ProcessPoolExecutor::builder().build()?;
    let mut results = pool.map_unordered(digest, 0..10_000u64);

    let progress = results.progress();
    let bar = ProgressBar::new(progress.total.unwrap_or(progress.known));
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos:>5}/{len} items  {per_sec:>12}  eta {eta}",
    )?);
    let mut sum = 0u64;
    let mut failed = 0;
    while let Some(result) = results.next().await {
        match result {
            Ok(d) => sum = sum.wrapping_add(d),
            Err(e) => {
                failed += 1;
                bar.println(format!("an item failed: {e}"));
            }
        }
        let p = results.progress();
        // An input of unknown length reveals more as it goes.
        bar.set_length(p.total.unwrap_or(p.known));
        bar.set_position(p.done);
    }
    bar.finish();
    let p = results.progress();
    println!(
        "{} of {:?} items done in {:.2?}, {failed} failed, checksum {sum:016x}",
        p.done,
        p.total,
        bar.elapsed()
    );
    pool.shutdown().await;
    Ok(())
}
