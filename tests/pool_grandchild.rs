//! A task that forks a grandchild (without exec) and then dies: the grandchild holds
//! the worker's control socket, but the pool notices the worker's death through its
//! pidfd at once, fails the task, and kills the worker's process group, grandchild
//! included.
//!
//! Alone in its binary: it makes this process the subreaper of orphans, to reap the
//! grandchild and see how it ended.

// The task forks, which std does not wrap.
#![allow(unsafe_code)]

mod common;

use std::time::Duration;

use procpool::{Exit, ProcessPoolExecutor, RawValue, TaskError};

/// Forks a child that sleeps for ever (holding every inherited descriptor, the
/// control socket among them), publishes its pid, then exits with code 7.
fn fork_then_exit(grandchild: RawValue<u32>) -> u32 {
    // SAFETY: fork in the worker; the child calls only async-signal-safe functions
    // (pause, _exit) until it dies.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    grandchild.store(pid as u32);
    std::process::exit(7)
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_that_dies_under_a_grandchild_holding_its_socket_fails_its_task_at_once() {
    common::become_subreaper();
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let grandchild = RawValue::new(0u32).unwrap();
    let task = pool.try_submit(fork_then_exit, grandchild.clone()).unwrap();
    // Only a guard against a hang: before, the task waited for the grandchild's exit,
    // which never comes.
    let result = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the task resolved while the grandchild still held the socket");
    match result {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit, Exit::Code(7)),
        other => panic!("expected WorkerDied(exit code 7), got {other:?}"),
    }
    let pid = grandchild.load();
    assert_ne!(pid, 0);
    // Killed with its worker's process group, then reparented to us and reaped here.
    assert_eq!(common::reap(pid), Exit::Signal(libc::SIGKILL));
    pool.run(common::whoami, ()).await.unwrap();
    pool.shutdown().await;
}
