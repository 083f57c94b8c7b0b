//! The seeds' pipe scenarios with procpool.
//!
//! `cargo run --release --example pipe`
//!
//! 1. Duplex: parent and child talk both ways (seed 000's ping-pong).
//! 2. Half duplex: `simplex()` gives a receiving and a sending end (seed 000).
//! 3. End of stream: `recv` fails with `Eof` once the other end is closed in every
//!    process — which is why unused ends must be dropped (seed 003).

use procpool::pipe::{self, RecvError};
use procpool::{Connection, Process};

fn talker(conn: Connection<String>) {
    for i in 0..3 {
        let msg = conn.blocking_recv().unwrap();
        println!("  child got: {msg}");
        conn.blocking_send(&format!("reply {i} from {}", std::process::id()))
            .unwrap();
    }
}

fn writer(tx: pipe::Sender<String>) {
    tx.blocking_send(&"Hello The_Third_Wave".to_owned())
        .unwrap();
    // `tx` is dropped when the function returns: the child's copy closes.
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("1. duplex ping-pong");
    let (parent_end, child_end) = procpool::pipe::<String>()?;
    let mut p = Process::spawn(talker, child_end)?;
    for i in 0..3 {
        parent_end.send(&format!("message {i}")).await?;
        println!("  parent got: {}", parent_end.recv().await?);
    }
    p.join().await?;

    println!("2. half duplex");
    let (rx, tx) = pipe::simplex::<String>()?;
    // `tx` moves into the child: the parent keeps no sending end.
    let mut p = Process::spawn(writer, tx)?;
    println!("  parent got: {}", rx.recv().await?);
    p.join().await?;

    println!("3. end of stream");
    match rx.recv().await {
        Err(RecvError::Eof) => println!("  Eof: the sending end is closed everywhere"),
        other => println!("  unexpected: {other:?}"),
    }
    Ok(())
}
