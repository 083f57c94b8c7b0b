//! Process-level calls: pidfds, signal dispositions, the parent-death signal, and
//! moving the control socket off stdin in a freshly started worker.
//!
//! Each function documents the invariant its unsafe block relies on. None of them runs
//! between `fork` and `exec`: workers are started with `posix_spawn` semantics (std's
//! `Command` without `pre_exec`), and everything a worker sets up for itself happens
//! after `exec`, in the worker. The one `fork` without `exec` is the fork server's
//! ([`fork`]), which refuses to run in a process with more than one thread.
//!
//! # References
//! - <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>
//! - <https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html>
//! - <https://man7.org/linux/man-pages/man2/fcntl.2.html>

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

/// Ignores `SIGPIPE`, as std does for a normal `main`: a write to a closed socket then
/// fails with `EPIPE` instead of killing the process. (rustix has no safe call for
/// signal dispositions.)
pub(crate) fn ignore_sigpipe() {
    // SAFETY: `signal` with `SIG_IGN` installs no handler code; it only changes the
    // disposition, which is process-wide state nothing else in a fresh worker relies on.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The hook [`on_abort`] installed.
static ABORT_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Calls `hook` when this process is about to die of `SIGABRT` (`abort()`, which is
/// how Rust ends a process whose allocation failed), then lets it die of it: the
/// handler is reset on its first call, and `abort()` raises the signal again. The
/// hook runs in a signal handler: it may only do what is async-signal-safe (read
/// `errno`, store to an atomic). A second call keeps the first hook.
pub(crate) fn on_abort(hook: fn()) -> io::Result<()> {
    let _ = ABORT_HOOK.set(hook);
    // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct (no
    // handler, empty flags); the fields that matter are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = abort_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESETHAND;
    // SAFETY: `sa_mask` is a valid, exclusively borrowed `sigset_t`.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
    }
    // SAFETY: the handler is an `extern "C" fn(c_int)` that lives for the whole
    // program and only reads a `OnceLock` (an atomic load once it is set) and calls
    // the hook, which `on_abort`'s contract keeps async-signal-safe; the old action is
    // not asked for (null).
    let rc = unsafe { libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

extern "C" fn abort_handler(_signal: libc::c_int) {
    if let Some(hook) = ABORT_HOOK.get() {
        hook();
    }
}

/// This thread's `errno`.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sets this thread's `errno` to 0, so that a later reading of it says what happened
/// after this point.
pub(crate) fn clear_errno() {
    // SAFETY: `__errno_location` returns the calling thread's own `errno`, valid for
    // the life of the thread; writing an `int` there is what every libc call does.
    unsafe {
        *libc::__errno_location() = 0;
    }
}

/// Asks the kernel to send `SIGKILL` to this process when the thread that spawned it
/// exits. procpool spawns from one thread that lives as long as the process.
pub(crate) fn kill_me_when_parent_dies() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    Ok(())
}

/// The calling thread's id (`gettid(2)`): which thread of this process holds an
/// `RLock`.
pub(crate) fn thread_id() -> u64 {
    rustix::thread::gettid().as_raw_nonzero().get() as u64
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`, or `/dev/urandom` where
/// that system call is refused), blocking only until the pool is initialised at boot.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        match rustix::rand::getrandom(&mut *rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            // No getrandom(2) here (a seccomp profile refusing it, an old kernel):
            // the same source through its device.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                use std::io::Read;
                return std::fs::File::open("/dev/urandom")?.read_exact(rest);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The pid of this process's parent (`getppid(2)`).
pub(crate) fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// Takes the socket a worker inherited as its stdin: moves it to a fresh close-on-exec
/// fd and puts `/dev/null` on fd 0, so the task code sees an ordinary empty stdin.
///
/// # Errors
/// Fails if fd 0 is not a socket (the process was not started by procpool) or a call
/// fails.
pub(crate) fn take_socket_from_stdin() -> io::Result<OwnedFd> {
    let stdin = rustix::stdio::stdin();
    let st = rustix::fs::fstat(stdin)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "procpool worker: stdin is not the control socket",
        ));
    }
    let socket = rustix::io::fcntl_dupfd_cloexec(stdin, 3)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // Atomically replaces fd 0 (our copy of the socket, duplicated above); `null` is
    // closed when it drops.
    rustix::stdio::dup2_stdin(&null)?;
    Ok(socket)
}

/// Opens a pidfd for `pid`, a child of this process that has not been reaped yet (so
/// the pid cannot have been reused). It becomes readable when the child exits.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(
        pid_of(pid)?,
        PidfdFlags::empty(),
    )?)
}

/// `pid` as a rustix [`Pid`]: positive and in range, else `EINVAL`.
fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
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
    if let Some(named) = Signal::from_named_raw(signal) {
        rustix::process::pidfd_send_signal(pidfd, named)?;
        return Ok(());
    }
    // A real-time or otherwise unnamed signal, which rustix cannot express safely
    // (its `Signal` excludes the range libc reserves): the raw call, where the kernel
    // validates the number.
    //
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

/// Sends `SIGKILL` to every process in the process group `pgid`: a worker and
/// whatever it started that stayed in its group.
///
/// Call it only while the group's leader (the process whose pid is `pgid`) is not yet
/// reaped: until then its pid, and so the group id, cannot name anyone else.
///
/// # Errors
/// `ESRCH` if the group has no member left; `EINVAL` for a `pgid` of 0 or 1, which would
/// name our own group or every process.
pub(crate) fn kill_group(pgid: u32) -> io::Result<()> {
    let pgid = pid_of(pgid)?;
    if pgid.is_init() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    rustix::process::kill_process_group(pgid, Signal::KILL)?;
    Ok(())
}

/// How the process behind `pidfd` ended, if it has, *without* reaping it
/// (`waitid(P_PIDFD, WEXITED | WNOHANG | WNOWAIT)`), so the reaper still gets the
/// status.
pub(crate) fn pidfd_peek_exit(pidfd: BorrowedFd<'_>) -> io::Result<Option<crate::Exit>> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    let Some(status) = rustix::process::waitid(WaitId::PidFd(pidfd), options)? else {
        return Ok(None);
    };
    Ok(match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => Some(crate::Exit::Code(code)),
        (None, Some(signal)) => Some(crate::Exit::Signal(signal)),
        // Not an exit (stopped or continued): not asked for, not reported.
        (None, None) => None,
    })
}

/// Forks this process, which must have one thread: `Ok(None)` in the child,
/// `Ok(Some(pid))` in the parent. For the fork server, whose loop runs before `main`
/// and starts no thread.
///
/// # Errors
/// `EAGAIN`/`ENOMEM` from the kernel; `EPERM` if this process has more than one thread
/// (a child of a threaded process may only call async-signal-safe functions, and a
/// worker calls everything).
pub(crate) fn fork() -> io::Result<Option<u32>> {
    if threads()? != 1 {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    // SAFETY: this process has a single thread (checked above, and no other thread can
    // appear meanwhile: only this thread could create one), so no lock is held by a
    // thread that would be missing in the child, and the child may run any code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// How many threads this process has: procfs counts them in the link count of
/// `/proc/self/task` (two plus one per thread).
fn threads() -> io::Result<u64> {
    let st = rustix::fs::stat("/proc/self/task")?;
    Ok((st.st_nlink as u64).saturating_sub(2))
}

/// Closes every descriptor from `first` up, as a freshly forked worker does with what
/// it inherited from the fork server beyond its stdio.
pub(crate) fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; the caller (a process just forked,
    // single-threaded) owns every descriptor at or above `first` and drops no
    // `OwnedFd` of them afterwards (it leaves the fork server's loop for good).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `fd` on this process's stdin (fd 0), the way a worker expects its control
/// socket.
pub(crate) fn set_stdin(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::stdio::dup2_stdin(fd)?)
}

/// This process's stdin, borrowed (a forked spare reads its request there).
pub(crate) fn stdin() -> BorrowedFd<'static> {
    rustix::stdio::stdin()
}

/// The name of this thread (of the process, in a single-threaded one), as `ps` shows
/// it: at most 15 bytes.
pub(crate) fn name() -> io::Result<std::ffi::CString> {
    Ok(rustix::thread::name()?)
}

/// Renames this thread (the process, in a single-threaded one); cut to 15 bytes.
pub(crate) fn set_name(name: &std::ffi::CStr) -> io::Result<()> {
    Ok(rustix::thread::set_name(name)?)
}

/// Makes this process the leader of a process group of its own.
pub(crate) fn own_process_group() -> io::Result<()> {
    Ok(rustix::process::setpgid(None, None)?)
}

/// Sends `SIGKILL` to `pid`, a child of this process that is not reaped yet (so the
/// pid is still its own).
pub(crate) fn kill_child(pid: u32) -> io::Result<()> {
    Ok(rustix::process::kill_process(pid_of(pid)?, Signal::KILL)?)
}

/// Reaps the child `pid`, which has exited, and returns its raw wait status (what
/// `std::os::unix::process::ExitStatusExt::from_raw` takes).
pub(crate) fn reap_child(pid: u32) -> io::Result<i32> {
    loop {
        match rustix::process::waitpid(Some(pid_of(pid)?), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(status.as_raw()),
            Ok(None) => return Err(io::Error::from_raw_os_error(libc::ECHILD)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on this machine, so
/// that a time one process writes into shared memory means the same to another (an
/// `Instant` cannot travel).
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}
