//! [`wait`]: until any of several connections, listeners and processes is ready
//! (Python's `multiprocessing.connection.wait`).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::Interest;

use super::Listener;
use crate::pipe::{Connection, Receiver};
use crate::sys;

/// Something [`wait`] can wait on: a [`Connection`] or a pipe [`Receiver`] (a message
/// to receive, or end of stream), a [`Listener`] (a peer to accept), or a process's
/// [`Sentinel`](crate::process::Sentinel) (it ended). Sealed.
pub trait Waitable: sealed::Sealed {
    /// The descriptor that becomes readable when it is ready.
    #[doc(hidden)]
    fn ready_fd(&self) -> BorrowedFd<'_>;

    /// Whether it is ready, if it can tell without its descriptor (a connection:
    /// a message read ahead or in its ring); `None` to poll the descriptor.
    #[doc(hidden)]
    fn ready_now(&self) -> io::Result<Option<bool>> {
        Ok(None)
    }

    /// Makes its descriptor show readiness while the guard lives (a connection with
    /// a ring: its senders then wake it through the socket).
    #[doc(hidden)]
    fn watch(&self) -> sealed::Watch<'_> {
        sealed::Watch { _sleeping: None }
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}

    /// What [`Waitable::watch`](super::Waitable::watch) holds.
    #[derive(Debug)]
    pub struct Watch<'a> {
        pub(crate) _sleeping: Option<crate::pipe::ring::Sleeping<'a>>,
    }
}

impl<S, R> sealed::Sealed for Connection<S, R> {}

impl<S, R> Waitable for Connection<S, R> {
    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.socket()
    }

    fn ready_now(&self) -> io::Result<Option<bool>> {
        self.ready().map(Some)
    }

    fn watch(&self) -> sealed::Watch<'_> {
        sealed::Watch {
            _sleeping: self.watching(),
        }
    }
}

impl<T> sealed::Sealed for Receiver<T> {}

impl<T> Waitable for Receiver<T> {
    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.connection().socket()
    }

    fn ready_now(&self) -> io::Result<Option<bool>> {
        self.connection().ready().map(Some)
    }

    fn watch(&self) -> sealed::Watch<'_> {
        sealed::Watch {
            _sleeping: self.connection().watching(),
        }
    }
}

impl sealed::Sealed for Listener {}

impl Waitable for Listener {
    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.socket_fd()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no
/// limit); returns the indices of those that are ready, in order (empty after a
/// timeout, and at once for no objects: nothing could ever become ready).
/// Python's `multiprocessing.connection.wait`, with indices for objects.
///
/// Ready means a receive or accept would not wait: a message (or end of stream) on a
/// connection, a peer at a listener (its handshake is still to come), an ended
/// process behind a sentinel.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use procpool::connection::wait;
///
/// let (a, a_peer) = procpool::duplex::<u8, u8>()?;
/// let (b, b_peer) = procpool::duplex::<u8, u8>()?;
/// b_peer.send(&7).await?;
/// assert_eq!(wait(&[&a, &b], None).await?, [1]);
/// assert_eq!(b.recv().await?, 7);
/// assert!(wait(&[&a, &b], Some(Duration::from_millis(10))).await?.is_empty());
/// # drop(a_peer);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// A system error while registering or polling.
///
/// # Cancel safety
/// Cancel safe: it only watches.
pub async fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let now = ready_now(objects)?;
    if !now.is_empty() || timeout == Some(Duration::ZERO) {
        return Ok(now);
    }
    // Duplicates registered with tokio for this wait: the objects' own descriptors may
    // be registered elsewhere (epoll keys on the descriptor).
    let watched = objects
        .iter()
        .map(|o| {
            let dup = sys::sock::dup(o.ready_fd())?;
            sys::proc::async_fd(dup, Interest::READABLE)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let _watching: Vec<_> = objects.iter().map(|o| o.watch()).collect();
    let until_ready = async {
        loop {
            // Looked at after the watches began: nothing sent since is missed.
            let now = ready_now(objects)?;
            if !now.is_empty() {
                return Ok::<_, io::Error>(now);
            }
            let mut readable: FuturesUnordered<_> = watched.iter().map(|w| w.readable()).collect();
            if let Some(guard) = readable.next().await {
                // Readable but not ready (a connection's nudge, now dropped): cleared,
                // so the next wait is for new bytes.
                guard?.clear_ready();
            }
        }
    };
    match timeout {
        None => until_ready.await,
        Some(t) => match tokio::time::timeout(t, until_ready).await {
            Ok(r) => r,
            Err(_) => Ok(Vec::new()),
        },
    }
}

/// Blocking form of [`wait`].
///
/// # Errors
/// As [`wait`].
///
/// # Panics
/// If called from an async context, where it would stall the runtime; `.await`
/// [`wait`] there.
#[track_caller]
pub fn blocking_wait(
    objects: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    crate::blocking::assert_may_block("blocking_wait", "wait");
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let _watching: Vec<_> = objects.iter().map(|o| o.watch()).collect();
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.ready_fd()).collect();
    loop {
        let now = ready_now(objects)?;
        if !now.is_empty() {
            return Ok(now);
        }
        let Some(left) = crate::blocking::remaining(deadline) else {
            return Ok(Vec::new());
        };
        if sys::sock::poll_readable(&fds, left)?.is_empty() {
            return Ok(Vec::new());
        }
    }
}

/// The objects ready now, without waiting.
fn ready_now(objects: &[&dyn Waitable]) -> io::Result<Vec<usize>> {
    let mut ready = Vec::new();
    let mut polled = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        match o.ready_now()? {
            Some(true) => ready.push(i),
            Some(false) => {}
            None => polled.push(i),
        }
    }
    if !polled.is_empty() {
        let fds: Vec<BorrowedFd<'_>> = polled.iter().map(|&i| objects[i].ready_fd()).collect();
        let found = sys::sock::poll_readable(&fds, Some(Duration::ZERO))?;
        ready.extend(found.into_iter().map(|k| polled[k]));
    }
    ready.sort_unstable();
    Ok(ready)
}
