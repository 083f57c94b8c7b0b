//! The manager: shared objects changed by children and pool tasks, updates that lose
//! nothing, hostile clients, and proxies after shutdown.

use crate::common;

use procpool::manager::{DictProxy, ListProxy, Manager, ManagerError, Namespace, ValueProxy};
use procpool::{Process, ProcessPoolExecutor};

type Shared = (
    ValueProxy<i64>,
    ValueProxy<Vec<u8>>,
    ListProxy<u32>,
    DictProxy<String, u32>,
    Namespace,
);

/// Seed 000's child: changes a value, a string, a list element, appends, sets a key.
fn modify((v, s, l, d, ns): Shared) {
    v.blocking_set(&260).unwrap();
    s.blocking_set(&b"hello, world".to_vec()).unwrap();
    // `get` is a copy: change it, then write it back.
    let first = l.blocking_get(0).unwrap().unwrap();
    l.blocking_set(0, &(first + 100)).unwrap();
    l.blocking_push(&4).unwrap();
    d.blocking_insert(&"c".to_owned(), &3).unwrap();
    ns.blocking_set("x", &1.5f64).unwrap();
}

#[tokio::test]
async fn a_child_changes_five_shared_objects_and_the_parent_sees_all() {
    let m = Manager::start().await.unwrap();
    let v = m.value(&250i64).await.unwrap();
    let s = m.value(&b"hello".to_vec()).await.unwrap();
    let l = m.list::<u32>().await.unwrap();
    for i in 1..=3 {
        l.push(&i).await.unwrap();
    }
    let d = m.dict::<String, u32>().await.unwrap();
    d.insert(&"a".to_owned(), &1).await.unwrap();
    let ns = m.namespace().await.unwrap();
    let mut child = Process::spawn(
        modify,
        (v.clone(), s.clone(), l.clone(), d.clone(), ns.clone()),
    )
    .unwrap();
    child.join().await.unwrap();
    assert_eq!(v.get().await.unwrap(), 260);
    assert_eq!(s.get().await.unwrap(), b"hello, world");
    assert_eq!(l.to_vec().await.unwrap(), [101, 2, 3, 4]);
    assert_eq!(l.len().await.unwrap(), 4);
    assert_eq!(d.get(&"c".to_owned()).await.unwrap(), Some(3));
    assert_eq!(d.len().await.unwrap(), 2);
    assert_eq!(ns.get::<f64>("x").await.unwrap(), Some(1.5));
    assert_eq!(d.remove(&"a".to_owned()).await.unwrap(), Some(1));
    assert_eq!(d.items().await.unwrap(), [("c".to_owned(), 3)]);
    m.shutdown().await.unwrap();
}

fn add_1000(v: ValueProxy<i64>) {
    // Four processes at once: compare-and-set conflicts are certain, and retried.
    for _ in 0..1000 {
        v.blocking_update(|x| x + 1).unwrap();
    }
}

#[tokio::test]
async fn four_processes_times_1000_updates_lose_nothing() {
    let m = Manager::start().await.unwrap();
    let v = m.value(&0i64).await.unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(add_1000, v.clone()).unwrap())
        .collect();
    for mut p in ps {
        p.join().await.unwrap();
    }
    assert_eq!(v.get().await.unwrap(), 4000);
    // The function runs in the caller: a panic is the caller's, and the value stays
    // as it was.
    let panicking = {
        let v = v.clone();
        tokio::spawn(async move {
            v.update(|x: i64| if x > 0 { panic!("no") } else { x })
                .await
        })
    };
    assert!(panicking.await.unwrap_err().is_panic());
    assert_eq!(v.get().await.unwrap(), 4000);
    // A capturing closure works too: nothing but values travels.
    let step = 10;
    assert_eq!(v.update(|x| x + step).await.unwrap(), 4010);
    // A byte vector is updated like any value (it is kept postcard there).
    let b = m.value(&vec![1u8, 2]).await.unwrap();
    let updated = b
        .update(|mut v: Vec<u8>| {
            v.push(3);
            v
        })
        .await
        .unwrap();
    assert_eq!(updated, vec![1, 2, 3]);
    assert_eq!(b.get().await.unwrap(), vec![1, 2, 3]);
    m.shutdown().await.unwrap();
}

fn tick(v: ValueProxy<i64>) -> i64 {
    v.blocking_update(|x| x + 1).unwrap()
}

#[tokio::test]
async fn pool_tasks_update_values_while_a_tokio_task_watches() {
    let m = Manager::start().await.unwrap();
    let v = m.value(&0i64).await.unwrap();
    let pool = ProcessPoolExecutor::builder().workers(2).build().unwrap();
    let watcher = {
        let v = v.clone();
        tokio::spawn(async move {
            // Sees the value change as the tasks run, and never go backwards.
            let mut last = 0;
            while last < 20 {
                let now = v.get().await.unwrap();
                assert!(now >= last);
                last = now;
                tokio::task::yield_now().await;
            }
            last
        })
    };
    let results = pool
        .map(tick, std::iter::repeat_n(v.clone(), 20))
        .await
        .unwrap();
    let mut sorted = results.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=20).collect::<Vec<_>>(),
        "each update saw its own value"
    );
    assert_eq!(watcher.await.unwrap(), 20);
    pool.shutdown().await;
    m.shutdown().await.unwrap();
}

#[tokio::test]
async fn proxies_are_disconnected_after_shutdown() {
    let m = Manager::start().await.unwrap();
    let v = m.value(&1u8).await.unwrap();
    let v2 = v.clone();
    m.shutdown().await.unwrap();
    assert!(matches!(v.get().await, Err(ManagerError::Disconnected)));
    let blocking = tokio::task::spawn_blocking(move || v2.blocking_get());
    assert!(matches!(
        blocking.await.unwrap(),
        Err(ManagerError::Disconnected)
    ));
}

fn produce(q: procpool::manager::QueueProxy<u32>) {
    for i in 0..5 {
        q.blocking_put(&i).unwrap();
    }
}

#[tokio::test]
async fn queue_event_and_lock_proxies() {
    let m = Manager::start().await.unwrap();
    let q = m.queue::<u32>().await.unwrap();
    let mut p = Process::spawn(produce, q.clone()).unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(q.get().await.unwrap());
    }
    p.join().await.unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert!(q.is_empty().await.unwrap());

    let e = m.event().await.unwrap();
    let mut waiter = Process::spawn(
        |e: procpool::manager::EventProxy| e.blocking_wait().is_ok(),
        e.clone(),
    )
    .unwrap();
    assert!(!e.is_set().await.unwrap());
    e.set().await.unwrap();
    assert!(waiter.join().await.unwrap());
    e.clear().await.unwrap();
    assert!(!e.is_set().await.unwrap());

    let l = m.lock().await.unwrap();
    let g = l.lock().await.unwrap();
    drop(g);
    let _again = l.lock().await.unwrap();
    m.shutdown().await.unwrap();
}

fn hold_manager_lock((l, ready): (procpool::manager::LockProxy, procpool::Connection<()>)) {
    let _g = l.blocking_lock().unwrap();
    ready.blocking_send(&()).unwrap();
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn a_lock_held_by_a_killed_client_is_released() {
    let m = Manager::start().await.unwrap();
    let l = m.lock().await.unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut holder = Process::spawn(hold_manager_lock, (l.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    let (got, ()) = tokio::join!(l.lock(), async { holder.kill().unwrap() });
    assert!(got.is_ok(), "the manager released the dead client's lock");
    assert!(holder.join().await.is_err());
    m.shutdown().await.unwrap();
}

fn remote_client((addr, key): (procpool::connection::Address, Vec<u8>)) -> Result<i64, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = Manager::connect(&addr, &key)
            .await
            .map_err(|e| common::report(&e))?;
        let ns = m.namespace().await.map_err(|e| e.to_string())?;
        ns.set("from", &"child".to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let v = m.value(&41i64).await.map_err(|e| e.to_string())?;
        v.update(|x| x + 1).await.map_err(|e| e.to_string())
    })
}

#[tokio::test]
async fn a_remote_manager_over_tcp_with_right_and_wrong_keys() {
    let server = Manager::serve(
        "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
        b"remote-key",
    )
    .await
    .unwrap();
    let addr = server.address().clone();
    let serving = tokio::spawn(server.run());
    let mut good = Process::spawn(remote_client, (addr.clone(), b"remote-key".to_vec())).unwrap();
    assert_eq!(good.join().await.unwrap(), Ok(42));
    let mut bad = Process::spawn(remote_client, (addr.clone(), b"wrong".to_vec())).unwrap();
    let refused = bad.join().await.unwrap().unwrap_err();
    assert!(refused.contains("digest sent was rejected"), "{refused}");
    // Shut it down from here; the serving task ends, and proxies are disconnected.
    let m = Manager::connect(&addr, b"remote-key").await.unwrap();
    let v = m.value(&0u8).await.unwrap();
    m.shutdown().await.unwrap();
    serving.await.unwrap();
    assert!(matches!(v.get().await, Err(ManagerError::Disconnected)));
}

#[tokio::test]
async fn dropping_the_manager_stops_it() {
    let m = Manager::start().await.unwrap();
    let v = m.value(&7u8).await.unwrap();
    drop(m);
    // The server was killed with the handle (SIGKILL: it answers nothing more), so
    // even the connection the proxy already had ends.
    assert!(matches!(v.get().await, Err(ManagerError::Disconnected)));
    assert!(matches!(v.get().await, Err(ManagerError::Disconnected)));
}

#[tokio::test]
async fn silent_and_garbage_clients_do_not_disturb_a_remote_manager() {
    use tokio::io::AsyncWriteExt;
    let server = Manager::serve("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(), b"k")
        .await
        .unwrap();
    let addr = server.address().clone();
    let procpool::connection::Address::Tcp(sa) = addr.clone() else {
        unreachable!()
    };
    let serving = tokio::spawn(server.run());
    let _silent = tokio::net::TcpStream::connect(sa).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(sa).await.unwrap();
    garbage.write_all(&[0xff; 64]).await.unwrap();
    let m = Manager::connect(&addr, b"k").await.unwrap();
    let l = m.list::<u8>().await.unwrap();
    l.push(&1).await.unwrap();
    assert_eq!(l.to_vec().await.unwrap(), [1]);
    m.shutdown().await.unwrap();
    serving.await.unwrap();
}

/// The manager's wire, as a client of another program would write it: the first
/// requests in their places (`NamedCode` is the retired server-side update).
#[derive(serde::Serialize)]
#[allow(dead_code)]
enum RawRequest {
    New(u8, Vec<u8>),
    Get(u64),
    Set(u64, Vec<u8>),
    NamedCode(u64, u64, RawTaskRef),
}

#[derive(serde::Serialize)]
#[allow(dead_code)]
enum RawTaskRef {
    Local(u64),
    Registered(u64),
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum RawResponse {
    Id(u64),
    Bytes(Option<Vec<u8>>),
    Len(u64),
    Items(Vec<(Vec<u8>, Vec<u8>)>),
    Bool(bool),
    Unit,
    Refused(procpool::manager::Refusal),
}

#[tokio::test]
async fn a_tcp_client_that_names_code_for_the_manager_to_run_is_refused() {
    let server = Manager::serve("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(), b"k")
        .await
        .unwrap();
    let addr = server.address().clone();
    let serving = tokio::spawn(server.run());
    let m = Manager::connect(&addr, b"k").await.unwrap();
    let v = m.value(&5u64).await.unwrap(); // the manager's first object: id 1
    let raw: procpool::Connection<RawRequest, RawResponse> =
        procpool::connection::Client::connect(&addr, b"k")
            .await
            .unwrap();
    for offset in [0u64, 0x1000, 0xdead_beef, u64::MAX] {
        raw.send(&RawRequest::NamedCode(1, 0, RawTaskRef::Local(offset)))
            .await
            .unwrap();
        match raw.recv().await.unwrap() {
            RawResponse::Refused(procpool::manager::Refusal::CodeFromClient) => {}
            other => panic!("offset {offset:#x}: expected a refusal, got {other:?}"),
        }
    }
    // Nothing ran: the value is as it was, and the manager still serves.
    raw.send(&RawRequest::Get(1)).await.unwrap();
    assert!(matches!(
        raw.recv().await.unwrap(),
        RawResponse::Bytes(Some(_))
    ));
    assert_eq!(v.get().await.unwrap(), 5);
    assert_eq!(v.update(|x| x * 2).await.unwrap(), 10);
    m.shutdown().await.unwrap();
    serving.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_dropped_before_its_answer_does_not_answer_the_next_call() {
    let m = Manager::start().await.unwrap();
    let one = m.value(&1u64).await.unwrap();
    let two = m.value(&2u64).await.unwrap();
    for _ in 0..20 {
        // Polled once: the request goes out, then the future is dropped unanswered.
        let _ = tokio::time::timeout(std::time::Duration::ZERO, one.get()).await;
        assert_eq!(two.get().await.unwrap(), 2);
        assert_eq!(one.get().await.unwrap(), 1);
    }
    m.shutdown().await.unwrap();
}
