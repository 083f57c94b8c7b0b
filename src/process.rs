//! [`Process`]: one child process running one function (Python's
//! `multiprocessing.Process`), typed and async; and what a process knows about itself
//! ([`current_process`], [`parent_process`], [`active_children`]).
//!
//! A child is this executable started again, like a pool worker (see the crate docs),
//! that runs one function and exits: code 0 when it returned, 1 when it panicked (as
//! Python's exit code 1 for an exception), or whatever `exit` it called. `spawn` is
//! Python's `Process(target=…, args=…)` followed by `start()`; [`Process::join`] returns
//! the function's value, which Python cannot.
//!
//! Every child is watched from procpool's supervisor thread (see
//! [`crate::supervisor`]), so a `Process` works from async and from blocking code alike,
//! and a child is reaped when it ends even if its `Process` value was dropped.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

pub use std::process::Stdio;

use crate::error::{CodecError, Error, Exit, PanicInfo, ProtocolError};
use crate::spawn;
use crate::supervisor;
use crate::sys;
use crate::task::{self, AsyncTask, Message, Task, Trampoline};
use crate::wire::stream::{Frame, FrameReader, FrameWriter};
use crate::wire::{self, handles, value, Failure, Hello, Kind, Payload, ReadError, FLAG_FAILED};
use crate::worker::identity;

// ---------------------------------------------------------------------------------
// Who am I
// ---------------------------------------------------------------------------------

/// What kind of procpool process this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProcessKind {
    /// A process procpool did not start (Python's `MainProcess`).
    Main,
    /// A worker of a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor).
    PoolWorker,
    /// A child started with [`Process::spawn`].
    Child,
}

/// A process as procpool sees it: the answer of [`current_process`] and the items of
/// [`active_children`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// `MainProcess`, `PoolWorker-N`, `Process-N` or the name given to the builder.
    pub name: String,
    /// The process id.
    pub pid: u32,
    /// What started it.
    pub kind: ProcessKind,
    /// Whether it is daemonic: killed when its parent exits, and not allowed to start
    /// children of its own. Pool workers are daemonic, as in Python.
    pub daemon: bool,
}

/// This process: name, pid, kind, daemon flag (Python's
/// `multiprocessing.current_process()`).
///
/// ```
/// let me = procpool::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.kind, procpool::ProcessKind::Main);
/// ```
pub fn current_process() -> ProcessInfo {
    let pid = std::process::id();
    match identity::get() {
        None => ProcessInfo {
            name: "MainProcess".to_owned(),
            pid,
            kind: ProcessKind::Main,
            daemon: false,
        },
        Some(id) => {
            let (name, one_shot) = id.name.get().cloned().unwrap_or_default();
            ProcessInfo {
                name,
                pid,
                kind: if one_shot {
                    ProcessKind::Child
                } else {
                    ProcessKind::PoolWorker
                },
                daemon: id.daemon,
            }
        }
    }
}

/// The pid of the process that started this one, if procpool started it (Python's
/// `multiprocessing.parent_process()`, which is `None` in the main process).
pub fn parent_process() -> Option<u32> {
    identity::get().map(|id| id.parent)
}

/// Children started with [`Process::spawn`] in this process that are still running
/// (Python's `multiprocessing.active_children()`). Finished ones are forgotten here;
/// procpool has already reaped them or is about to.
pub fn active_children() -> Vec<ProcessInfo> {
    let mut children = registry().lock().unwrap_or_else(|p| p.into_inner());
    children.retain(|c| c.is_alive());
    children
        .iter()
        .map(|c| ProcessInfo {
            name: c.name.clone(),
            pid: c.pid,
            kind: ProcessKind::Child,
            daemon: c.daemon,
        })
        .collect()
}

fn registry() -> &'static Mutex<Vec<Arc<Shared>>> {
    static CHILDREN: OnceLock<Mutex<Vec<Arc<Shared>>>> = OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(Vec::new()))
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Why [`Process::join`] has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The function panicked; the child exited with code 1.
    #[error("the child panicked: {0}")]
    Panicked(PanicInfo),
    /// The child ended without returning a value: killed by a signal
    /// ([`terminate`](Process::terminate), [`kill`](Process::kill), a crash) or
    /// `exit` called by the function.
    #[error("the child ended without a result ({exit})")]
    Died {
        /// How it ended.
        exit: Exit,
    },
    /// The argument could not be serialised (in the parent) or the result (in the
    /// child); see [`TaskError::Encode`](crate::TaskError::Encode).
    #[error("could not serialise {0}")]
    Encode(CodecError),
    /// The argument (in the child) or the result (in the parent) could not be
    /// deserialised.
    #[error("could not deserialise {0}")]
    Decode(CodecError),
    /// The child sent something the parent could not accept; it was killed.
    #[error("the child broke the protocol and was killed")]
    Protocol(#[source] ProtocolError),
    /// The child could not build the tokio runtime for an async function.
    #[error("the child could not build its tokio runtime: {reason}")]
    WorkerRuntime {
        /// The I/O error's text.
        reason: String,
    },
    /// [`join_timeout`](Process::join_timeout) gave up waiting; the child runs on and
    /// can be joined again.
    #[error("the child is still running after {after:?}; join again to keep waiting")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The process was already joined; its value was returned then.
    #[error("the process was already joined")]
    AlreadyJoined,
}

impl From<Failure> for ProcessError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Panicked(p) => ProcessError::Panicked(p),
            Failure::Encode(e) => ProcessError::Encode(e),
            Failure::Decode(e) => ProcessError::Decode(e),
            Failure::Runtime { reason } => ProcessError::WorkerRuntime { reason },
            Failure::UnknownFunction { reason }
            | Failure::InitializerFailed { message: reason } => {
                ProcessError::Protocol(ProtocolError::Unexpected { what: reason })
            }
            Failure::LimitRefused { limit, errno } => {
                ProcessError::Protocol(ProtocolError::Unexpected {
                    what: format!("a Process child refused its {limit} (errno {errno})"),
                })
            }
        }
    }
}

/// A child's end, to wait on: [`Process::sentinel`] (Python's `Process.sentinel`).
/// Readable (`POLLIN`) once the child has exited; it owns a pidfd, so it names that
/// one child even after its pid is reused.
#[derive(Debug)]
pub struct Sentinel(OwnedFd);

impl std::os::fd::AsFd for Sentinel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl crate::connection::sealed::Sealed for Sentinel {}

impl crate::connection::Waitable for Sentinel {
    fn ready_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

// ---------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------

/// Options for [`Process::spawn`]: name, daemon flag, environment, stdout and stderr.
///
/// # Why no separate `start()`
/// Python builds a `Process(target, args)` and starts it later with `start()`. Here the
/// builder is the process not started yet: configure it, keep it as long as you like,
/// and [`spawn`](Self::spawn) starts the child and returns its [`Process`]. So a
/// `Process` value always names a child that was started: its [`pid`](Process::pid),
/// [`join`](Process::join) and [`terminate`](Process::terminate) cannot meet the
/// not-yet-started state that Python answers with `pid is None` and an
/// `AssertionError` from `join()`, and no `start()` can be called twice. The target
/// and its argument go with `spawn`, because they decide the result type `R` of the
/// `Process<R>`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut child = procpool::Process::builder()
///     .name("greeter")
///     .env("GREETING", "hello")
///     .spawn(|who: String| format!("{} {who}", std::env::var("GREETING").unwrap()), "world".into())?;
/// assert_eq!(child.name(), "greeter");
/// assert_eq!(child.blocking_join()?, "hello world");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
#[must_use = "a Builder does nothing until `spawn` is called"]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    env: Vec<(OsString, OsString)>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
}

impl Builder {
    /// The child's name, for [`Process::name`] and the child's own
    /// [`current_process`]. Default: `Process-N`, counting up per parent.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemonic child is killed (`SIGKILL`) when this process exits, and when its
    /// `Process` value is dropped without being joined; it may not start children of its
    /// own. A non-daemonic child (the default, as in Python) runs to completion even
    /// if this process ends first.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Sets an environment variable for the child (which otherwise inherits this
    /// process's environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the child's stdout goes. Default: inherited, so its output appears with
    /// this process's. [`Stdio::piped()`] makes it readable through
    /// [`Process::take_stdout`].
    pub fn stdout(mut self, stdout: impl Into<Stdio>) -> Self {
        self.stdout = Some(stdout.into());
        self
    }

    /// Where the child's stderr goes; as [`stdout`](Self::stdout).
    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.stderr = Some(stderr.into());
        self
    }

    /// Starts a child running `f(arg)`. Returns once the process exists; it does not
    /// wait for the function.
    ///
    /// `f` must capture nothing, as for
    /// [`ProcessPoolExecutor::submit`](crate::ProcessPoolExecutor::submit).
    ///
    /// # Errors
    /// [`Error::DaemonicParent`] in a daemonic process (a pool worker or a daemon
    /// child); [`Error::Spawn`] if the OS refuses; [`Error::Encode`] if the argument
    /// does not serialise.
    pub fn spawn<F, A, R>(self, f: F, arg: A) -> Result<Process<R>, Error>
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        let _ = f;
        self.start(task::call::<F, A, R>, arg)
    }

    /// Starts a child running the async function `f(arg)` on a current-thread tokio
    /// runtime of its own.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    pub fn spawn_async<F, A, R>(self, f: F, arg: A) -> Result<Process<R>, Error>
    where
        F: AsyncTask<A, R>,
        A: Message,
        R: Message,
    {
        let () = F::CAPTURES_NOTHING;
        let _ = f;
        self.start(task::call_async::<F, A, R>, arg)
    }

    fn start<A: Serialize + 'static, R>(
        self,
        trampoline: Trampoline,
        arg: A,
    ) -> Result<Process<R>, Error> {
        if current_process().daemon {
            return Err(Error::DaemonicParent);
        }
        crate::worker::keep_linked();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", NEXT.fetch_add(1, Ordering::Relaxed)));

        // Both frames are encoded here, so a bad argument is reported by `spawn`.
        let hello = wire::control(
            Kind::Hello,
            &Hello {
                one_shot: true,
                ..spawn::hello(name.clone())
            },
        );
        let mut run = Vec::new();
        wire::begin(&mut run);
        // A byte vector is the body itself (see `wire::value`).
        let (run_tail, run_fds) = match value::into_raw(arg) {
            Ok(bytes) => (bytes, Vec::new()),
            Err(arg) => {
                let (encoded, fds) = handles::collecting(|| wire::encode_into(&arg, &mut run));
                encoded.map_err(|e| Error::Encode(CodecError::of::<A>(e)))?;
                (Vec::new(), fds)
            }
        };
        let (flags, func) = task::local_ref(trampoline).to_header();
        wire::finish(&mut run, Kind::Run, flags, RUN_ID, func);

        let spawn::Started {
            mut child,
            pid,
            pidfd,
            socket: ours,
        } = spawn::start_now(spawn::ChildSpec {
            daemon: self.daemon,
            env: &self.env,
            own_group: false,
            stdout: self.stdout,
            stderr: self.stderr,
            fork_server: false,
        })
        .map_err(Error::spawn)?;
        let (stdout, stderr) = child.take_output();
        let stdout = stdout.map(|s| ChildOutput(std::fs::File::from(OwnedFd::from(s))));
        let stderr = stderr.map(|s| ChildOutput(std::fs::File::from(OwnedFd::from(s))));
        let shared = Arc::new(Shared {
            pid,
            name,
            daemon: self.daemon,
            pidfd,
            exit: OnceLock::new(),
        });
        let (tx, rx) = oneshot::channel();
        // Deliver the task before returning, so the child has it even if this process
        // exits right away (a non-daemonic child then runs to completion). The child
        // reads as we write; a write error means it already died, which the watcher
        // reports.
        let mut writer = FrameWriter::new();
        writer.start(hello, Vec::new());
        let _ = writer.flush(ours.as_fd(), false).and_then(|_| {
            writer.start_with_tail(run, run_tail, run_fds);
            writer.flush(ours.as_fd(), false)
        });
        // Listed before the watcher starts, so that its removal after reaping can never
        // come first and leave a stale entry (and its pidfd) behind.
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shared.clone());
        let watcher = watch(child, ours, shared.clone(), tx);
        supervisor::spawn_task(watcher).map_err(Error::spawn)?;
        Ok(Process {
            shared,
            outcome: Some(rx),
            stdout,
            stderr,
            _result: PhantomData,
        })
    }
}

/// The task id of a `Process`'s one task.
const RUN_ID: u64 = 1;

// ---------------------------------------------------------------------------------
// Process
// ---------------------------------------------------------------------------------

/// What the parent and the watcher of one child share.
#[derive(Debug)]
struct Shared {
    pid: u32,
    name: String,
    daemon: bool,
    /// For signals and exit checks that can never reach a recycled pid.
    pidfd: OwnedFd,
    /// Set by the watcher once it has reaped the child.
    exit: OnceLock<Exit>,
}

impl Shared {
    fn exit(&self) -> Option<Exit> {
        if let Some(exit) = self.exit.get() {
            return Some(*exit);
        }
        sys::proc::pidfd_peek_exit(self.pidfd.as_fd())
            .ok()
            .flatten()
    }

    fn is_alive(&self) -> bool {
        self.exit().is_none()
    }
}

/// What the watcher learnt: the reply (if any) and how the child ended.
#[derive(Debug)]
struct Outcome {
    reply: Option<Result<Payload, ProcessError>>,
    exit: Exit,
}

/// A child process running one function (Python's `multiprocessing.Process`).
///
/// # Dropping
/// Dropping a `Process` that was not joined kills a daemonic child (`SIGKILL`) and
/// leaves a non-daemonic one running to completion; either way procpool reaps it when
/// it ends, so no zombie is left.
///
/// ```
/// use procpool::{Exit, Process};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut child = Process::spawn(square, 12)?;
/// assert_eq!(child.join().await?, 144);
/// assert_eq!(child.exit_code(), Some(Exit::Code(0)));
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping a Process does not wait for it; call join"]
pub struct Process<R> {
    shared: Arc<Shared>,
    outcome: Option<oneshot::Receiver<Outcome>>,
    stdout: Option<ChildOutput>,
    stderr: Option<ChildOutput>,
    _result: PhantomData<fn() -> R>,
}

impl Process<()> {
    /// Options for a child: [`Builder`].
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<R: Serialize + DeserializeOwned + Send + 'static> Process<R> {
    /// Starts a non-daemonic child named `Process-N` running `f(arg)`; see
    /// [`Builder::spawn`].
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    pub fn spawn<F, A>(f: F, arg: A) -> Result<Process<R>, Error>
    where
        F: Task<A, R>,
        A: Message,
    {
        let () = F::CAPTURES_NOTHING;
        Builder::default().spawn(f, arg)
    }

    /// Starts a non-daemonic child running the async function `f(arg)`; see
    /// [`Builder::spawn_async`].
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    pub fn spawn_async<F, A>(f: F, arg: A) -> Result<Process<R>, Error>
    where
        F: AsyncTask<A, R>,
        A: Message,
    {
        let () = F::CAPTURES_NOTHING;
        Builder::default().spawn_async(f, arg)
    }
}

impl<R> Process<R> {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The child's name (`Process-N` unless the builder named it).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the child is daemonic.
    pub fn is_daemon(&self) -> bool {
        self.shared.daemon
    }

    /// Something to wait on until the child ends (Python's `sentinel`): a duplicate
    /// of its pidfd, readable once the child has exited, for
    /// [`connection::wait`](crate::connection::wait) or any poller. It stays valid
    /// after the child is reaped, and never names another process.
    ///
    /// # Errors
    /// The descriptor could not be duplicated.
    pub fn sentinel(&self) -> io::Result<Sentinel> {
        Ok(Sentinel(sys::sock::dup(self.shared.pidfd.as_fd())?))
    }

    /// Whether the child is still running. Does not block.
    pub fn is_alive(&self) -> bool {
        self.shared.is_alive()
    }

    /// How the child ended, or `None` while it runs (Python's `exitcode`). Does not
    /// block and does not interfere with [`join`](Self::join).
    pub fn exit_code(&self) -> Option<Exit> {
        self.shared.exit()
    }

    /// Sends `SIGTERM` (Python's `terminate()`). The child has no handler for it, so it
    /// ends at once with [`Exit::Signal`]`(15)`. A child that already ended is left as
    /// it is.
    ///
    /// # Errors
    /// Only if the kernel refuses the signal (which it does not for our own child).
    pub fn terminate(&self) -> io::Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// Sends `SIGINT` (Python's `interrupt()`, new in 3.14): as Ctrl-C would, to this
    /// child alone. Without a handler of its own the child ends with
    /// [`Exit::Signal`]`(2)`; one that handles it decides for itself.
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn interrupt(&self) -> io::Result<()> {
        self.send_signal(libc::SIGINT)
    }

    /// Sends `SIGKILL` (Python's `kill()`).
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn kill(&self) -> io::Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// Sends `signal` to the child through its pidfd, so it can never reach another
    /// process that reused the pid. A child that already ended is left as it is.
    ///
    /// # Errors
    /// `InvalidInput` for a signal number the kernel does not know.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        match sys::proc::pidfd_send_signal(self.shared.pidfd.as_fd(), signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The child's stdout, if the builder set it to [`Stdio::piped()`] (once).
    pub fn take_stdout(&mut self) -> Option<ChildOutput> {
        self.stdout.take()
    }

    /// The child's stderr, if the builder set it to [`Stdio::piped()`] (once).
    pub fn take_stderr(&mut self) -> Option<ChildOutput> {
        self.stderr.take()
    }
}

impl<R: DeserializeOwned + 'static> Process<R> {
    /// Waits for the child to end and returns its function's value.
    ///
    /// # Errors
    /// [`ProcessError::Panicked`] if it panicked, [`ProcessError::Died`] if it was
    /// killed or called `exit`, [`ProcessError::AlreadyJoined`] the second time.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is lost if the future is dropped; join again.
    pub async fn join(&mut self) -> Result<R, ProcessError> {
        let rx = self.outcome.as_mut().ok_or(ProcessError::AlreadyJoined)?;
        let outcome = rx.await;
        self.finish(outcome)
    }

    /// As [`join`](Self::join), giving up after `timeout` with
    /// [`ProcessError::TimedOut`]; the child keeps running and can be joined again.
    ///
    /// # Errors
    /// As [`join`](Self::join), plus `TimedOut`.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`join`](Self::join).
    pub async fn join_timeout(&mut self, timeout: Duration) -> Result<R, ProcessError> {
        let rx = self.outcome.as_mut().ok_or(ProcessError::AlreadyJoined)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(outcome) => self.finish(outcome),
            Err(_) => Err(ProcessError::TimedOut { after: timeout }),
        }
    }

    /// As [`join`](Self::join), blocking the thread: for code without a runtime (a
    /// plain `main`, or a pool task). The child is watched from procpool's own thread,
    /// so this also works inside a runtime, but it then stalls that runtime's thread
    /// until the child ends: `.await` [`join`](Self::join) there instead.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`join`](Self::join) there.
    #[track_caller]
    pub fn blocking_join(&mut self) -> Result<R, ProcessError> {
        crate::blocking::assert_may_block("blocking_join", "join");
        let rx = self.outcome.as_mut().ok_or(ProcessError::AlreadyJoined)?;
        let outcome = supervisor::wait_blocking(rx);
        self.finish(outcome)
    }

    fn finish(
        &mut self,
        outcome: Result<Outcome, oneshot::error::RecvError>,
    ) -> Result<R, ProcessError> {
        self.outcome = None;
        let Ok(outcome) = outcome else {
            // The watcher was dropped: only if the supervisor runtime went away.
            return Err(ProcessError::Died {
                exit: self.shared.exit().unwrap_or(Exit::Signal(libc::SIGKILL)),
            });
        };
        match outcome.reply {
            Some(Ok(Payload { body, fds, .. })) => match value::from_raw::<R>(body) {
                Ok(r) => Ok(r),
                Err(body) => handles::supplying(fds, || postcard::from_bytes(&body)),
            }
            .map_err(|e| ProcessError::Decode(CodecError::of::<R>(handles::reason(&e)))),
            Some(Err(e)) => Err(e),
            None => Err(ProcessError::Died { exit: outcome.exit }),
        }
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if self.shared.daemon && self.outcome.is_some() {
            let _ = self.kill();
        }
    }
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.shared.pid)
            .field("name", &self.shared.name)
            .field("daemon", &self.shared.daemon)
            .field("exit_code", &self.exit_code())
            .finish()
    }
}

/// The parent's end of a child's piped stdout or stderr: readable with blocking
/// [`Read`], or turned into an async reader with [`into_async`](Self::into_async).
#[derive(Debug)]
pub struct ChildOutput(std::fs::File);

impl ChildOutput {
    /// An async reader (`tokio::io::AsyncRead`) over the pipe.
    ///
    /// # Errors
    /// Fails outside a tokio runtime with I/O enabled.
    pub fn into_async(self) -> io::Result<tokio::net::unix::pipe::Receiver> {
        tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(self.0))
    }
}

impl Read for ChildOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Reads the reply, then reaps the child and reports both; runs on the supervisor.
async fn watch(
    child: supervisor::Child,
    socket: OwnedFd,
    shared: Arc<Shared>,
    tx: oneshot::Sender<Outcome>,
) {
    let reply = read_reply(socket).await;
    let killed = matches!(reply, Some(Err(ProcessError::Protocol(_))));
    if killed {
        let _ = sys::proc::pidfd_send_signal(shared.pidfd.as_fd(), libc::SIGKILL);
    }
    let exit = match supervisor::wait(child).await {
        Some(status) => Exit::from_status(status),
        None => Exit::Signal(libc::SIGKILL),
    };
    let _ = shared.exit.set(exit);
    // Reaped: forget it here, closing its pidfd unless a `Process` value still holds it.
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| !Arc::ptr_eq(s, &shared));
    // Let go of everything before reporting, so that once `join` returns no fd of the
    // child is held here.
    drop(shared);
    let _ = tx.send(Outcome { reply, exit });
}

/// Reads the one reply. `None` if the child ended first.
async fn read_reply(socket: OwnedFd) -> Option<Result<Payload, ProcessError>> {
    let socket = sys::proc::async_fd(socket, tokio::io::Interest::READABLE).ok()?;
    let mut reader = FrameReader::new(crate::DEFAULT_MAX_FRAME);
    loop {
        match reader.read_async(&socket).await {
            Ok(Frame { header: h, .. }) if h.kind == Kind::Ready => continue,
            Ok(Frame {
                header: h,
                body,
                fds,
            }) if h.kind == Kind::Done && h.id == RUN_ID => {
                return Some(if h.flags & FLAG_FAILED != 0 {
                    match wire::decode_control::<Failure>(&body) {
                        Ok(f) => Err(f.into()),
                        Err(e) => Err(ProcessError::Protocol(e)),
                    }
                } else {
                    Ok(Payload {
                        body,
                        fds,
                        ..Payload::default()
                    })
                });
            }
            Ok(Frame { header: h, .. }) => {
                return Some(Err(ProcessError::Protocol(ProtocolError::Unexpected {
                    what: format!("{:?} frame from a Process child", h.kind),
                })))
            }
            Err(ReadError::Protocol(e)) => return Some(Err(ProcessError::Protocol(e))),
            Err(ReadError::Eof | ReadError::Io(_)) => return None,
        }
    }
}
