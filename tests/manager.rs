//! The manager: the seeds' scenarios, atomic server-side updates, and proxies after
//! shutdown.

use procpool::manager::{DictProxy, ListProxy, Manager, ManagerError, Namespace, ValueProxy};
use procpool::{Process, ProcessPoolExecutor};

type Shared = (
    ValueProxy<i64>,
    ValueProxy<String>,
    ListProxy<u32>,
    DictProxy<String, u32>,
    Namespace,
);

/// Seed 000's child: changes a value, a string, a list element, appends, sets a key.
fn modify((v, s, l, d, ns): Shared) {
    v.blocking_set(&260).unwrap();
    s.blocking_set(&"hello, world".to_owned()).unwrap();
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
    let s = m.value(&"hello".to_owned()).await.unwrap();
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
    assert_eq!(s.get().await.unwrap(), "hello, world");
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
    for _ in 0..1000 {
        v.blocking_update(|x| x + 1).unwrap();
    }
}

#[tokio::test]
async fn four_processes_times_1000_server_side_updates_lose_nothing() {
    let m = Manager::start().await.unwrap();
    let v = m.value(&0i64).await.unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(add_1000, v.clone()).unwrap())
        .collect();
    for mut p in ps {
        p.join().await.unwrap();
    }
    assert_eq!(v.get().await.unwrap(), 4000);
    // A panicking update is refused and leaves the value as it was.
    let r = v
        .update(|x: i64| if x > 0 { panic!("no") } else { x })
        .await;
    assert!(matches!(r, Err(ManagerError::Refused(_))));
    assert_eq!(v.get().await.unwrap(), 4000);
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
