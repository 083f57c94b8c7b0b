//! Process-level calls: pidfds, signal dispositions, the parent-death signal, and
//! moving the control socket off stdin in a freshly started worker.
//!
//! Each function documents the invariant its unsafe block relies on. None of them runs
//! between `fork` and `exec`: workers are started with `posix_spawn` semantics (std's
//! `Command` without `pre_exec`), and everything a worker sets up for itself happens
//! after `exec`, in the worker.
//!
//! # References
//! - <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>
//! - <https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html>
//! - <https://man7.org/linux/man-pages/man2/fcntl.2.html>

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

/// Ignores `SIGPIPE`, as std does for a normal `main`: a write to a closed socket then
/// fails with `EPIPE` instead of killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: `signal` with `SIG_IGN` installs no handler code; it only changes the
    // disposition, which is process-wide state nothing else in a fresh worker relies on.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Asks the kernel to send `SIGKILL` to this process when the thread that spawned it
/// exits. procpool spawns from one thread that lives as long as the process.
pub(crate) fn kill_me_when_parent_dies() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value; no pointers are passed.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    Ok(())
}

/// The calling thread's id (`gettid(2)`): which thread of this process holds an
/// `RLock`.
pub(crate) fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u64
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`, or `/dev/urandom` where
/// that system call is refused), blocking only until the pool is initialised at boot.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of its length; flags 0.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // No getrandom(2) here (a seccomp profile refusing it, an old kernel):
                // the same source through its device.
                Some(libc::ENOSYS | libc::EPERM) => {
                    use std::io::Read;
                    return std::fs::File::open("/dev/urandom")?.read_exact(rest);
                }
                _ => return Err(e),
            }
        }
        done += n as usize;
    }
    Ok(())
}

/// The pid of this process's parent (`getppid(2)`).
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let pid = unsafe { libc::getppid() };
    pid as u32
}

/// Takes the socket a worker inherited as its stdin: moves it to a fresh close-on-exec
/// fd and puts `/dev/null` on fd 0, so the task code sees an ordinary empty stdin.
///
/// # Errors
/// Fails if fd 0 is not a socket (the process was not started by procpool) or a call
/// fails.
pub(crate) fn take_socket_from_stdin() -> io::Result<OwnedFd> {
    // SAFETY: `stat` is a plain-old-data struct; zeroed is a valid value for it, and
    // fstat writes into it only through the pointer we pass for this call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is only inspected; `st` is a valid, writable `stat`.
    cvt(unsafe { libc::fstat(0, &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "procpool worker: stdin is not the control socket",
        ));
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates fd 0 (open, checked above) to a new fd >= 3.
    let moved = cvt(unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `moved` was just returned by fcntl and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(moved) };
    // SAFETY: the path is a valid NUL-terminated C string.
    let null = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: `null` is a valid fd we own; dup2 atomically replaces fd 0 (our copy of
    // the socket, already duplicated above) with it. `null` is closed right after.
    let dup = unsafe { libc::dup2(null, 0) };
    // SAFETY: `null` is ours and no longer needed (fd 0 now refers to the same file).
    unsafe { libc::close(null) };
    cvt(dup)?;
    Ok(socket)
}

/// Opens a pidfd for `pid`, a child of this process that has not been reaped yet (so
/// the pid cannot have been reused). It becomes readable when the child exits.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd (opened with O_CLOEXEC) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The conventional name of a signal (`"SIGKILL"`), or `None` for an unusual number.
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// Registers an owned fd with the current tokio reactor for readiness to read.
///
/// # Errors
/// Fails outside a runtime with I/O enabled, or if epoll refuses the fd.
pub(crate) fn async_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    async_fd(fd, tokio::io::Interest::READABLE)
}

/// Registers `fd` with the current tokio reactor for `interest`.
pub(crate) fn async_fd(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open fd that only it closes, and its `as_raw_fd`
    // always returns that same fd; the `AsyncFd` takes ownership of it, so the fd stays
    // open and unchanged for as long as it is registered.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into())
}

/// Sends `signal` to the process behind `pidfd`. Unlike `kill(pid)`, this can never
/// reach a different process that reused the pid after ours was reaped.
///
/// # Errors
/// `ESRCH` if the process has been reaped, `EINVAL` for a bad signal number.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: the fd is borrowed for the call; the info pointer may be null (the kernel
    // then fills in a SI_USER siginfo), and flags must be 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to every process in the process group `pgid`: a worker and whatever
/// it started that stayed in its group.
///
/// Call it only while the group's leader (the process whose pid is `pgid`) is not yet
/// reaped: until then its pid, and so the group id, cannot name anyone else.
///
/// # Errors
/// `ESRCH` if the group has no member left; `EINVAL` for a `pgid` of 0 or 1, which would
/// name our own group or every process.
pub(crate) fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let Ok(id) = libc::pid_t::try_from(pgid) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    if id <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill takes plain integers; `-id` with `id > 1` names exactly the process
    // group `id`, never "every process" (-1) nor our own group (0).
    cvt(unsafe { libc::kill(-id, signal) })?;
    Ok(())
}

/// How the process behind `pidfd` ended, if it has, *without* reaping it
/// (`waitid(P_PIDFD, WEXITED | WNOHANG | WNOWAIT)`), so the reaper still gets the
/// status.
pub(crate) fn pidfd_peek_exit(pidfd: BorrowedFd<'_>) -> io::Result<Option<crate::Exit>> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value, and `si_pid` stays
    // zero when no child has changed state (waitid(2), WNOHANG).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t and the fd is borrowed for the call.
    cvt(unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    })?;
    // SAFETY: after a successful waitid the kernel has written a SIGCHLD siginfo (or
    // left it zeroed), for which si_pid and si_status are the valid union members.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => crate::Exit::Code(status),
        _ => crate::Exit::Signal(status),
    }))
}
