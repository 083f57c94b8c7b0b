//! Pipes through their shared-memory ring: one order across slots and the socket,
//! receivers that sleep and wake, several senders on one end, an end handed on
//! mid-stream, and a sender killed while it sends.

use std::time::Duration;

use procpool::connection::{blocking_wait, wait};
use procpool::pipe::{self, RecvError};
use procpool::{Connection, Process};

/// The largest `Vec<u8>` whose message fits a pipe's ring slot: a slot of 1,024 bytes
/// holds a 16-byte entry and a 1,008-byte frame, of which 32 are the header (a byte
/// vector is its own body).
const FILLS_A_SLOT: usize = 976;

/// A message of every kind: small, slot-sized, spilled, and carrying a pipe end.
type Item = (u64, Vec<u8>, Option<Connection<u8>>);

/// Echoes each item: its number, its bytes, and, through the pipe end it carries, the
/// number's low byte. Stops at end of stream.
fn echo_items(conn: Connection<(u64, Vec<u8>), Item>) -> u64 {
    let mut n = 0;
    loop {
        match conn.blocking_recv() {
            Ok((seq, bytes, end)) => {
                if let Some(end) = end {
                    end.blocking_send(&(seq as u8))
                        .expect("through the passed end");
                }
                conn.blocking_send(&(seq, bytes)).expect("echo");
                n += 1;
            }
            Err(RecvError::Eof) => return n,
            Err(e) => panic!("echo child: {e}"),
        }
    }
}

fn size_of(seq: u64) -> usize {
    match seq % 7 {
        0 => 0,
        1 => FILLS_A_SLOT,
        2 => FILLS_A_SLOT + 1,
        3 => 64,
        4 => 100_000,
        5 => FILLS_A_SLOT - 1,
        _ => (seq as usize * 37) % 3000,
    }
}

#[tokio::test]
async fn slot_sized_spilled_and_handle_messages_keep_one_order() {
    let (ours, theirs) = pipe::duplex::<Item, (u64, Vec<u8>)>().unwrap();
    let mut child = Process::spawn(echo_items, theirs).unwrap();
    const N: u64 = 700;
    const WINDOW: u64 = 8;
    let mut next_back = 0;
    for seq in 0..N {
        let bytes: Vec<u8> = (0..size_of(seq)).map(|i| (i as u64 + seq) as u8).collect();
        let end = if seq % 11 == 0 {
            let (mine, passed) = procpool::pipe::<u8>().unwrap();
            Some((mine, passed))
        } else {
            None
        };
        let (mine, passed) = match end {
            Some((m, p)) => (Some(m), Some(p)),
            None => (None, None),
        };
        ours.send(&(seq, bytes, passed)).await.unwrap();
        if let Some(mine) = mine {
            assert_eq!(mine.recv().await.unwrap(), seq as u8);
        }
        if seq + 1 - next_back == WINDOW || seq + 1 == N {
            while next_back <= seq {
                let (got, bytes) = ours.recv().await.unwrap();
                assert_eq!(got, next_back, "replies in order");
                assert_eq!(bytes.len(), size_of(got));
                assert!(bytes
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i as u64 + got) as u8));
                next_back += 1;
            }
        }
    }
    drop(ours);
    assert_eq!(child.join().await.unwrap(), N);
}

fn send_then_close((tx, n): (pipe::Sender<u64>, u64)) {
    for i in 0..n {
        tx.blocking_send(&i).unwrap();
    }
}

#[tokio::test]
async fn messages_left_in_the_ring_come_before_the_end() {
    let (rx, tx) = pipe::simplex::<u64>().unwrap();
    // Fewer than a lane's slots: all of them can sit in the ring when the child exits.
    let mut child = Process::spawn(send_then_close, (tx, 50)).unwrap();
    child.join().await.unwrap();
    for i in 0..50 {
        assert_eq!(rx.recv().await.unwrap(), i);
    }
    assert!(matches!(rx.recv().await, Err(RecvError::Eof)));
    // More than a lane holds: some go on the socket, all in order, then the end.
    let (rx, tx) = pipe::simplex::<u64>().unwrap();
    let mut child = Process::spawn(send_then_close, (tx, 1000)).unwrap();
    for i in 0..1000 {
        assert_eq!(rx.recv().await.unwrap(), i);
    }
    assert!(matches!(rx.recv().await, Err(RecvError::Eof)));
    child.join().await.unwrap();
}

/// Answers each number after a pause of its own length in busy work, so that the
/// parent's receive sometimes finds the answer while it polls and sometimes after it
/// fell asleep.
fn slow_echo(conn: Connection<u64>) {
    while let Ok(n) = conn.blocking_recv() {
        let mut x = n;
        for _ in 0..(n % 17) * (n % 17) * 2000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        conn.blocking_send(&n).unwrap();
    }
}

#[tokio::test]
async fn receivers_that_poll_and_receivers_that_sleep_both_get_every_answer() {
    let (ours, theirs) = procpool::pipe::<u64>().unwrap();
    let mut child = Process::spawn(slow_echo, theirs).unwrap();
    for n in 0..1500u64 {
        ours.send(&n).await.unwrap();
        assert_eq!(ours.recv().await.unwrap(), n);
    }
    // The blocking forms, off the runtime.
    let ours = tokio::task::spawn_blocking(move || {
        for n in 0..1500u64 {
            ours.blocking_send(&n).unwrap();
            assert_eq!(ours.blocking_recv().unwrap(), n);
        }
        ours
    })
    .await
    .unwrap();
    drop(ours);
    child.join().await.unwrap();
}

/// Sends `n` numbered messages on the end that comes through `ctl`.
fn numbered_sender((ctl, who, n): (pipe::Receiver<pipe::Sender<(u8, u64)>>, u8, u64)) {
    let tx = ctl.blocking_recv().unwrap();
    for i in 0..n {
        tx.blocking_send(&(who, i)).unwrap();
    }
}

#[tokio::test]
async fn two_processes_sending_on_one_end_lose_and_repeat_nothing() {
    let (rx, tx) = pipe::simplex::<(u8, u64)>().unwrap();
    const N: u64 = 20_000;
    let mut children = Vec::new();
    for who in [1, 2] {
        // A copy of the same end for each child, through a pipe (sending borrows).
        let (ctl_rx, ctl_tx) = pipe::simplex().unwrap();
        children.push(Process::spawn(numbered_sender, (ctl_rx, who, N)).unwrap());
        ctl_tx.send(&tx).await.unwrap();
    }
    drop(tx);
    let mut next = [0u64; 3];
    for _ in 0..2 * N {
        let (who, i) = rx.recv().await.unwrap();
        assert_eq!(i, next[who as usize], "each sender's messages in its order");
        next[who as usize] += 1;
    }
    assert!(matches!(rx.recv().await, Err(RecvError::Eof)));
    for mut c in children {
        c.join().await.unwrap();
    }
}

/// Receives `(number, bytes)` messages until the end of stream; returns the numbers.
fn receive_the_rest(rx: pipe::Receiver<(u64, Vec<u8>)>) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match rx.blocking_recv() {
            Ok((n, bytes)) => {
                assert_eq!(bytes.len(), if n % 2 == 0 { 10 } else { 2000 });
                got.push(n);
            }
            Err(RecvError::Eof) => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn an_end_handed_to_another_process_mid_stream_leaves_nothing_behind() {
    let (rx, tx) = pipe::simplex::<(u64, Vec<u8>)>().unwrap();
    // Small messages (ring) and 2,000-byte ones (socket), all sent before any is
    // received (few enough for the socket's buffer).
    for n in 0..40u64 {
        let len = if n % 2 == 0 { 10 } else { 2000 };
        tx.send(&(n, vec![n as u8; len])).await.unwrap();
    }
    for n in 0..15 {
        assert_eq!(rx.recv().await.unwrap().0, n);
    }
    // The receiving end moves to a child (this process's copy goes with the call).
    let mut child = Process::spawn(receive_the_rest, rx).unwrap();
    drop(tx);
    assert_eq!(child.join().await.unwrap(), (15..40).collect::<Vec<_>>());
}

fn endless_sender(tx: pipe::Sender<u64>) {
    let mut i = 0u64;
    loop {
        if tx.blocking_send(&i).is_err() {
            return;
        }
        i += 1;
    }
}

#[tokio::test]
async fn a_sender_killed_while_sending_leaves_a_whole_prefix_then_the_end() {
    for round in 0..10u64 {
        let (rx, tx) = pipe::simplex::<u64>().unwrap();
        let child = Process::spawn(endless_sender, tx).unwrap();
        // Kill it at a different point each round, mid-stream.
        for i in 0..(round * 997) % 5000 {
            assert_eq!(rx.recv().await.unwrap(), i);
        }
        child.kill().unwrap();
        let mut next = (round * 997) % 5000;
        loop {
            match rx.recv().await {
                Ok(i) => {
                    assert_eq!(i, next, "no gap, no repeat");
                    next += 1;
                }
                Err(RecvError::Eof) => break,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }
}

#[tokio::test]
async fn wait_and_poll_see_a_message_in_the_ring() {
    let (a, b) = procpool::pipe::<u32>().unwrap();
    let (c, _d) = procpool::pipe::<u32>().unwrap();
    // Nobody is asleep on `a`: the message goes into a slot, and the socket stays
    // silent.
    b.send(&5).await.unwrap();
    assert!(a.poll(Duration::ZERO).await.unwrap());
    assert_eq!(wait(&[&c, &a], Some(Duration::ZERO)).await.unwrap(), [1]);
    assert_eq!(a.recv().await.unwrap(), 5);
    assert!(!a.poll(Duration::ZERO).await.unwrap());
    // A waiter (asleep by the time the message comes, or not yet) is woken by a
    // message that could have gone in a slot.
    let (ready, ()) = tokio::join!(async { wait(&[&c, &a], None).await.unwrap() }, async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        b.send(&6).await.unwrap();
    });
    assert_eq!(ready, [1]);
    assert_eq!(a.recv().await.unwrap(), 6);
    // And the blocking form.
    let (e, f) = procpool::pipe::<u32>().unwrap();
    let waiter = std::thread::spawn(move || {
        let ready = blocking_wait(&[&e], None).unwrap();
        (ready, e.blocking_recv().unwrap())
    });
    f.send(&7).await.unwrap();
    assert_eq!(waiter.join().unwrap(), (vec![0], 7));
}

/// Sends `n` numbers, then receives `n`; returns their sum.
fn send_all_then_receive((conn, n): (Connection<u64>, u64)) -> u64 {
    for i in 0..n {
        conn.blocking_send(&i).unwrap();
    }
    (0..n).map(|_| conn.blocking_recv().unwrap()).sum()
}

#[tokio::test]
async fn both_ends_sending_more_than_a_ring_holds_before_receiving_do_not_wedge() {
    // 200 messages each way, over three times a lane's 64 slots: a full ring
    // overflows to the socket, whose buffer holds the rest, as a pipe without a ring
    // did. (The socket's buffer counts each small message at about a kilobyte of
    // overhead, so a few hundred is what it holds.)
    const N: u64 = 200;
    let (ours, theirs) = procpool::pipe::<u64>().unwrap();
    let mut child = Process::spawn(send_all_then_receive, (theirs, N)).unwrap();
    for i in 0..N {
        ours.send(&(i * 2)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..N {
        got.push(ours.recv().await.unwrap());
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "in order");
    assert_eq!(child.join().await.unwrap(), N * (N - 1));
}
