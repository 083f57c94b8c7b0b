//! Unix sockets with file descriptors beside the bytes (`SCM_RIGHTS`), and `poll`.
//!
//! Every call here is non-blocking unless its name says otherwise: sockets that are
//! shared between processes share their file status flags, so procpool never flips
//! `O_NONBLOCK` on them and asks for non-blocking behaviour per call
//! (`MSG_DONTWAIT`) instead. Sends use `MSG_NOSIGNAL`: writing to a socket whose
//! peer is gone is an `EPIPE` error, never a `SIGPIPE`.
//!
//! # References
//! - <https://man7.org/linux/man-pages/man7/unix.7.html> (`SCM_RIGHTS`, `SCM_MAX_FD`)
//! - <https://man7.org/linux/man-pages/man3/cmsg.3.html>

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, Shutdown, SocketFlags,
    SocketType,
};

/// Most descriptors one `sendmsg` may carry (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Room for a control message holding [`MAX_FDS_PER_MESSAGE`] descriptors, aligned
/// for `cmsghdr` (for [`recv_raw`]).
#[repr(C, align(8))]
struct CmsgSpace([u8; cmsg_space(MAX_FDS_PER_MESSAGE)]);

const fn cmsg_space(nfds: usize) -> usize {
    // CMSG_SPACE is not a const fn in libc; this is its definition for Linux: the
    // header and the payload, each rounded up to the alignment of `size_t`.
    const fn round(n: usize) -> usize {
        let align = size_of::<usize>();
        (n + align - 1) & !(align - 1)
    }
    round(size_of::<libc::cmsghdr>()) + round(nfds * size_of::<RawFd>())
}

/// The socket type of a pair.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A byte stream (`SOCK_STREAM`): frames are delimited by procpool.
    Stream,
    /// Records (`SOCK_SEQPACKET`): each `send` is received whole by one `recv`.
    SeqPacket,
}

/// A connected pair of unix sockets, both close-on-exec.
pub(crate) fn pair(kind: Kind) -> io::Result<(OwnedFd, OwnedFd)> {
    let ty = match kind {
        Kind::Stream => SocketType::STREAM,
        Kind::SeqPacket => SocketType::SEQPACKET,
    };
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        ty,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends `data` with `fds` attached to its first byte. Returns how many bytes were
/// sent; when that is at least one, the descriptors went with them (the kernel holds
/// its own references; the caller may close its copies).
///
/// # Errors
/// `WouldBlock` when `nonblocking` and the socket buffer is full; `EPIPE` when the peer
/// is gone; `ETOOMANYREFS` when too many descriptors are in flight for this user.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    send_vectored(sock, &[data], fds, nonblocking)
}

/// Most buffers [`send_vectored`] takes in one call.
pub(crate) const MAX_PARTS: usize = 32;

/// [`send`] of up to [`MAX_PARTS`] buffers as if they were one, in one system call:
/// several small frames cost one `sendmsg`, and a large payload goes out from where
/// it is, without being copied behind a header first.
///
/// # Errors
/// As [`send`].
///
/// # Panics
/// With more than [`MAX_PARTS`] buffers.
pub(crate) fn send_vectored(
    sock: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS_PER_MESSAGE, "too many descriptors");
    assert!(parts.len() <= MAX_PARTS, "too many buffers");
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    let mut iov = [IoSlice::new(&[]); MAX_PARTS];
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = IoSlice::new(p);
    }
    // Only a message with descriptors needs a control buffer.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(if fds.is_empty() { &mut [] } else { &mut space });
    if !fds.is_empty() {
        let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed, "the buffer has room for MAX_FDS_PER_MESSAGE");
    }
    Ok(rustix::net::sendmsg(
        sock,
        &iov[..parts.len()],
        &mut control,
        flags,
    )?)
}

/// Receives into `buf`, appending any descriptors that arrive to `fds` (close-on-exec).
/// Returns the number of bytes received; 0 is end of stream.
///
/// # Errors
/// `WouldBlock` when `nonblocking` and nothing is there; `InvalidData` when
/// descriptors were cut off because more arrived than one message may carry (the
/// kernel closed the rest).
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its whole length.
    unsafe { recv_raw(sock, buf.as_mut_ptr(), buf.len(), fds, nonblocking) }
}

/// Like [`recv`], into the spare capacity of `vec` (at most `max` bytes), whose length
/// grows by what was received: a large message is read straight into its final
/// buffer, with no zeroing first.
pub(crate) fn recv_spare(
    sock: BorrowedFd<'_>,
    vec: &mut Vec<u8>,
    max: usize,
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let spare = vec.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: the spare capacity is valid for writes of `len` bytes; the kernel
    // writes, never reads, them.
    let n = unsafe { recv_raw(sock, spare.as_mut_ptr().cast(), len, fds, nonblocking)? };
    // SAFETY: recvmsg initialised the first `n <= len` bytes of the spare capacity.
    unsafe { vec.set_len(vec.len() + n) };
    Ok(n)
}

/// Copies the next bytes waiting on `sock` into `buf` without taking them (nor any
/// descriptors sent with them), without waiting: `WouldBlock` when none are there,
/// 0 at end of stream.
pub(crate) fn peek(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    loop {
        match rustix::net::recv(sock, &mut *buf, flags) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The one receive path, over libc rather than rustix: rustix's `recvmsg` takes only
/// initialised buffers, and a large frame is read into a `Vec`'s spare capacity
/// without zeroing it first.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_raw(
    sock: BorrowedFd<'_>,
    ptr: *mut u8,
    len: usize,
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    let mut iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    let mut space = CmsgSpace([0; cmsg_space(MAX_FDS_PER_MESSAGE)]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.0.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space.0) as _;
    // SAFETY: `iov` covers `len` writable bytes (the caller's contract); the control
    // buffer is ours, aligned, and outlives the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful recvmsg the kernel has set msg_controllen to the
    // bytes of control data written into `space`; CMSG_FIRSTHDR/NXTHDR walk only that
    // range, and each SCM_RIGHTS payload holds `(cmsg_len - CMSG_LEN(0)) / 4` fresh
    // descriptors that now belong to this process and to nothing else in it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were cut off (more than one message may carry)",
        ));
    }
    Ok(n as usize)
}

/// What to wait for in [`poll`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    Readable,
    Writable,
}

/// Waits until `fd` is readable or writable, or the timeout passes. Returns whether it
/// became ready (`false` on timeout). Hang-up and errors count as ready: the next
/// read or write reports them.
pub(crate) fn poll(fd: BorrowedFd<'_>, wait: Wait, timeout: Option<Duration>) -> io::Result<bool> {
    let events = match wait {
        Wait::Readable => PollFlags::IN,
        Wait::Writable => PollFlags::OUT,
    };
    let mut pfd = [PollFd::new(&fd, events)];
    let timeout = timeout.map(whole_ms);
    loop {
        match rustix::event::poll(&mut pfd, timeout.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `d` rounded up to whole milliseconds, as poll(2) itself would: a wait of 0.3 ms
/// must not become a busy poll.
fn whole_ms(d: Duration) -> rustix::event::Timespec {
    let ms = d.as_nanos().div_ceil(1_000_000).min(i64::MAX as u128) as i64;
    rustix::event::Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    }
}

/// Waits until at least one of `fds` is readable (or has hung up), or `timeout`
/// passes; which ones are, by index (empty on a timeout). `Some(ZERO)` only looks.
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = timeout.map(whole_ms);
    loop {
        match rustix::event::poll(&mut pfds, timeout.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.revents().is_empty())
        .map(|(i, _)| i)
        .collect())
}

/// The events `sock` has now, of `interest` and the ones always reported (hang-up,
/// error), without waiting.
fn events_now(sock: BorrowedFd<'_>, interest: PollFlags) -> io::Result<PollFlags> {
    let mut pfd = [PollFd::new(&sock, interest)];
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut pfd, Some(&now)) {
            Ok(_) => return Ok(pfd[0].revents()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the peer of a connected unix socket is gone entirely (`POLLHUP`): every
/// copy of the other end is closed. Unlike [`peer_closed`], a peer that only shut
/// down its writing half (a one-way pipe's receiver) is not gone.
pub(crate) fn hung_up(sock: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(events_now(sock, PollFlags::empty())?.intersects(PollFlags::HUP | PollFlags::ERR))
}

/// Whether the peer of a stream socket has closed it or shut down its writing side,
/// without waiting and without reading what it sent before.
pub(crate) fn peer_closed(sock: BorrowedFd<'_>) -> io::Result<bool> {
    let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
    Ok(events_now(sock, PollFlags::RDHUP)?.intersects(gone))
}

/// Shuts down the writing direction: the peer reads end of stream once it has read
/// what was sent, even while other processes still hold the socket.
pub(crate) fn shutdown_write(sock: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::net::shutdown(sock, Shutdown::Write)?)
}

/// Whether `sock` is a unix-domain socket (only those carry descriptors).
pub(crate) fn is_unix(sock: BorrowedFd<'_>) -> bool {
    rustix::net::sockopt::socket_domain(sock).is_ok_and(|d| d == AddressFamily::UNIX)
}

/// Duplicates `fd` (close-on-exec): a handle being sent keeps its own copy until the
/// message is out, whatever happens to the original.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn recv_all(sock: BorrowedFd<'_>, fds: &mut VecDeque<OwnedFd>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        recv_spare(sock, &mut buf, 64, fds, false).unwrap();
        buf
    }

    #[test]
    fn descriptors_travel_with_their_bytes() {
        let (a, b) = pair(Kind::Stream).unwrap();
        let (x, _y) = pair(Kind::Stream).unwrap();
        let sent = send(a.as_fd(), b"hi", &[x.as_fd(), x.as_fd()], false).unwrap();
        assert_eq!(sent, 2);
        let mut fds = VecDeque::new();
        assert_eq!(recv_all(b.as_fd(), &mut fds), b"hi");
        assert_eq!(fds.len(), 2);
        drop(a);
        assert_eq!(recv_all(b.as_fd(), &mut fds), b"");
    }

    #[test]
    fn nonblocking_recv_would_block_and_poll_times_out() {
        let (a, b) = pair(Kind::SeqPacket).unwrap();
        let mut fds = VecDeque::new();
        let mut buf = [0u8; 8];
        let e = recv(b.as_fd(), &mut buf, &mut fds, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(!poll(b.as_fd(), Wait::Readable, Some(Duration::ZERO)).unwrap());
        send(a.as_fd(), b"x", &[], true).unwrap();
        assert!(poll(b.as_fd(), Wait::Readable, None).unwrap());
    }

    #[test]
    fn sending_to_a_closed_peer_is_epipe_not_sigpipe() {
        let (a, b) = pair(Kind::Stream).unwrap();
        drop(b);
        let e = send(a.as_fd(), b"x", &[], false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    }
}
