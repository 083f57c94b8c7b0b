//! A worker that breaks the protocol fails only its task, with a typed error, and is
//! replaced; the parent never panics and allocates nothing for a lying length.
//!
//! The misbehaving worker is real: the task writes a forged frame header straight onto
//! its own control socket (the only socket a worker has open), then spins.

// Writing raw bytes to a borrowed fd found in /proc/self/fd.
#![allow(unsafe_code)]

use crate::common;

use procpool::{ProcessPoolExecutor, ProtocolError, TaskError};

/// Writes a 32-byte header (`len`, `kind`) to every socket fd of this worker.
fn forge_header((len, kind): (u64, u32)) -> u32 {
    let mut header = [0u8; 32];
    header[0..8].copy_from_slice(&len.to_le_bytes());
    header[8..12].copy_from_slice(&kind.to_le_bytes());
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|p| p.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if fd > 2 && is_socket {
            // SAFETY: `fd` is open in this process (listed just now) and the buffer is
            // a valid local array.
            unsafe { libc::write(fd, header.as_ptr().cast(), header.len()) };
        }
    }
    common::spin_forever(())
}

#[tokio::test(flavor = "current_thread")]
async fn an_oversized_frame_fails_the_task_and_replaces_the_worker() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let handle = pool.try_submit(forge_header, (u64::MAX / 2, 13)).unwrap();
    let liar = handle.started().await.unwrap();
    match handle.await {
        Err(TaskError::Protocol(ProtocolError::FrameTooLarge { len, limit })) => {
            assert_eq!(len, u64::MAX / 2);
            assert_eq!(limit, procpool::DEFAULT_MAX_FRAME);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(
        !common::exists(liar),
        "the lying worker was killed and reaped"
    );
    assert_ne!(pool.run(common::whoami, ()).await.unwrap(), liar);
    assert_eq!(pool.stats().worker_restarts, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_frame_kind_is_a_malformed_frame() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    match pool.run(forge_header, (0, 0xdead)).await {
        Err(TaskError::Protocol(ProtocolError::Malformed { reason })) => {
            assert!(reason.contains("57005"), "{reason}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_eq!(pool.run(|x: u8| x + 1, 1).await.unwrap(), 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_reply_to_another_task_is_unexpected() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    // A well-formed, empty `Done` header for task id 0, which was never sent.
    match pool.run(forge_header, (0, 13)).await {
        Err(TaskError::Protocol(ProtocolError::Unexpected { .. })) => {}
        other => panic!("expected Unexpected, got {other:?}"),
    }
    assert_eq!(pool.run(|x: u8| x + 1, 1).await.unwrap(), 2);
    pool.shutdown().await;
}
