//! Pipes: the seeds' scenarios (ping-pong, half duplex, EOF), bytes, limits, and ends
//! passed between processes.

use std::time::Duration;

use procpool::pipe::{self, RecvError, SendError};
use procpool::{Connection, Process, ProcessPoolExecutor};

/// The seed's ping-pong: the child answers each number with its double until 0.
fn doubler(conn: Connection<u64>) -> u64 {
    let mut answered = 0;
    loop {
        let n = conn.blocking_recv().expect("a number");
        if n == 0 {
            return answered;
        }
        conn.blocking_send(&(n * 2)).expect("send back");
        answered += 1;
    }
}

#[tokio::test]
async fn ping_pong_both_directions_with_a_child() {
    let (ours, theirs) = procpool::pipe::<u64>().unwrap();
    let mut child = Process::spawn(doubler, theirs).unwrap();
    for n in 1..=100u64 {
        ours.send(&n).await.unwrap();
        assert_eq!(ours.recv().await.unwrap(), 2 * n);
    }
    ours.send(&0).await.unwrap();
    assert_eq!(child.join().await.unwrap(), 100);
}

/// Answers each number with its double, except that it holds back the answer to 1000
/// until the parent sends 1001 (and then answers both, in order).
fn doubler_holding_one_back(conn: Connection<u64>) {
    loop {
        match conn.blocking_recv().expect("a number") {
            0 => return,
            1000 => {
                assert_eq!(conn.blocking_recv().expect("the release"), 1001);
                conn.blocking_send(&2000).expect("send back");
                conn.blocking_send(&2002).expect("send back");
            }
            n => conn.blocking_send(&(n * 2)).expect("send back"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_cancelled_while_it_polls_loses_and_cuts_nothing() {
    let (ours, theirs) = procpool::pipe::<u64>().unwrap();
    let mut child = Process::spawn(doubler_holding_one_back, theirs).unwrap();
    // Quick answers: receives poll before they sleep.
    for n in 1..=200u64 {
        ours.send(&n).await.unwrap();
        assert_eq!(ours.recv().await.unwrap(), 2 * n);
    }
    // No answer comes to this one until 1001 is sent: cancel receives in the middle of
    // their polling, again and again.
    ours.send(&1000).await.unwrap();
    for _ in 0..50 {
        let cut = tokio::time::timeout(Duration::from_micros(20), ours.recv()).await;
        assert!(cut.is_err(), "nothing can have come: {cut:?}");
    }
    ours.send(&1001).await.unwrap();
    assert_eq!(ours.recv().await.unwrap(), 2000);
    assert_eq!(ours.recv().await.unwrap(), 2002);
    for n in 1..=20u64 {
        ours.send(&n).await.unwrap();
        assert_eq!(ours.recv().await.unwrap(), 2 * n);
    }
    ours.send(&0).await.unwrap();
    child.join().await.unwrap();
}

/// Child side of the half-duplex scenario: sends three lines, then its end closes.
fn writer(tx: pipe::Sender<String>) {
    for word in ["one", "two", "three"] {
        tx.blocking_send(&word.to_owned()).unwrap();
    }
}

#[tokio::test]
async fn half_duplex_pipe_then_eof_when_the_writer_is_gone_everywhere() {
    let (rx, tx) = pipe::simplex::<String>().unwrap();
    let mut child = Process::spawn(writer, tx).unwrap();
    // `tx` was moved into `spawn`: this process holds no copy of the sending end, so
    // once the child exits, the receiver sees end of stream after the data.
    child.join().await.unwrap();
    let mut got = Vec::new();
    loop {
        match rx.recv().await {
            Ok(s) => got.push(s),
            Err(RecvError::Eof) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(got, ["one", "two", "three"]);
}

fn hold_until_told(conn: Connection<u32>) -> u32 {
    // Waits for one message, then returns (dropping its end).
    conn.blocking_recv().unwrap()
}

#[tokio::test]
async fn eof_only_after_the_peer_end_is_closed_in_every_process() {
    let (ours, theirs) = procpool::pipe::<u32>().unwrap();
    let (ctl, ctl_child) = procpool::pipe::<u32>().unwrap();
    // The child holds a copy of `theirs` (as part of its argument's pipe) ...
    let mut child = Process::spawn(
        |(keep, ctl): (Connection<u32>, Connection<u32>)| {
            let n = hold_until_told(ctl);
            drop(keep);
            n
        },
        (theirs, ctl_child),
    )
    .unwrap();
    // ... so our end is not at EOF while it lives, even though our copy was moved.
    assert!(matches!(
        ours.recv_timeout(Duration::from_millis(50)).await,
        Err(RecvError::Timeout)
    ));
    ctl.send(&7).await.unwrap();
    assert_eq!(child.join().await.unwrap(), 7);
    assert!(matches!(ours.recv().await, Err(RecvError::Eof)));
    // And sending into it now is a typed error, not SIGPIPE.
    assert!(matches!(ours.send(&1).await, Err(SendError::Closed)));
}

#[tokio::test]
async fn blocking_forms_work_off_the_runtime() {
    let (a, b) = procpool::pipe::<Vec<u32>>().unwrap();
    let t = tokio::task::spawn_blocking(move || {
        let v = b.blocking_recv().unwrap();
        b.blocking_send(&v.iter().map(|x| x + 1).collect()).unwrap();
        assert!(matches!(
            b.blocking_recv_timeout(Duration::from_millis(10)),
            Err(RecvError::Timeout)
        ));
        b
    });
    a.send(&vec![1, 2, 3]).await.unwrap();
    assert_eq!(a.recv().await.unwrap(), [2, 3, 4]);
    let b = t.await.unwrap();
    let b = tokio::task::spawn_blocking(move || {
        assert!(!b.blocking_poll(Some(Duration::ZERO)).unwrap());
        b
    })
    .await
    .unwrap();
    a.send(&vec![]).await.unwrap();
    let b = tokio::task::spawn_blocking(move || {
        assert!(b.blocking_poll(None).unwrap());
        b
    })
    .await
    .unwrap();
    assert_eq!(b.try_recv().unwrap(), Vec::<u32>::new());
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
}

#[tokio::test]
async fn a_blocking_form_in_an_async_context_panics_naming_the_async_form() {
    let (_a, b) = procpool::pipe::<u32>().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.blocking_recv_timeout(Duration::ZERO)
    }));
    let payload = caught.expect_err("blocking_recv_timeout ran inside a tokio task");
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(message.contains("`blocking_recv_timeout`"), "{message}");
    assert!(message.contains("`recv_timeout(..).await`"), "{message}");
}

#[tokio::test]
async fn bytes_buffer_too_short_and_max_length() {
    let (a, b) = procpool::pipe::<()>().unwrap();
    a.send_bytes(b"hello world").await.unwrap();
    let mut small = [0u8; 4];
    match b.recv_bytes_into(&mut small).await {
        Err(RecvError::BufferTooShort { needed, message }) => {
            assert_eq!(needed, 11);
            assert_eq!(message, b"hello world");
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    a.send_bytes(b"fits").await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(b.recv_bytes_into(&mut buf).await.unwrap(), 4);
    assert_eq!(&buf[..4], b"fits");
    a.send_bytes(b"short").await.unwrap();
    assert_eq!(b.recv_bytes_max(5).await.unwrap(), b"short");
    a.send_bytes(b"too long").await.unwrap();
    assert!(matches!(
        b.recv_bytes_max(5).await,
        Err(RecvError::TooLong { len: 8, max: 5 })
    ));
    // As in Python, the connection is closed after that.
    a.send_bytes(b"more").await.unwrap();
    assert!(matches!(b.recv_bytes().await, Err(RecvError::Closed)));
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_an_error_and_the_pipe_goes_on() {
    let (a, b) = procpool::pipe::<String>().unwrap();
    // A string of 5 bytes announced, 1 present.
    a.send_bytes(&[5, b'a']).await.unwrap();
    assert!(matches!(b.recv().await, Err(RecvError::Decode(_))));
    a.send(&"ok".to_owned()).await.unwrap();
    assert_eq!(b.recv().await.unwrap(), "ok");
}

#[tokio::test]
async fn duplex_carries_a_different_type_each_way() {
    let (client, server) = procpool::duplex::<String, usize>().unwrap();
    client.send(&"four".to_owned()).await.unwrap();
    let q = server.recv().await.unwrap();
    server.send(&q.len()).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), 4);
}

fn echo_big(v: Vec<u8>) -> (usize, u8) {
    (v.len(), v.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

fn big_sender(tx: pipe::Sender<Vec<u8>>) {
    let v: Vec<u8> = (0..64 << 20).map(|i| (i % 251) as u8).collect();
    tx.blocking_send(&v).unwrap();
}

#[tokio::test]
async fn a_64_mib_message_arrives_whole() {
    let (rx, tx) = pipe::simplex::<Vec<u8>>().unwrap();
    let mut child = Process::spawn(big_sender, tx).unwrap();
    let v = rx.recv().await.unwrap();
    child.join().await.unwrap();
    let expected: Vec<u8> = (0..64 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_big(v), echo_big(expected));
}

/// A pool task receives a pipe end as its argument and answers through it.
fn answer_on(conn: Connection<String>) -> usize {
    let q = conn.blocking_recv().unwrap();
    conn.blocking_send(&q.to_uppercase()).unwrap();
    q.len()
}

#[tokio::test]
async fn a_pipe_end_passed_to_a_pool_task() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let (ours, theirs) = procpool::pipe::<String>().unwrap();
    let task = pool.try_submit(answer_on, theirs).unwrap();
    ours.send(&"hello".to_owned()).await.unwrap();
    assert_eq!(ours.recv().await.unwrap(), "HELLO");
    assert_eq!(task.await.unwrap(), 5);
    // The worker dropped its copy when the task returned, and ours was moved: EOF.
    assert!(matches!(ours.recv().await, Err(RecvError::Eof)));
    pool.shutdown().await;
}

/// Returns a fresh pipe end to the parent, keeping the other for a reply.
fn make_and_return_end(_: ()) -> Connection<u32> {
    let (a, b) = procpool::pipe::<u32>().unwrap();
    a.blocking_send(&41).unwrap();
    b
}

#[tokio::test]
async fn a_pipe_end_returned_from_a_task_and_sent_through_another_pipe() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let end = pool.run(make_and_return_end, ()).await.unwrap();
    // The worker's other end is gone (dropped when the task returned), but the
    // message it sent is still there, then EOF.
    assert_eq!(end.recv().await.unwrap(), 41);
    assert!(matches!(end.recv().await, Err(RecvError::Eof)));

    // An end travels inside a message through another pipe.
    let (carrier_a, carrier_b) = procpool::pipe::<Connection<u32>>().unwrap();
    let (x, y) = procpool::pipe::<u32>().unwrap();
    carrier_a.send(&y).await.unwrap();
    drop(y);
    let y2 = carrier_b.recv().await.unwrap();
    x.send(&5).await.unwrap();
    assert_eq!(y2.recv().await.unwrap(), 5);
    pool.shutdown().await;
}

#[tokio::test]
async fn cancelled_send_never_cuts_a_message() {
    let (a, b) = procpool::pipe::<Vec<u8>>().unwrap();
    let big = vec![3u8; 8 << 20];
    // The socket buffer is far smaller than 8 MiB: the send is cancelled mid-message.
    let r = tokio::time::timeout(Duration::from_millis(1), a.send(&big)).await;
    assert!(r.is_err(), "the send cannot complete without a reader");
    let reader = tokio::spawn(async move {
        let first = b.recv().await.unwrap();
        let second = b.recv().await.unwrap();
        (first.len(), second)
    });
    // The next send finishes the cut message first, then sends its own.
    a.send(&vec![1, 2]).await.unwrap();
    assert_eq!(reader.await.unwrap(), (8 << 20, vec![1, 2]));
}

#[test]
fn serialising_a_pipe_end_outside_procpool_is_an_error() {
    let (a, _b) = procpool::pipe::<u8>().unwrap();
    assert!(postcard::to_allocvec(&a).is_err());
}

#[tokio::test]
async fn a_byte_vector_message_is_its_bytes_as_they_are() {
    let (a, b) = procpool::pipe::<Vec<u8>>().unwrap();
    for v in [vec![], vec![7u8], (0..=255u8).collect::<Vec<u8>>()] {
        a.send(&v).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), v);
        // The same layout as raw bytes, both ways.
        a.send_bytes(&v).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), v);
        a.send(&v).await.unwrap();
        assert_eq!(b.recv_bytes().await.unwrap(), v);
    }
    let q = procpool::Queue::<Vec<u8>>::bounded(4).unwrap();
    for v in [vec![], vec![9u8, 8, 7]] {
        q.put(v.clone()).await.unwrap();
        assert_eq!(q.get().await.unwrap(), v);
    }
}
