//! The rest of the manager's family (joinable queue, reentrant lock, semaphores,
//! condition, barrier, array) and types of the user's own served by a manager.

use std::collections::BTreeSet;
use std::time::Duration;

use procpool::manager::{
    ArrayProxy, BarrierProxy, ConditionProxy, JoinableQueueProxy, Manager, ManagerError,
    RLockProxy, Refusal, SemaphoreProxy, SharedObject, SharedProxy, ValueProxy,
};
use procpool::{Connection, Process};
use serde::{Deserialize, Serialize};

fn refusal<T: std::fmt::Debug>(r: Result<T, ManagerError>) -> Refusal {
    match r {
        Err(ManagerError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Takes items until it gets 0, doubling each into `out`, marking each done.
fn consume((q, out): (JoinableQueueProxy<u32>, JoinableQueueProxy<u32>)) {
    loop {
        let n = q.blocking_get().unwrap();
        if n != 0 {
            out.blocking_put(&(n * 2)).unwrap();
        }
        q.blocking_task_done().unwrap();
        if n == 0 {
            return;
        }
    }
}

#[tokio::test]
async fn a_joinable_queue_is_joined_once_every_item_is_done() {
    let m = Manager::start().await.unwrap();
    let q = m.joinable_queue::<u32>().await.unwrap();
    let out = m.joinable_queue::<u32>().await.unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|_| Process::spawn(consume, (q.clone(), out.clone())).unwrap())
        .collect();
    for n in 1..=10 {
        q.put(&n).await.unwrap();
    }
    q.put(&0).await.unwrap();
    q.put(&0).await.unwrap();
    // Returns only once all twelve were taken and marked done.
    q.join().await.unwrap();
    assert_eq!(out.len().await.unwrap(), 10);
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        got.insert(out.get().await.unwrap());
    }
    assert_eq!(got, (1..=10).map(|n| n * 2).collect());
    for c in &mut children {
        c.join().await.unwrap();
    }
    assert!(q.is_empty().await.unwrap());
    assert_eq!(refusal(q.task_done().await), Refusal::TaskDoneTooOften);
    m.shutdown().await.unwrap();
}

/// Tells the parent it is about to take the lock, takes it, and records that it did.
fn take_rlock((l, got, ready): (RLockProxy, ValueProxy<u32>, Connection<()>)) {
    ready.blocking_send(&()).unwrap();
    let _g = l.blocking_lock().unwrap();
    got.blocking_set(&1).unwrap();
}

#[tokio::test]
async fn an_rlock_is_reentrant_for_its_owner_and_exclusive_for_others() {
    let m = Manager::start().await.unwrap();
    let l = m.rlock().await.unwrap();
    let got = m.value(&0u32).await.unwrap();
    let outer = l.lock().await.unwrap();
    // The same task again: no deadlock.
    let inner = tokio::time::timeout(Duration::from_secs(60), l.lock())
        .await
        .expect("a reentrant lock does not wait for its own owner")
        .unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut child = Process::spawn(take_rlock, (l.clone(), got.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    drop(inner);
    // Still held once: the child cannot have it.
    assert_eq!(got.get().await.unwrap(), 0);
    drop(outer);
    child.join().await.unwrap();
    assert_eq!(got.get().await.unwrap(), 1);
    m.shutdown().await.unwrap();
}

fn hold_rlock_twice((l, ready): (RLockProxy, Connection<()>)) {
    let _a = l.blocking_lock().unwrap();
    let _b = l.blocking_lock().unwrap();
    ready.blocking_send(&()).unwrap();
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn an_rlock_held_twice_by_a_killed_client_is_released() {
    let m = Manager::start().await.unwrap();
    let l = m.rlock().await.unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut holder = Process::spawn(hold_rlock_twice, (l.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    let (got, ()) = tokio::join!(l.lock(), async { holder.kill().unwrap() });
    assert!(
        got.is_ok(),
        "the manager released both of the dead client's holds"
    );
    assert!(holder.join().await.is_err());
    m.shutdown().await.unwrap();
}

fn acquire_once(s: SemaphoreProxy) {
    s.blocking_acquire().unwrap();
}

#[tokio::test]
async fn semaphores_count_and_a_bounded_one_refuses_an_extra_release() {
    let m = Manager::start().await.unwrap();
    let s = m.semaphore(2).await.unwrap();
    assert!(s.try_acquire().await.unwrap());
    assert!(s.try_acquire().await.unwrap());
    assert!(!s.try_acquire().await.unwrap());
    assert_eq!(s.value().await.unwrap(), 0);
    // A child waits for a permit; the parent's release gives it one.
    let mut child = Process::spawn(acquire_once, s.clone()).unwrap();
    s.release().await.unwrap();
    child.join().await.unwrap();
    assert_eq!(s.value().await.unwrap(), 0);
    // An unbounded semaphore may go above its start.
    for _ in 0..3 {
        s.release().await.unwrap();
    }
    assert_eq!(s.value().await.unwrap(), 3);

    let b = m.bounded_semaphore(1).await.unwrap();
    assert_eq!(refusal(b.release().await), Refusal::OverReleased);
    b.acquire().await.unwrap();
    b.release().await.unwrap();
    assert_eq!(refusal(b.release().await), Refusal::OverReleased);
    assert_eq!(b.value().await.unwrap(), 1);
    m.shutdown().await.unwrap();
}

/// Takes the condition's lock, tells the parent, and waits to be notified.
fn wait_for_notice((c, ready): (ConditionProxy, Connection<()>)) -> bool {
    let mut g = c.blocking_lock().unwrap();
    ready.blocking_send(&()).unwrap();
    g.blocking_wait_timeout(Duration::from_secs(60)).unwrap()
}

#[tokio::test]
async fn a_condition_wakes_a_waiter_in_another_process() {
    let m = Manager::start().await.unwrap();
    let c = m.condition().await.unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut child = Process::spawn(wait_for_notice, (c.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    // The child held the lock when it said so: once we have it, the child waits.
    let mut g = c.lock().await.unwrap();
    g.notify(1).await.unwrap();
    drop(g);
    assert!(child.join().await.unwrap(), "the child was notified");
    // Nobody notifies: the wait times out, holding the lock again.
    let mut g = c.lock().await.unwrap();
    assert!(!g.wait_timeout(Duration::from_millis(20)).await.unwrap());
    g.notify_all().await.unwrap();
    // A wait dropped before its answer leaves the guard out of step: it says so.
    let cut = tokio::time::timeout(Duration::from_millis(20), g.wait()).await;
    assert!(cut.is_err(), "nobody notified: {cut:?}");
    assert!(matches!(
        g.notify(1).await,
        Err(ManagerError::GuardInterrupted)
    ));
    drop(g);
    // Dropping it released the lock.
    drop(c.lock().await.unwrap());
    m.shutdown().await.unwrap();
}

fn arrive(b: BarrierProxy) -> usize {
    b.blocking_wait().unwrap()
}

/// Waits until `n` parties wait at the barrier (each check is a request answered by
/// the manager).
async fn until_waiting(b: &BarrierProxy, n: usize) {
    for _ in 0..100_000 {
        if b.state().await.unwrap().1 == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{n} parties never arrived");
}

#[tokio::test]
async fn a_barrier_releases_all_parties_and_breaks_when_one_leaves() {
    let m = Manager::start().await.unwrap();
    let b = m.barrier(3).await.unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|_| Process::spawn(arrive, b.clone()).unwrap())
        .collect();
    let mine = b.wait().await.unwrap();
    let mut indices = BTreeSet::from([mine]);
    for c in &mut children {
        indices.insert(c.join().await.unwrap());
    }
    assert_eq!(indices, BTreeSet::from([0, 1, 2]));
    // A second generation works the same.
    let again: Vec<_> = (0..2)
        .map(|_| Process::spawn(arrive, b.clone()).unwrap())
        .collect();
    b.wait().await.unwrap();
    for mut c in again {
        c.join().await.unwrap();
    }

    // A party that dies while waiting breaks it for the others.
    let two = m.barrier(2).await.unwrap();
    let mut dying = Process::spawn(arrive, two.clone()).unwrap();
    until_waiting(&two, 1).await;
    dying.kill().unwrap();
    let _ = dying.join().await;
    assert_eq!(refusal(two.wait().await), Refusal::BrokenBarrier);
    assert!(two.state().await.unwrap().2, "broken");
    // A reset makes it whole.
    two.reset().await.unwrap();
    let mut partner = Process::spawn(arrive, two.clone()).unwrap();
    two.wait().await.unwrap();
    partner.join().await.unwrap();

    // A wait that times out breaks it too, as in Python.
    let lone = m.barrier(2).await.unwrap();
    let r = lone.wait_timeout(Duration::from_millis(20)).await;
    assert_eq!(refusal(r), Refusal::BrokenBarrier);
    assert_eq!(lone.state().await.unwrap(), (2, 0, true));
    lone.abort().await.unwrap();
    assert_eq!(refusal(lone.wait().await), Refusal::BrokenBarrier);
    m.shutdown().await.unwrap();
}

fn bump_second(a: ArrayProxy<f64>) {
    let x = a.blocking_get(1).unwrap();
    a.blocking_set(1, &(x * 10.0)).unwrap();
}

#[tokio::test]
async fn an_array_has_a_fixed_length_and_is_shared() {
    let m = Manager::start().await.unwrap();
    let a = m.array(&[1.5f64, 2.5, 3.5]).await.unwrap();
    Process::spawn(bump_second, a.clone())
        .unwrap()
        .join()
        .await
        .unwrap();
    assert_eq!(a.to_vec().await.unwrap(), [1.5, 25.0, 3.5]);
    assert_eq!(a.len().await.unwrap(), 3);
    assert_eq!(
        refusal(a.get(3).await),
        Refusal::IndexOutOfRange { index: 3, len: 3 }
    );
    assert_eq!(
        refusal(a.set(7, &0.0).await),
        Refusal::IndexOutOfRange { index: 7, len: 3 }
    );
    m.shutdown().await.unwrap();
}

/// A bank account kept by the manager.
struct Account {
    balance: i64,
}

#[derive(Serialize, Deserialize)]
enum AccountCall {
    Deposit(i64),
    Withdraw(i64),
    Balance,
    Explode,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum AccountReply {
    Balance(i64),
    Refused { short_by: i64 },
}

impl SharedObject for Account {
    const NAME: &'static str = "Account";
    type Init = i64;
    type Call = AccountCall;
    type Reply = AccountReply;

    fn new(opening: i64) -> Self {
        Account { balance: opening }
    }

    fn call(&mut self, call: AccountCall) -> AccountReply {
        match call {
            AccountCall::Deposit(n) => self.balance += n,
            AccountCall::Withdraw(n) if n > self.balance => {
                return AccountReply::Refused {
                    short_by: n - self.balance,
                }
            }
            AccountCall::Withdraw(n) => self.balance -= n,
            AccountCall::Balance => {}
            AccountCall::Explode => panic!("the account exploded"),
        }
        AccountReply::Balance(self.balance)
    }
}

/// A type the managers below do not serve.
struct Unserved;

impl SharedObject for Unserved {
    const NAME: &'static str = "Unserved";
    type Init = ();
    type Call = ();
    type Reply = ();
    fn new((): ()) -> Self {
        Unserved
    }
    fn call(&mut self, (): ()) {}
}

fn deposit_100_times(acct: SharedProxy<Account>) {
    for _ in 0..100 {
        acct.blocking_call(&AccountCall::Deposit(1)).unwrap();
    }
}

#[tokio::test]
async fn a_registered_type_is_served_with_atomic_calls_from_many_processes() {
    let m = Manager::builder()
        .register::<Account>()
        .start()
        .await
        .unwrap();
    let acct = m.object::<Account>(&50).await.unwrap();
    let mut children: Vec<_> = (0..4)
        .map(|_| Process::spawn(deposit_100_times, acct.clone()).unwrap())
        .collect();
    for c in &mut children {
        c.join().await.unwrap();
    }
    assert_eq!(
        acct.call(&AccountCall::Balance).await.unwrap(),
        AccountReply::Balance(450)
    );
    assert_eq!(
        acct.call(&AccountCall::Withdraw(500)).await.unwrap(),
        AccountReply::Refused { short_by: 50 }
    );
    // A panicking method is the caller's error; the manager and the object go on.
    match refusal(acct.call(&AccountCall::Explode).await) {
        Refusal::Panicked { message } => assert!(message.contains("exploded"), "{message}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(
        acct.call(&AccountCall::Withdraw(400)).await.unwrap(),
        AccountReply::Balance(50)
    );
    // A type the manager was not built with.
    assert_eq!(
        refusal(m.object::<Unserved>(&()).await),
        Refusal::NotRegistered {
            name: "Unserved".to_owned()
        }
    );
    m.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_registered_type_is_served_over_tcp_to_a_client_of_the_same_types() {
    let key = b"registered types over tcp".to_vec();
    let server = Manager::builder()
        .register::<Account>()
        .serve("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(), &key)
        .await
        .unwrap();
    let address = server.address().clone();
    let serving = tokio::spawn(server.run());
    let client = Manager::connect(&address, &key).await.unwrap();
    let acct = client.object::<Account>(&7).await.unwrap();
    assert_eq!(
        acct.call(&AccountCall::Deposit(3)).await.unwrap(),
        AccountReply::Balance(10)
    );
    // A plain manager serves no registered type.
    let plain = Manager::start().await.unwrap();
    assert_eq!(
        refusal(plain.object::<Account>(&0).await),
        Refusal::NotRegistered {
            name: "Account".to_owned()
        }
    );
    plain.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
    serving.await.unwrap();
}
