//! Synchronization primitives across processes: the seeds' scenarios, Python's error
//! cases, timeouts, and holders killed with SIGKILL.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use procpool::sync::{LockError, ReleaseError, WaitError};
use procpool::{
    Barrier, BoundedSemaphore, Condition, Connection, Event, Lock, Process, ProcessPoolExecutor,
    RLock, RawValue, Semaphore, Value,
};

/// Seed: buy a ticket if any are left, under the lock.
fn buy((lock, tickets): (Lock, RawValue<i64>)) -> bool {
    let _held = lock.blocking_lock().unwrap();
    let left = tickets.load();
    if left > 0 {
        tickets.store(left - 1);
        true
    } else {
        false
    }
}

#[tokio::test]
async fn a_hundred_buyers_under_a_lock_sell_exactly_five_tickets() {
    let lock = Lock::new().unwrap();
    let tickets = RawValue::new(5i64).unwrap();
    let buyers: Vec<_> = (0..100)
        .map(|_| Process::spawn(buy, (lock.clone(), tickets.clone())).unwrap())
        .collect();
    let mut sold = 0;
    for mut b in buyers {
        sold += b.join().await.unwrap() as u32;
    }
    assert_eq!(sold, 5);
    assert_eq!(tickets.load(), 0);
    assert!(!lock.is_locked());
}

/// Seed (KTV): a room for 4. The fourth one inside says so, and everyone inside stays
/// until the parent has looked.
fn sing((room, inside, max, full, go): (Semaphore, RawValue<i64>, RawValue<i64>, Event, Event)) {
    let _permit = room.blocking_acquire().unwrap();
    let now = inside.fetch_add(1) + 1;
    let mut seen = max.load_atomic();
    while now > seen {
        match max.compare_exchange(seen, now) {
            Ok(_) => break,
            Err(v) => seen = v,
        }
    }
    if now == 4 {
        full.set();
    }
    go.blocking_wait().unwrap();
    inside.fetch_sub(1);
}

#[tokio::test]
async fn thirteen_singers_through_a_semaphore_of_four_never_exceed_four() {
    let room = Semaphore::new(4).unwrap();
    let inside = RawValue::new(0i64).unwrap();
    let max = RawValue::new(0i64).unwrap();
    let (full, go) = (Event::new().unwrap(), Event::new().unwrap());
    let singers: Vec<_> = (0..13)
        .map(|_| {
            let args = (
                room.clone(),
                inside.clone(),
                max.clone(),
                full.clone(),
                go.clone(),
            );
            Process::spawn(sing, args).unwrap()
        })
        .collect();
    full.wait().await.unwrap();
    // Four inside, none free: a fifth cannot get in.
    assert_eq!(room.value(), 0);
    assert!(matches!(room.try_acquire(), Err(WaitError::WouldBlock)));
    assert_eq!(inside.load_atomic(), 4);
    go.set();
    for mut s in singers {
        s.join().await.unwrap();
    }
    assert_eq!(max.load_atomic(), 4);
    assert_eq!(inside.load_atomic(), 0);
    assert_eq!(room.value(), 4);
}

fn ping((mine, theirs): (Event, Event)) {
    mine.set();
    theirs.blocking_wait().unwrap();
}

fn pong((mine, theirs): (Event, Event)) {
    theirs.blocking_wait().unwrap();
    mine.set();
}

#[tokio::test]
async fn event_handshake_between_two_children() {
    let (a, b) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p1 = Process::spawn(pong, (b.clone(), a.clone())).unwrap();
    let mut p2 = Process::spawn(ping, (a.clone(), b.clone())).unwrap();
    p1.join().await.unwrap();
    p2.join().await.unwrap();
    assert!(a.is_set() && b.is_set());
    a.clear();
    assert!(!a.is_set());
    assert!(!a.wait_timeout(Duration::from_millis(5)).await.unwrap());
}

fn wait_for(e: Event) -> bool {
    e.blocking_wait().unwrap();
    e.is_set()
}

#[tokio::test]
async fn twenty_waiting_processes_all_wake_on_set() {
    let e = Event::new().unwrap();
    let waiters: Vec<_> = (0..20)
        .map(|_| Process::spawn(wait_for, e.clone()).unwrap())
        .collect();
    e.set();
    for mut w in waiters {
        assert!(w.join().await.unwrap());
    }
}

fn count(v: Value<i64>) {
    for _ in 0..10_000 {
        v.update(|x| *x += 1);
    }
}

#[tokio::test]
async fn a_value_incremented_by_four_processes_loses_nothing() {
    let v = Value::new(0i64).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(count, v.clone()).unwrap())
        .collect();
    for mut p in ps {
        p.join().await.unwrap();
    }
    assert_eq!(v.load(), 40_000);
}

#[test]
fn bounded_semaphore_released_too_often_is_an_error() {
    let s = BoundedSemaphore::new(2).unwrap();
    let p = s.try_acquire().unwrap();
    drop(p);
    assert!(matches!(s.release(), Err(ReleaseError::TooManyReleases)));
    assert_eq!(s.value(), 2);
    let p = s.try_acquire().unwrap();
    p.forget();
    assert_eq!(s.value(), 1);
    s.release().unwrap();
    assert_eq!(s.value(), 2);
    // A plain Semaphore may go above its initial value, as in Python.
    let plain = Semaphore::new(1).unwrap();
    plain.release().unwrap();
    assert_eq!(plain.value(), 2);
}

#[tokio::test]
async fn blocking_forms_panic_in_a_task_and_work_in_spawn_blocking() {
    let ev = Event::new().unwrap();
    let lock = Lock::new().unwrap();
    for (what, caught) in [
        (
            "blocking_wait_timeout",
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                drop(ev.blocking_wait_timeout(Duration::ZERO))
            })),
        ),
        (
            "blocking_lock",
            std::panic::catch_unwind(AssertUnwindSafe(|| drop(lock.blocking_lock()))),
        ),
    ] {
        let payload = caught.expect_err(what);
        let message = payload.downcast_ref::<String>().unwrap();
        assert!(message.contains(&format!("`{what}`")), "{message}");
        assert!(message.contains("spawn_blocking"), "{message}");
    }
    // The lock was never taken, and the blocking forms work where blocking is allowed.
    let got = tokio::task::spawn_blocking(move || {
        let guard = lock.blocking_lock().unwrap();
        drop(guard);
        ev.set();
        ev.blocking_wait_timeout(Duration::ZERO).unwrap()
    })
    .await
    .unwrap();
    assert!(got);
}

fn try_rlock(r: RLock) -> bool {
    r.try_lock().is_ok()
}

// Python-style `acquire` blocks, so this test runs off any runtime.
#[test]
fn rlock_reenters_for_its_thread_and_refuses_others() {
    let r = RLock::new().unwrap();
    r.acquire().unwrap();
    r.acquire().unwrap();
    {
        let _again = r.try_lock().unwrap();
    }
    // Another thread of this process neither takes it nor releases it.
    let r2 = r.clone();
    let other = std::thread::spawn(move || {
        (
            matches!(r2.try_lock(), Err(LockError::WouldBlock)),
            matches!(r2.release(), Err(ReleaseError::NotOwner)),
        )
    })
    .join()
    .unwrap();
    assert_eq!(other, (true, true));
    // Nor does another process.
    let mut p = Process::spawn(try_rlock, r.clone()).unwrap();
    assert!(!p.blocking_join().unwrap());
    r.release().unwrap();
    r.release().unwrap();
    assert!(matches!(r.release(), Err(ReleaseError::NotOwner)));
    let mut p = Process::spawn(try_rlock, r.clone()).unwrap();
    assert!(p.blocking_join().unwrap());
}

/// Consumer: takes `n` items as they are produced, under the condition.
fn consume((cond, items, n): (Condition, Value<i64>, i64)) -> i64 {
    let mut taken = 0;
    while taken < n {
        let guard = cond.lock().blocking_lock().unwrap();
        let guard = cond
            .blocking_wait_while(guard, || items.load_unlocked() == 0)
            .unwrap();
        items.store_unlocked(items.load_unlocked() - 1);
        taken += 1;
        drop(guard);
    }
    taken
}

#[tokio::test]
async fn condition_producer_and_consumer() {
    let cond = Condition::new(Lock::new().unwrap()).unwrap();
    let items = Value::new(0i64).unwrap();
    let mut consumer = Process::spawn(consume, (cond.clone(), items.clone(), 10)).unwrap();
    for _ in 0..10 {
        let _g = cond.lock().lock().await.unwrap();
        items.store_unlocked(items.load_unlocked() + 1);
        cond.notify(1).unwrap();
    }
    assert_eq!(consumer.join().await.unwrap(), 10);
    assert_eq!(items.load(), 0);
    // A wait that times out reports it and holds the lock again.
    let g = cond.lock().lock().await.unwrap();
    let (g, notified) = cond
        .wait_timeout(g, Duration::from_millis(5))
        .await
        .unwrap();
    assert!(!notified);
    assert!(cond.lock().is_locked());
    drop(g);
    assert!(!cond.lock().is_locked());
}

fn at_barrier(b: Barrier) -> usize {
    b.blocking_wait().unwrap()
}

#[tokio::test]
async fn barrier_of_five_processes_and_broken_on_timeout() {
    let b = Barrier::new(5).unwrap();
    let ps: Vec<_> = (0..5)
        .map(|_| Process::spawn(at_barrier, b.clone()).unwrap())
        .collect();
    let mut indices = Vec::new();
    for mut p in ps {
        indices.push(p.join().await.unwrap());
    }
    indices.sort();
    assert_eq!(indices, [0, 1, 2, 3, 4]);

    let b = Barrier::new(2).unwrap();
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(5)).await,
        Err(WaitError::BrokenBarrier)
    ));
    assert!(b.is_broken());
    // Broken for everyone, until reset.
    let mut p = Process::spawn(|b: Barrier| b.blocking_wait().is_err(), b.clone()).unwrap();
    assert!(p.join().await.unwrap());
    b.reset();
    assert!(!b.is_broken());
    assert_eq!(b.n_waiting(), 0);
    let mut p = Process::spawn(at_barrier, b.clone()).unwrap();
    let mine = b.wait().await.unwrap();
    let theirs = p.join().await.unwrap();
    assert_eq!(mine + theirs, 1);
    b.abort();
    assert!(matches!(b.wait().await, Err(WaitError::BrokenBarrier)));
}

fn hold_lock_forever((lock, ready): (Lock, Connection<()>)) {
    let _held = lock.blocking_lock().unwrap();
    ready.blocking_send(&()).unwrap();
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn a_lock_holder_killed_with_sigkill_hands_over_with_owner_died() {
    let lock = Lock::new().unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let holder = Process::spawn(hold_lock_forever, (lock.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    // Wait for the lock while the holder is killed: the waiter wakes on its death.
    let (got, ()) = tokio::join!(lock.lock(), async {
        holder.kill().unwrap();
    });
    let guard = match got {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    drop(guard);
    // Goes on normally afterwards.
    drop(lock.lock().await.unwrap());
    let mut holder = holder;
    assert!(holder.join().await.is_err());
}

fn hold_lock_blocking_side((lock, ready): (Lock, Connection<()>)) -> bool {
    ready.blocking_send(&()).unwrap();
    // Blocks until the holder (killed by the parent) is found dead.
    matches!(lock.blocking_lock(), Err(LockError::OwnerDied(_)))
}

#[tokio::test]
async fn a_blocking_waiter_also_recovers_a_lock_whose_holder_died() {
    let lock = Lock::new().unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut holder = Process::spawn(hold_lock_forever, (lock.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    let (ours2, theirs2) = procpool::pipe::<()>().unwrap();
    let mut waiter = Process::spawn(hold_lock_blocking_side, (lock.clone(), theirs2)).unwrap();
    ours2.recv().await.unwrap();
    holder.kill().unwrap();
    assert!(holder.join().await.is_err());
    assert!(waiter.join().await.unwrap());
}

fn hold_permit_forever((sem, ready): (Semaphore, Connection<()>)) {
    let permit = sem.blocking_acquire().unwrap();
    ready.blocking_send(&()).unwrap();
    let _keep = permit;
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn a_permit_held_by_a_killed_process_comes_back_with_a_warning() {
    let sem = Semaphore::new(1).unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut holder = Process::spawn(hold_permit_forever, (sem.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    assert_eq!(sem.value(), 0);
    holder.kill().unwrap();
    assert!(holder.join().await.is_err());
    let permit = sem.acquire().await.unwrap();
    assert!(permit.reclaimed());
    drop(permit);
    assert_eq!(sem.value(), 1);
    assert!(!sem.acquire().await.unwrap().reclaimed());
}

#[tokio::test]
async fn timeouts_return_and_leave_state_consistent() {
    let lock = Lock::new().unwrap();
    let held = lock.lock().await.unwrap();
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(5)).await,
        Err(LockError::Timeout)
    ));
    let l2 = lock.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        matches!(
            l2.blocking_lock_timeout(Duration::from_millis(5)),
            Err(LockError::Timeout)
        )
    });
    assert!(blocking.await.unwrap());
    assert!(lock.is_locked());
    drop(held);
    assert!(!lock.is_locked());

    let sem = Semaphore::new(0).unwrap();
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(5)).await,
        Err(WaitError::Timeout)
    ));
    assert_eq!(sem.value(), 0);
    sem.release().unwrap();
    let s2 = sem.clone();
    let got = tokio::task::spawn_blocking(move || {
        s2.blocking_acquire_timeout(Duration::from_secs(60))
            .map(|p| p.forget())
            .is_ok()
    });
    assert!(got.await.unwrap());
    assert_eq!(sem.value(), 0);
}

type Everything = (
    Lock,
    RLock,
    Semaphore,
    BoundedSemaphore,
    Event,
    Condition,
    Barrier,
    Value<u32>,
    procpool::Array<u32>,
    procpool::RawArray<u32>,
    procpool::SharedMemory,
);

fn use_everything(x: Everything) -> u32 {
    let (lock, rlock, sem, bsem, event, cond, barrier, value, array, raw, shm) = x;
    drop(lock.blocking_lock().unwrap());
    drop(rlock.blocking_lock().unwrap());
    drop(sem.blocking_acquire().unwrap());
    drop(bsem.blocking_acquire().unwrap());
    event.set();
    {
        let _held = cond.lock().blocking_lock().unwrap();
        cond.notify_all().unwrap();
    }
    barrier.blocking_wait().unwrap();
    value.update(|v| *v += 1);
    array.set(0, 7);
    raw.set(1, 8);
    shm.write(0, b"hi");
    value.load()
}

#[tokio::test]
async fn every_primitive_passes_to_a_pool_task_and_a_process() {
    let all: Everything = (
        Lock::new().unwrap(),
        RLock::new().unwrap(),
        Semaphore::new(1).unwrap(),
        BoundedSemaphore::new(1).unwrap(),
        Event::new().unwrap(),
        Condition::new(Lock::new().unwrap()).unwrap(),
        Barrier::new(1).unwrap(),
        Value::new(0u32).unwrap(),
        procpool::Array::zeroed(2).unwrap(),
        procpool::RawArray::zeroed(2).unwrap(),
        procpool::SharedMemory::new(2).unwrap(),
    );
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    assert_eq!(pool.run(use_everything, all.clone()).await.unwrap(), 1);
    let mut p = Process::spawn(use_everything, all.clone()).unwrap();
    assert_eq!(p.join().await.unwrap(), 2);
    assert!(all.4.is_set());
    assert_eq!(all.8.to_vec(), [7, 0]);
    assert_eq!(all.9.to_vec(), [0, 8]);
    assert_eq!(all.10.to_vec(), b"hi");
    assert_eq!(all.2.value(), 1);
    pool.shutdown().await;
}

fn consume_rlock((cond, items, holding): (Condition<RLock>, Value<i64>, Event)) -> u64 {
    // Two levels held; waiting releases both and gives both back.
    cond.lock().acquire().unwrap();
    let guard = cond.lock().blocking_lock().unwrap();
    holding.set();
    let guard = cond
        .blocking_wait_while(guard, || items.load_unlocked() == 0)
        .unwrap();
    items.store_unlocked(items.load_unlocked() - 1);
    drop(guard);
    // One level is still held: another thread cannot take it yet.
    let lock = cond.lock().clone();
    let other = std::thread::spawn(move || lock.try_lock().is_err())
        .join()
        .unwrap();
    cond.lock().release().unwrap();
    other as u64
}

#[tokio::test]
async fn condition_over_an_rlock_restores_every_level() {
    let cond = Condition::new(RLock::new().unwrap()).unwrap();
    let items = Value::new(0i64).unwrap();
    let holding = Event::new().unwrap();
    let args = (cond.clone(), items.clone(), holding.clone());
    let mut consumer = Process::spawn(consume_rlock, args).unwrap();
    holding.wait().await.unwrap();
    // The consumer holds two levels; we get the lock only once its wait has released
    // both (with one released, this would wait forever).
    let g = cond.lock().lock().await.unwrap();
    items.store_unlocked(1);
    cond.notify_all().unwrap();
    drop(g);
    assert_eq!(consumer.join().await.unwrap(), 1);
    assert_eq!(items.load(), 0);
}

fn hold_rlock_forever((lock, ready): (RLock, Connection<()>)) {
    lock.acquire().unwrap();
    lock.acquire().unwrap();
    ready.blocking_send(&()).unwrap();
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn an_rlock_holder_killed_hands_over_with_owner_died() {
    let lock = RLock::new().unwrap();
    let (ours, theirs) = procpool::pipe::<()>().unwrap();
    let mut holder = Process::spawn(hold_rlock_forever, (lock.clone(), theirs)).unwrap();
    ours.recv().await.unwrap();
    holder.kill().unwrap();
    assert!(holder.join().await.is_err());
    let lock2 = lock.clone();
    let died = tokio::task::spawn_blocking(move || {
        matches!(lock2.blocking_lock(), Err(LockError::OwnerDied(_)))
    });
    assert!(died.await.unwrap());
    // Released by that guard's drop (one level, taken fresh): free again.
    assert!(lock.try_lock().is_ok());
}

/// Takes items with `blocking_wait_for` until it has taken `n`.
fn consume_with_wait_for((cond, items, n): (Condition, Value<i64>, u64)) -> u64 {
    for _ in 0..n {
        let guard = cond.lock().blocking_lock().unwrap();
        let guard = cond
            .blocking_wait_for(guard, || items.load_unlocked() > 0)
            .unwrap();
        items.store_unlocked(items.load_unlocked() - 1);
        drop(guard);
    }
    n
}

#[tokio::test]
async fn condition_wait_for_waits_until_the_predicate_holds() {
    let cond = Condition::new(Lock::new().unwrap()).unwrap();
    let items = Value::new(0i64).unwrap();
    let mut consumer =
        Process::spawn(consume_with_wait_for, (cond.clone(), items.clone(), 5)).unwrap();
    for _ in 0..5 {
        let _g = cond.lock().lock().await.unwrap();
        items.store_unlocked(items.load_unlocked() + 1);
        cond.notify(1).unwrap();
    }
    assert_eq!(consumer.join().await.unwrap(), 5);
    assert_eq!(items.load(), 0);

    // Async: a predicate already true does not wait; one that stays false times out
    // with the lock held, and says so.
    let g = cond.lock().lock().await.unwrap();
    let g = cond.wait_for(g, || true).await.unwrap();
    let (g, held) = cond
        .wait_for_timeout(g, || items.load_unlocked() > 0, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(!held);
    assert!(cond.lock().is_locked());
    drop(g);
}

fn wait_for_timeout_in_a_child((cond, flag): (Condition, Value<i64>)) -> (bool, bool) {
    let g = cond.lock().blocking_lock().unwrap();
    let (g, seen) = cond
        .blocking_wait_for_timeout(g, || flag.load_unlocked() == 1, Duration::from_secs(60))
        .unwrap();
    let (g, never) = cond
        .blocking_wait_for_timeout(g, || flag.load_unlocked() == 2, Duration::from_millis(20))
        .unwrap();
    drop(g);
    (seen, never)
}

#[tokio::test]
async fn condition_wait_for_timeout_returns_the_predicates_last_value() {
    let cond = Condition::new(Lock::new().unwrap()).unwrap();
    let flag = Value::new(0i64).unwrap();
    let mut child =
        Process::spawn(wait_for_timeout_in_a_child, (cond.clone(), flag.clone())).unwrap();
    // Set the flag under the lock and notify until the child has seen it (it may not
    // be waiting yet at the first notification; `wait_for` checks first).
    {
        let _g = cond.lock().lock().await.unwrap();
        flag.store_unlocked(1);
        cond.notify_all().unwrap();
    }
    assert_eq!(child.join().await.unwrap(), (true, false));
}

#[tokio::test]
async fn notify_without_the_lock_is_refused() {
    use procpool::sync::NotifyError;

    let cond = Condition::new(Lock::new().unwrap()).unwrap();
    assert!(matches!(cond.notify(1), Err(NotifyError::LockNotHeld)));
    assert!(matches!(cond.notify_all(), Err(NotifyError::LockNotHeld)));
    let g = cond.lock().lock().await.unwrap();
    cond.notify(1).unwrap();
    drop(g);

    // An RLock is held by a thread: another thread of this process may not notify.
    let rcond = Condition::new(RLock::new().unwrap()).unwrap();
    let held = rcond.lock().lock().await.unwrap();
    let other = rcond.clone();
    let from_another_thread = std::thread::spawn(move || other.notify(1)).join().unwrap();
    assert!(matches!(from_another_thread, Err(NotifyError::LockNotHeld)));
    rcond.notify(1).unwrap();
    drop(held);
}

/// Where the test whose process is the test binary (or the parent of this child)
/// logs barrier actions.
fn barrier_log() -> std::path::PathBuf {
    let test = procpool::parent_process().unwrap_or_else(std::process::id);
    std::env::temp_dir().join(format!("procpool-barrier-action-{test}.log"))
}

/// Appends this process's pid to the barrier log: which party ran the action.
struct LogAction;

impl procpool::BarrierAction for LogAction {
    fn run() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(barrier_log())
            .unwrap();
        writeln!(f, "{}", std::process::id()).unwrap();
    }
}

fn log_lines() -> usize {
    std::fs::read_to_string(barrier_log())
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Passes the barrier twice; after each pass, how many actions the log holds.
fn pass_twice(barrier: Barrier<LogAction>) -> Vec<usize> {
    (0..2)
        .map(|_| {
            barrier.blocking_wait().unwrap();
            log_lines()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_action_runs_once_per_generation_before_anyone_is_released() {
    let _ = std::fs::remove_file(barrier_log());
    let barrier = Barrier::with_action(3, LogAction).unwrap();
    let mut a = Process::spawn(pass_twice, barrier.clone()).unwrap();
    let mut b = Process::spawn(pass_twice, barrier.clone()).unwrap();
    let ours = tokio::task::spawn_blocking(move || pass_twice(barrier))
        .await
        .unwrap();
    // Every party, released from generation g, already sees g actions logged.
    assert_eq!(ours, [1, 2]);
    assert_eq!(a.join().await.unwrap(), [1, 2]);
    assert_eq!(b.join().await.unwrap(), [1, 2]);
    let log = std::fs::read_to_string(barrier_log()).unwrap();
    let runners: Vec<u32> = log.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(runners.len(), 2, "once per generation");
    let parties = [std::process::id(), a.pid(), b.pid()];
    assert!(runners.iter().all(|p| parties.contains(p)), "{runners:?}");
    std::fs::remove_file(barrier_log()).unwrap();
}

struct PanickingAction;

impl procpool::BarrierAction for PanickingAction {
    fn run() {
        panic!("the action failed");
    }
}

fn wait_on(barrier: Barrier<PanickingAction>) -> String {
    match barrier.blocking_wait() {
        Ok(i) => format!("passed {i}"),
        Err(WaitError::BrokenBarrier) => "broken".to_owned(),
        Err(WaitError::ActionPanicked(info)) => format!("ran it: {}", info.message),
        Err(e) => format!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_barrier_action_breaks_the_barrier() {
    let barrier = Barrier::with_action(2, PanickingAction).unwrap();
    let mut child = Process::spawn(wait_on, barrier.clone()).unwrap();
    let ours = tokio::task::spawn_blocking({
        let barrier = barrier.clone();
        move || wait_on(barrier)
    })
    .await
    .unwrap();
    let theirs = child.join().await.unwrap();
    let mut outcomes = [ours, theirs];
    outcomes.sort();
    assert_eq!(outcomes, ["broken", "ran it: the action failed"]);
    assert!(barrier.is_broken());
}
