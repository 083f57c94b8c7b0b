//! Queues: the seeds' scenarios across processes, Python's traps, bounds, exact
//! lengths, close, and processes killed in the middle of an operation.

use std::collections::BTreeMap;
use std::time::Duration;

use procpool::queue::{GetError, PutError};
use procpool::{
    Connection, Exit, JoinableQueue, Process, ProcessError, ProcessPoolExecutor, Queue, SimpleQueue,
};

/// Seed 000: five producers each put their items, five consumers each get theirs.
fn produce(args: (Queue<(u32, u32)>, u32)) {
    let (q, who) = args;
    for i in 0..20 {
        q.blocking_put((who, i)).unwrap();
    }
}

/// Consumes until the `None`-like sentinel `(u32::MAX, _)`.
fn consume(q: Queue<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    loop {
        let item = q.blocking_get().unwrap();
        if item.0 == u32::MAX {
            return got;
        }
        got.push(item);
    }
}

#[tokio::test]
async fn five_producers_five_consumers_on_a_queue_of_3_deliver_every_item_once() {
    let q = Queue::bounded(3).unwrap();
    let producers: Vec<_> = (0..5)
        .map(|who| Process::spawn(produce, (q.clone(), who)).unwrap())
        .collect();
    let consumers: Vec<_> = (0..5)
        .map(|_| Process::spawn(consume, q.clone()).unwrap())
        .collect();
    for mut p in producers {
        p.join().await.unwrap();
    }
    for _ in 0..5 {
        q.put((u32::MAX, 0)).await.unwrap();
    }
    let mut seen = BTreeMap::new();
    for mut c in consumers {
        let got = c.join().await.unwrap();
        // FIFO per producer: within what one consumer got, each producer's items rise.
        for who in 0..5 {
            let mine: Vec<u32> = got.iter().filter(|x| x.0 == who).map(|x| x.1).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        }
        for item in got {
            *seen.entry(item).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 100, "every item delivered");
    assert!(seen.values().all(|n| *n == 1), "and only once");
    assert!(q.is_empty());
}

fn produce_then_close(q: Queue<String>) {
    for i in 0..10 {
        q.blocking_put(format!("bun {i}")).unwrap();
    }
    q.close();
}

#[tokio::test]
async fn producer_closes_and_the_consumer_drains_then_sees_closed() {
    let q = Queue::unbounded().unwrap();
    let mut p = Process::spawn(produce_then_close, q.clone()).unwrap();
    let mut got = Vec::new();
    loop {
        match q.get().await {
            Ok(s) => got.push(s),
            Err(GetError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    p.join().await.unwrap();
    assert_eq!(got, (0..10).map(|i| format!("bun {i}")).collect::<Vec<_>>());
    assert!(matches!(q.put("late".into()).await, Err(PutError::Closed(s)) if s == "late"));
}

/// Seed 003: a consumer that never returns; it reports what it ate on `done`.
fn eat_forever(args: (JoinableQueue<String>, Queue<String>)) {
    let (q, done) = args;
    loop {
        let item = q.blocking_get().unwrap();
        done.blocking_put(item).unwrap();
        q.task_done().unwrap();
    }
}

fn cook(args: (JoinableQueue<String>, String)) {
    let (q, name) = args;
    for i in 0..10 {
        q.blocking_put(format!("{name}{i}")).unwrap();
    }
    // As in the seed: the producer waits until everything is processed.
    q.blocking_join().unwrap();
}

#[tokio::test]
async fn joinable_queue_three_producers_two_daemon_consumers_and_join() {
    let q = JoinableQueue::unbounded().unwrap();
    let done = Queue::unbounded().unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .daemon(true)
                .spawn(eat_forever, (q.clone(), done.clone()))
                .unwrap()
        })
        .collect();
    let producers: Vec<_> = ["bun", "bone", "slop"]
        .into_iter()
        .map(|n| Process::spawn(cook, (q.clone(), n.to_owned())).unwrap())
        .collect();
    for mut p in producers {
        p.join().await.unwrap();
    }
    // Every producer returned from join, so every item was marked done.
    q.join().await.unwrap();
    assert_eq!(q.unfinished(), 0);
    assert_eq!(done.len(), 30);
    let mut eaten = Vec::new();
    while let Ok(s) = done.try_get() {
        eaten.push(s);
    }
    eaten.sort();
    let mut want: Vec<String> = ["bun", "bone", "slop"]
        .iter()
        .flat_map(|n| (0..10).map(move |i| format!("{n}{i}")))
        .collect();
    want.sort();
    assert_eq!(eaten, want);
    // The daemon consumers are killed when dropped (here), as with Python's daemons.
    drop(consumers);
}

#[tokio::test]
async fn task_done_more_often_than_items_is_an_error() {
    let q = JoinableQueue::bounded(2).unwrap();
    q.put(1u8).await.unwrap();
    q.get().await.unwrap();
    q.task_done().unwrap();
    assert!(q.task_done().is_err());
}

fn put_and_exit_at_once(q: Queue<Vec<u8>>) {
    for i in 0..200u8 {
        q.blocking_put(vec![i; 4096]).unwrap();
    }
    // The process exits the moment the last put returns.
}

#[tokio::test]
async fn no_item_lost_when_a_producer_exits_right_after_put_and_join_before_get_does_not_deadlock()
{
    // 200 × 4 KiB is far more than any pipe buffer: Python's feeder thread would
    // keep this child alive until a consumer drained it, and join would hang.
    let q = Queue::unbounded().unwrap();
    let mut p = Process::spawn(put_and_exit_at_once, q.clone()).unwrap();
    p.join().await.unwrap();
    assert_eq!(q.len(), 200);
    for i in 0..200u8 {
        assert_eq!(q.get().await.unwrap(), vec![i; 4096]);
    }
}

fn try_put_many(args: (Queue<u32>, u32)) -> u32 {
    let (q, n) = args;
    let mut ok = 0;
    for i in 0..n {
        match q.try_put(i) {
            Ok(()) => ok += 1,
            Err(PutError::Full(x)) => assert_eq!(x, i),
            Err(e) => panic!("{e}"),
        }
        assert!(q.len() <= 10, "never over the bound");
    }
    ok
}

#[tokio::test]
async fn concurrent_try_put_at_the_bound_never_exceeds_maxsize() {
    let q = Queue::bounded(10).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(try_put_many, (q.clone(), 200)).unwrap())
        .collect();
    let mut accepted = 0;
    for mut p in ps {
        accepted += p.join().await.unwrap();
    }
    assert_eq!(accepted, 10);
    assert_eq!(q.len(), 10);
    assert!(q.is_full());
}

fn put_1000_get_500(q: Queue<u64>) -> u64 {
    let mut sum = 0;
    for i in 0..1000 {
        q.blocking_put(i).unwrap();
        if i % 2 == 1 {
            sum += q.blocking_get().unwrap();
        }
    }
    sum
}

#[tokio::test]
async fn len_is_exact_under_concurrent_use() {
    let q = Queue::unbounded().unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(put_1000_get_500, q.clone()).unwrap())
        .collect();
    let mut got_sum = 0;
    for mut p in ps {
        got_sum += p.join().await.unwrap();
    }
    // Quiescent: every process has been joined.
    assert_eq!(q.len(), 4 * 500);
    let mut rest_sum = 0;
    while let Ok(v) = q.try_get() {
        rest_sum += v;
    }
    assert_eq!(got_sum + rest_sum, 4 * (0..1000).sum::<u64>());
    assert!(q.is_empty());
}

fn sum_from_queue(q: Queue<u64>) -> u64 {
    let mut s = 0;
    while let Ok(v) = q.blocking_get() {
        s += v;
    }
    s
}

#[tokio::test]
async fn a_queue_shared_by_pool_tasks_and_a_process() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let q = Queue::bounded(8).unwrap();
    let mut consumer = Process::spawn(sum_from_queue, q.clone()).unwrap();
    let producers: Vec<_> = (0..4u64)
        .map(|k| {
            pool.try_submit(
                |(q, k): (Queue<u64>, u64)| {
                    for i in 0..100 {
                        q.blocking_put(k * 1000 + i).unwrap();
                    }
                },
                (q.clone(), k),
            )
            .unwrap()
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    q.close();
    let want: u64 = (0..4u64)
        .flat_map(|k| (0..100).map(move |i| k * 1000 + i))
        .sum();
    assert_eq!(consumer.join().await.unwrap(), want);
    pool.shutdown().await;
}

#[tokio::test]
async fn large_items_of_64_mib() {
    let q = Queue::unbounded().unwrap();
    let mut p = Process::spawn(
        |q: Queue<Vec<u8>>| {
            let v: Vec<u8> = (0..64 << 20).map(|i| (i % 253) as u8).collect();
            q.blocking_put(v).unwrap();
        },
        q.clone(),
    )
    .unwrap();
    p.join().await.unwrap();
    let v = q.get().await.unwrap();
    assert_eq!(v.len(), 64 << 20);
    assert!(v.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
}

#[tokio::test]
async fn timeouts_try_forms_and_the_stream() {
    use futures::StreamExt;
    let q = Queue::bounded(1).unwrap();
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(5)).await,
        Err(GetError::Timeout)
    ));
    q.put_timeout(1u32, Duration::from_millis(5)).await.unwrap();
    assert!(matches!(q.try_put(2), Err(PutError::Full(2))));
    assert!(matches!(
        q.put_timeout(3, Duration::from_millis(5)).await,
        Err(PutError::Timeout(3))
    ));
    let q2 = q.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        assert!(matches!(
            q2.blocking_put_timeout(4, Duration::from_millis(5)),
            Err(PutError::Timeout(4))
        ));
        q2.blocking_get_timeout(Duration::from_secs(60)).unwrap()
    });
    assert_eq!(blocking.await.unwrap(), 1);
    let q3 = q.clone();
    let feeder = tokio::spawn(async move {
        for i in 10..15 {
            q3.put(i).await.unwrap();
        }
        q3.close();
    });
    let items: Vec<u32> = q.stream().map(|r| r.unwrap()).collect().await;
    feeder.await.unwrap();
    assert_eq!(items, [10, 11, 12, 13, 14]);
}

#[tokio::test]
async fn simple_queue_and_handles_inside_items() {
    let sq = SimpleQueue::<Connection<u32>>::new().unwrap();
    let (a, b) = procpool::pipe::<u32>().unwrap();
    sq.put(b).await.unwrap();
    assert!(!sq.is_empty());
    let mut p = Process::spawn(
        |sq: SimpleQueue<Connection<u32>>| {
            let conn = sq.blocking_get().unwrap();
            conn.blocking_send(&99).unwrap();
        },
        sq.clone(),
    )
    .unwrap();
    assert_eq!(a.recv().await.unwrap(), 99);
    p.join().await.unwrap();
    assert!(sq.is_empty());
}

/// Blocks in `get` on an empty queue (after saying so), until killed.
fn block_in_get(args: (Queue<u32>, Connection<()>)) -> u32 {
    let (q, ready) = args;
    ready.blocking_send(&()).unwrap();
    q.blocking_get().unwrap()
}

/// Blocks in `put` on a full queue (after saying so), until killed.
fn block_in_put(args: (Queue<u32>, Connection<()>)) {
    let (q, ready) = args;
    ready.blocking_send(&()).unwrap();
    q.blocking_put(666).unwrap();
}

#[tokio::test]
async fn a_child_killed_while_blocked_in_get_or_put_does_not_wedge_the_queue() {
    let q = Queue::bounded(1).unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut getter = Process::spawn(block_in_get, (q.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    getter.kill().unwrap();
    assert!(matches!(
        getter.join().await,
        Err(ProcessError::Died {
            exit: Exit::Signal(libc::SIGKILL)
        })
    ));
    // The dead getter took nothing: an item put now is ours to get.
    q.put(1).await.unwrap();
    assert_eq!(q.get().await.unwrap(), 1);

    q.put(2).await.unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut putter = Process::spawn(block_in_put, (q.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    putter.kill().unwrap();
    assert!(putter.join().await.is_err());
    // The item it was blocked putting never went in; the queue holds what it held.
    assert_eq!(q.len(), 1);
    assert_eq!(q.get().await.unwrap(), 2);
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    q.put(3).await.unwrap();
    assert_eq!(q.get().await.unwrap(), 3);
}

fn hold_the_lock(args: (Queue<u32>, Connection<()>)) {
    let (q, ready) = args;
    q.__lock_and_signal_for_testing(|| ready.blocking_send(&()).unwrap());
}

#[tokio::test]
async fn a_child_killed_holding_the_queue_lock_does_not_deadlock_the_others() {
    let q = Queue::unbounded().unwrap();
    q.put(5).await.unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut holder = Process::spawn(hold_the_lock, (q.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    // It holds the lock now and never lets go.
    holder.kill().unwrap();
    assert!(holder.join().await.is_err());
    // The kernel released the robust mutex; the next locker goes on.
    assert_eq!(q.len(), 1);
    assert_eq!(q.get().await.unwrap(), 5);
    q.put(6).await.unwrap();
    assert_eq!(q.get().await.unwrap(), 6);
}

#[tokio::test]
async fn an_item_whose_put_was_cut_short_is_not_in_the_queue() {
    let q = Queue::unbounded().unwrap();
    q.put(b"before".to_vec()).await.unwrap();
    // The child writes the item into the ring and dies before publishing it.
    let mut p = Process::spawn(
        |q: Queue<Vec<u8>>| q.__put_and_die_before_publishing_for_testing(b"cut".to_vec()),
        q.clone(),
    )
    .unwrap();
    assert!(matches!(
        p.join().await,
        Err(ProcessError::Died {
            exit: Exit::Signal(libc::SIGABRT)
        })
    ));
    assert_eq!(q.len(), 1);
    q.put(b"after".to_vec()).await.unwrap();
    assert_eq!(q.get().await.unwrap(), b"before");
    assert_eq!(q.get().await.unwrap(), b"after");
    assert!(q.is_empty());
}

fn put_own_index((q, i): (Queue<u32>, u32)) -> (u32, Queue<u32>) {
    q.blocking_put(i).unwrap();
    (i, q)
}

#[tokio::test]
async fn map_carries_handles_in_items_and_results_of_one_chunk() {
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let queues: Vec<Queue<u32>> = (0..20).map(|_| Queue::unbounded().unwrap()).collect();
    let items: Vec<(Queue<u32>, u32)> = queues.iter().cloned().zip(0..).collect();
    // Several items per chunk: descriptors share one index space per frame.
    let back = pool.map(put_own_index, items).chunk_size(7).await.unwrap();
    for (i, (n, returned)) in back.into_iter().enumerate() {
        assert_eq!(n, i as u32);
        // The handle that came back is the same queue as ours.
        assert_eq!(returned.get().await.unwrap(), i as u32);
        assert!(queues[i].is_empty());
    }
    pool.shutdown().await;
}
