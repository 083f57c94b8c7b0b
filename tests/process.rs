//! `Process`: values, panics, exits, signals, timeouts, names, identity, pipes.

mod common;

use std::time::Duration;

use procpool::{CodecError, Exit, PanicInfo, Process, ProcessError, ProcessKind, Stdio};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Report {
    pid: u32,
    parent: Option<u32>,
    name: String,
    kind_is_child: bool,
    daemon: bool,
}

fn report(_: ()) -> Report {
    let me = procpool::current_process();
    Report {
        pid: me.pid,
        parent: procpool::parent_process(),
        name: me.name,
        kind_is_child: me.kind == ProcessKind::Child,
        daemon: me.daemon,
    }
}

fn sleep_forever(_: ()) -> u32 {
    loop {
        std::thread::park();
    }
}

fn panics(msg: String) -> u32 {
    panic!("{msg}")
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

#[tokio::test(flavor = "current_thread")]
async fn return_values_of_several_types() {
    let mut a = Process::spawn(|x: u64| x * 3, 14).unwrap();
    let mut b = Process::spawn(|s: String| s.repeat(2), "ab".to_string()).unwrap();
    let mut c = Process::spawn(
        |v: Vec<u16>| (v.len(), v.iter().map(|&x| u32::from(x)).sum::<u32>()),
        vec![1, 2, 3],
    )
    .unwrap();
    let mut d = Process::spawn(report, ()).unwrap();
    // A byte vector travels as the raw frame body, both ways.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut e = Process::spawn(
        |mut v: Vec<u8>| {
            v.reverse();
            v
        },
        bytes.clone(),
    )
    .unwrap();
    assert_eq!(
        e.join().await.unwrap(),
        bytes.iter().rev().copied().collect::<Vec<u8>>()
    );
    assert_eq!(a.join().await.unwrap(), 42);
    assert_eq!(b.join().await.unwrap(), "abab");
    assert_eq!(c.join().await.unwrap(), (3, 6));
    let r = d.join().await.unwrap();
    assert_eq!(r.pid, d.pid());
    assert_ne!(r.pid, std::process::id());
    assert_eq!(r.parent, Some(std::process::id()));
    assert_eq!(r.name, d.name());
    assert!(r.kind_is_child);
    assert!(!r.daemon);
    for exit in [a.exit_code(), b.exit_code(), c.exit_code(), d.exit_code()] {
        assert_eq!(exit, Some(Exit::Code(0)));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_is_reported_and_the_exit_code_is_1() {
    let mut p = Process::spawn(panics, "child failed".to_string()).unwrap();
    match p.join().await {
        Err(ProcessError::Panicked(PanicInfo {
            message, location, ..
        })) => {
            assert_eq!(message, "child failed");
            assert!(location.unwrap().starts_with("tests/process.rs:"));
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(p.exit_code(), Some(Exit::Code(1)));
}

#[tokio::test(flavor = "current_thread")]
async fn exit_7_is_exit_code_7() {
    let mut p = Process::spawn(exits, 7).unwrap();
    assert_eq!(
        p.join().await,
        Err(ProcessError::Died {
            exit: Exit::Code(7)
        })
    );
    assert_eq!(p.exit_code(), Some(Exit::Code(7)));
    assert!(!p.is_alive());
}

#[tokio::test(flavor = "current_thread")]
async fn terminate_ends_a_sleeping_child_with_sigterm() {
    let mut p = Process::spawn(sleep_forever, ()).unwrap();
    assert!(p.is_alive());
    assert_eq!(p.exit_code(), None);
    p.terminate().unwrap();
    assert_eq!(
        p.join().await,
        Err(ProcessError::Died {
            exit: Exit::Signal(libc::SIGTERM)
        })
    );
    assert!(!p.is_alive());
    assert_eq!(p.exit_code(), Some(Exit::Signal(libc::SIGTERM)));
    // Signalling a finished child is harmless.
    p.terminate().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn interrupt_ends_a_sleeping_child_with_sigint() {
    let mut p = Process::spawn(sleep_forever, ()).unwrap();
    p.interrupt().unwrap();
    assert_eq!(
        p.join().await,
        Err(ProcessError::Died {
            exit: Exit::Signal(libc::SIGINT)
        })
    );
}

#[tokio::test(flavor = "current_thread")]
async fn kill_ends_a_child_with_sigkill_and_send_signal_sends_any() {
    let mut p = Process::spawn(sleep_forever, ()).unwrap();
    p.kill().unwrap();
    assert_eq!(
        p.join().await,
        Err(ProcessError::Died {
            exit: Exit::Signal(libc::SIGKILL)
        })
    );
    let mut q = Process::spawn(sleep_forever, ()).unwrap();
    let bad = q.send_signal(100_000).unwrap_err();
    assert_eq!(
        bad.raw_os_error(),
        Some(libc::EINVAL),
        "a bad signal number is an error"
    );
    q.send_signal(libc::SIGUSR1).unwrap();
    assert_eq!(
        q.join().await,
        Err(ProcessError::Died {
            exit: Exit::Signal(libc::SIGUSR1)
        })
    );
}

#[tokio::test(flavor = "current_thread")]
async fn join_timeout_gives_up_and_the_child_keeps_running() {
    let mut p = Process::spawn(sleep_forever, ()).unwrap();
    let timeout = Duration::from_millis(50);
    assert_eq!(
        p.join_timeout(timeout).await,
        Err(ProcessError::TimedOut { after: timeout })
    );
    assert!(p.is_alive());
    assert!(common::exists(p.pid()));
    p.kill().unwrap();
    assert!(matches!(p.join().await, Err(ProcessError::Died { .. })));
    assert_eq!(p.join().await, Err(ProcessError::AlreadyJoined));
    assert_eq!(
        p.join_timeout(timeout).await,
        Err(ProcessError::AlreadyJoined)
    );
}

#[test]
fn blocking_join_works_without_a_runtime() {
    let mut p = Process::spawn(|x: i32| x - 1, 43).unwrap();
    assert_eq!(p.blocking_join().unwrap(), 42);
    assert_eq!(p.blocking_join(), Err(ProcessError::AlreadyJoined));
}

#[tokio::test(flavor = "current_thread")]
async fn default_names_count_up_and_builder_names_stick() {
    let mut a = Process::spawn(report, ()).unwrap();
    let mut b = Process::spawn(report, ()).unwrap();
    let n = |name: &str| {
        name.strip_prefix("Process-")
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(n(b.name()) > n(a.name()), "{} then {}", a.name(), b.name());
    let mut c = Process::builder()
        .name("indexer")
        .spawn(report, ())
        .unwrap();
    assert_eq!(c.name(), "indexer");
    assert_eq!(c.join().await.unwrap().name, "indexer");
    a.join().await.unwrap();
    b.join().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn active_children_lists_and_then_forgets_finished_children() {
    let mut p = Process::builder()
        .name("listed")
        .spawn(sleep_forever, ())
        .unwrap();
    let listed = procpool::active_children();
    let entry = listed
        .iter()
        .find(|c| c.pid == p.pid())
        .expect("listed while running");
    assert_eq!(entry.name, "listed");
    assert_eq!(entry.kind, ProcessKind::Child);
    p.kill().unwrap();
    let _ = p.join().await;
    assert!(procpool::active_children().iter().all(|c| c.pid != p.pid()));
}

fn try_to_spawn(_: ()) -> Result<u32, String> {
    match Process::spawn(|x: u32| x, 1) {
        Ok(_) => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_daemon_may_not_have_children() {
    let mut d = Process::builder()
        .daemon(true)
        .spawn(try_to_spawn, ())
        .unwrap();
    assert!(d.is_daemon());
    let err = d.join().await.unwrap().unwrap_err();
    assert!(
        err.contains("daemonic processes are not allowed to have children"),
        "{err}"
    );
    // Pool workers are daemonic too, as in Python.
    let pool = procpool::ProcessPoolExecutor::builder()
        .workers(1)
        .build()
        .unwrap();
    assert!(pool.run(try_to_spawn, ()).await.unwrap().is_err());
    pool.shutdown().await;
    // A non-daemonic child may.
    let mut ok = Process::spawn(try_to_spawn, ()).unwrap();
    assert_eq!(ok.join().await.unwrap(), Ok(0));
}

fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("line {i}");
    }
    eprintln!("done");
    lines
}

#[tokio::test(flavor = "current_thread")]
async fn piped_stdout_and_stderr_are_readable() {
    use tokio::io::AsyncReadExt;
    let mut p = Process::builder()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn(chatty, 3)
        .unwrap();
    let mut out = String::new();
    p.take_stdout()
        .unwrap()
        .into_async()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(out, "line 0\nline 1\nline 2\n");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut p.take_stderr().unwrap(), &mut err).unwrap();
    assert_eq!(err, "done\n");
    assert!(p.take_stdout().is_none());
    assert_eq!(p.join().await.unwrap(), 3);
}

async fn async_child(x: u32) -> u32 {
    tokio::task::yield_now().await;
    x + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_async_and_env() {
    let mut p = Process::spawn_async(async_child, 41).unwrap();
    assert_eq!(p.join().await.unwrap(), 42);
    let mut q = Process::builder()
        .env("PROCPOOL_CHILD_SETTING", "yes")
        .spawn(
            |k: String| std::env::var(k).ok(),
            "PROCPOOL_CHILD_SETTING".to_string(),
        )
        .unwrap();
    assert_eq!(q.join().await.unwrap().as_deref(), Some("yes"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_daemon_is_killed_and_a_dropped_non_daemon_runs_on() {
    let daemon = Process::builder()
        .daemon(true)
        .spawn(sleep_forever, ())
        .unwrap();
    let pid = daemon.pid();
    drop(daemon);
    common::wait_gone(pid).await;

    let mut survivor = Process::spawn(sleep_forever, ()).unwrap();
    let pid = survivor.pid();
    // Dropping a second handle-less child: it keeps running.
    let dropped = Process::spawn(sleep_forever, ()).unwrap();
    let dropped_pid = dropped.pid();
    drop(dropped);
    assert!(survivor.is_alive());
    assert_eq!(
        common::state(dropped_pid).map(|s| s != 'Z'),
        Some(true),
        "dropped non-daemon still runs"
    );
    common::signal(dropped_pid, libc::SIGKILL);
    common::wait_gone(dropped_pid).await; // reaped by procpool although dropped
    survivor.kill().unwrap();
    let _ = survivor.join().await;
    assert!(!common::exists(pid));
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_argument_and_result_travel() {
    let big = vec![7u8; 8 << 20];
    let mut p = Process::spawn(|v: Vec<u8>| v.into_iter().rev().collect::<Vec<u8>>(), big).unwrap();
    let back = p.join().await.unwrap();
    assert_eq!(back.len(), 8 << 20);
}

#[test]
fn an_argument_that_does_not_serialise_fails_spawn() {
    match Process::spawn(|_: common::Unserialisable| 0u8, common::Unserialisable) {
        Err(procpool::Error::Encode(CodecError { type_name, .. })) => {
            assert!(type_name.ends_with("Unserialisable"))
        }
        other => panic!("expected Encode, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn many_spawns_in_one_poll_of_a_task_do_not_livelock() {
    // `spawn` waits for procpool's supervisor thread from a task of this runtime, with
    // no await in between: past tokio's coop budget (128 polls per task poll) a
    // oneshot polled that way answered Pending for ever. (`blocking_join` did the
    // same; from a task it now panics, as tokio's blocking forms do.)
    let mut ps: Vec<_> = (0..300u32)
        .map(|i| Process::spawn(|x: u32| x + 1, i).unwrap())
        .collect();
    for (i, p) in ps.iter_mut().enumerate() {
        assert_eq!(p.join().await.unwrap(), i as u32 + 1);
    }
}

#[test]
fn blocking_joins_off_the_runtime() {
    let mut ps: Vec<_> = (0..50u32)
        .map(|i| Process::spawn(|x: u32| x + 1, i).unwrap())
        .collect();
    for (i, p) in ps.iter_mut().enumerate() {
        assert_eq!(p.blocking_join().unwrap(), i as u32 + 1);
    }
}
