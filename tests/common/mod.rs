//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]
// Registering a pidfd with tokio is unsafe (`AsyncFd::register_with_interest`).
#![allow(unsafe_code)]

use std::time::Duration;

/// An error and its causes, as a report prints them: each `Display`, then its
/// `source()`'s, joined by ": ".
pub fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Whether a process with this pid exists at all (running or zombie).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), if the pid exists.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(") ")?.1;
    after_comm.chars().next()
}

/// The parent pid from `/proc/<pid>/stat`.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

/// The process group from `/proc/<pid>/stat`.
pub fn pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(2)?.parse().ok()
}

/// Children of this process that are still running (not zombies).
pub fn live_children() -> Vec<u32> {
    children_where(|state| state != 'Z')
}

/// Children of this process that are zombies (exited, not reaped).
pub fn zombie_children() -> Vec<u32> {
    children_where(|state| state == 'Z')
}

/// SIGKILLs every live child of this process; how many it signalled.
pub fn kill_children() -> u64 {
    let mut n = 0;
    let me = std::process::id();
    for pid in live_children() {
        // The pool may reap the child and its pid be reused between the scan and the
        // kill: signal through a pidfd, once sure it names our child.
        let Ok(fd) = pidfd(pid) else { continue };
        if ppid(pid) != Some(me) {
            continue;
        }
        let rc = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
        if rc.is_ok() {
            n += 1;
        }
    }
    n
}

fn children_where(wanted: impl Fn(char) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if ppid(pid) == Some(me) && state(pid).is_some_and(&wanted) {
            out.push(pid);
        }
    }
    out
}

/// Waits until `pid` has exited and been reaped (its `/proc` entry is gone), as an
/// event: a pidfd reports `POLLHUP` (tokio: read-closed) once its process is reaped
/// (seen on this kernel, 6.18; older kernels report only the exit). The deadline only
/// guards against a hang: a pid still there after it is a zombie or an orphan, reported
/// with its state.
pub async fn wait_gone(pid: u32) {
    watch(pid, |ready| ready.is_read_closed(), "was never reaped").await;
    assert!(
        !exists(pid),
        "pid {pid} still in /proc (state {:?})",
        state(pid)
    );
}

/// Waits until `pid` has exited (it may still be a zombie), as an event: a pidfd
/// becomes readable when the process exits.
pub async fn wait_gone_or_zombie(pid: u32) {
    watch(
        pid,
        |ready| ready.is_readable() || ready.is_read_closed(),
        "is still running",
    )
    .await;
}

async fn watch(pid: u32, done: impl Fn(tokio::io::Ready) -> bool, what: &str) {
    let fd = match pidfd(pid) {
        Ok(fd) => fd,
        // ESRCH: already exited and reaped.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
        Err(e) => panic!("pidfd_open({pid}): {e}"),
    };
    // SAFETY: an OwnedFd is open and only it closes it; the AsyncFd owns it from here.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .unwrap();
    let wait = async {
        loop {
            let mut guard = fd.ready(tokio::io::Interest::READABLE).await.unwrap();
            if done(guard.ready()) {
                return;
            }
            guard.clear_ready();
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(60), wait).await;
    assert!(
        finished.is_ok(),
        "pid {pid} {what} (state {:?})",
        state(pid)
    );
}

pub fn pidfd(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid is positive");
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    let sig = rustix::process::Signal::from_named_raw(signal).expect("a named signal");
    let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid is positive");
    if let Err(e) = rustix::process::kill_process(target, sig) {
        panic!("kill({pid}, {signal}): {e}");
    }
}

/// Returns this process's pid: a task that tells which worker ran it.
pub fn whoami(_: ()) -> u32 {
    std::process::id()
}

/// Spins until the worker is killed.
pub fn spin_forever(_: ()) -> u32 {
    loop {
        std::hint::spin_loop();
    }
}

/// Sets `running`, then spins until the worker is killed: a task whose caller can
/// wait until the worker has really begun it.
#[allow(dead_code)]
pub fn signal_then_spin_forever(running: procpool::Event) -> u32 {
    running.set();
    loop {
        std::hint::spin_loop();
    }
}

/// Makes this process the subreaper of its descendants' orphans (process-wide: only
/// for a test alone in its binary), so a test can watch and reap grandchildren whose
/// parent it killed.
pub fn become_subreaper() {
    let me = rustix::process::getpid();
    if let Err(e) = rustix::process::set_child_subreaper(Some(me)) {
        panic!("PR_SET_CHILD_SUBREAPER: {e}");
    }
}

/// Waits for `pid`, a child or an orphan reparented to this subreaper, and reaps it.
pub fn reap(pid: u32) -> procpool::Exit {
    let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid is positive");
    let (_, status) = rustix::process::waitpid(Some(target), rustix::process::WaitOptions::empty())
        .unwrap_or_else(|e| panic!("waitpid({pid}): {e}"))
        .expect("waitpid without WNOHANG reports a status");
    match (status.terminating_signal(), status.exit_status()) {
        (Some(signal), _) => procpool::Exit::Signal(signal),
        (None, Some(code)) => procpool::Exit::Code(code),
        (None, None) => panic!("waitpid({pid}): neither exited nor killed"),
    }
}

/// A value whose serialisation always fails, for the encode-error paths.
#[derive(Debug)]
pub struct Unserialisable;

impl serde::Serialize for Unserialisable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be serialised"))
    }
}

impl<'de> serde::Deserialize<'de> for Unserialisable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unserialisable)
    }
}

/// Submits `n` tasks `f(go)` that hold their workers until `go` is set, and waits
/// until every one of them has started.
pub async fn start_held<F, R>(
    pool: &procpool::ProcessPoolExecutor,
    f: F,
    go: &procpool::Event,
    n: usize,
) -> Vec<procpool::TaskHandle<R>>
where
    F: procpool::Task<procpool::Event, R> + Copy,
    R: procpool::Message,
{
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(pool.submit(f, go.clone()).await.unwrap());
    }
    for h in &held {
        h.started().await.unwrap();
    }
    held
}

/// A pool of one worker (nothing sent ahead) held by a task that spins until it is
/// cancelled, and a queue of `queue_capacity` places: what fills the queue stays.
pub async fn held_pool(
    queue_capacity: usize,
) -> (procpool::ProcessPoolExecutor, procpool::TaskHandle<u32>) {
    let pool = procpool::ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(1)
        .queue_capacity(queue_capacity)
        .build()
        .unwrap();
    let running = procpool::Event::new().unwrap();
    let blocker = pool
        .try_submit(signal_then_spin_forever, running.clone())
        .unwrap();
    running.wait().await.unwrap();
    (pool, blocker)
}

/// A pool's counts add up: nothing queued or running, and every submitted item ended
/// once (completed, failed or cancelled).
pub fn assert_adds_up(stats: procpool::PoolStats) {
    assert_eq!(stats.queued, 0, "{stats:?}");
    assert_eq!(stats.running, 0, "{stats:?}");
    assert_eq!(
        stats.submitted,
        stats.completed + stats.failed + stats.cancelled,
        "{stats:?}"
    );
}

/// A xorshift generator: a storm strikes at irregular points, the same ones every run.
pub struct Dice(pub u64);

impl Dice {
    /// A number in `lo..hi`.
    pub fn roll(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// What a [`storm`] saw.
#[derive(Debug)]
pub struct Storm {
    /// Tasks that failed with `WorkerDied`.
    pub died: u64,
    /// Times `strike` ran.
    pub strikes: u64,
}

/// Submits tasks `0..n` (task `i` must return `i`), at most `window` in flight, and
/// after every `dice.roll(every.0, every.1)` results calls `strike` with the number
/// of strikes so far. Every task must resolve, with its value or `WorkerDied`.
pub async fn storm(
    n: u64,
    window: usize,
    dice: Dice,
    every: (u64, u64),
    submit: impl Fn(u64) -> procpool::TaskHandle<u64>,
    strike: impl FnMut(u64),
) -> Storm {
    let check = |i: u64, v: u64| assert_eq!(v, i);
    storm_checking(n, window, dice, every, submit, check, strike).await
}

/// As [`storm`], for tasks of any result: `check(i, value)` asserts that task `i`'s
/// value is right.
pub async fn storm_checking<R: serde::de::DeserializeOwned + 'static>(
    n: u64,
    window: usize,
    mut dice: Dice,
    every: (u64, u64),
    submit: impl Fn(u64) -> procpool::TaskHandle<R>,
    check: impl Fn(u64, R),
    mut strike: impl FnMut(u64),
) -> Storm {
    use futures::StreamExt;
    let mut strike_at = dice.roll(every.0, every.1);
    let (mut results, mut submitted) = (0u64, 0u64);
    let mut seen = Storm {
        died: 0,
        strikes: 0,
    };
    let mut in_flight = futures::stream::FuturesUnordered::new();
    while results < n {
        while submitted < n && in_flight.len() < window {
            let i = submitted;
            let handle = submit(i);
            in_flight.push(async move { (i, handle.await) });
            submitted += 1;
        }
        let Some((i, r)) = in_flight.next().await else {
            panic!("{results} results for {submitted} tasks, and none left in flight");
        };
        match r {
            Ok(v) => check(i, v),
            Err(procpool::TaskError::WorkerDied { .. }) => seen.died += 1,
            Err(e) => panic!("task {i}: {e:?}: only its value or WorkerDied may come"),
        }
        results += 1;
        if results == strike_at {
            strike(seen.strikes);
            seen.strikes += 1;
            strike_at += dice.roll(every.0, every.1);
        }
    }
    seen
}

/// The live processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| ppid(p) == Some(pid) && state(p) != Some('Z'))
        .collect()
}

/// Whether `pid` is a fork server's spare: forked ahead of the next request, not yet
/// a worker (it says so in its name).
pub fn is_spare(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "procpool-spare")
}

/// The server's spare. The server forks it right after it answers a request, so it
/// may be a moment late: looked for until it is there (or the server is gone).
pub fn spare_of(server: u32) -> u32 {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(&spare) = children_of(server).iter().find(|&&p| is_spare(p)) {
            return spare;
        }
        assert!(exists(server), "the server {server} is gone");
        assert!(std::time::Instant::now() < give_up, "no spare after 30 s");
        std::thread::yield_now();
    }
}

/// The server's children that are workers.
pub fn workers_of(server: u32) -> Vec<u32> {
    children_of(server)
        .into_iter()
        .filter(|&p| !is_spare(p))
        .collect()
}
