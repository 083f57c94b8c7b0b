//! [`WorkerProcess`]: one worker as its parent sees it: the child process, its pidfd,
//! its socket, its shared-memory ring, its progress page. (The worker's own side is
//! [`crate::worker`].)

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Exit, PanicInfo, ProtocolError};
use crate::pool::{Config, StartFailure, StartMethod};
use crate::spawn;
use crate::supervisor::{self, Child};
use crate::sys;
use crate::wire::ring::{Next, Ring};
use crate::wire::stream::{Frame, FrameReader, FrameWriter};
use crate::wire::{self, Failure, Hello, Kind, ReadError, Ready};
use crate::worker::progress::Progress;

/// Numbers pool workers' names (`PoolWorker-N`) across all pools of this process.
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// Why a worker could not be brought to `Ready`.
#[derive(Debug)]
pub(crate) enum StartError {
    /// No worker can ever start (different build, failing initializer).
    Fatal(Error),
    /// The OS refused to start the process; a later attempt may succeed.
    Spawn(io::Error),
    /// It ended before it was ready; another may succeed.
    Died(u32, Exit),
    /// It spoke garbage in the handshake; another may succeed.
    Protocol(String),
    /// The pool is being stopped (`shutdown_now`, dropped): the half-started worker
    /// was killed and reaped.
    Aborted,
}

/// What a driver does after a failed start.
#[derive(Debug)]
pub(crate) enum AfterFailure {
    /// Back off and try again; tell `ready` and `stats` why.
    Retry(Error, StartFailure),
    /// No retry can heal this: the pool stops taking tasks.
    Fatal(Error),
    /// The pool is being stopped: leave.
    Leave,
}

impl StartError {
    /// What the failure means for the pool.
    pub(crate) fn after(self) -> AfterFailure {
        match self {
            StartError::Fatal(e) => AfterFailure::Fatal(e),
            StartError::Spawn(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                AfterFailure::Retry(Error::spawn(e), StartFailure::Spawn { errno })
            }
            StartError::Died(pid, exit) => AfterFailure::Retry(
                Error::Handshake {
                    reason: format!("worker {pid} ended before it was ready ({exit})"),
                },
                StartFailure::Died { exit },
            ),
            StartError::Protocol(reason) => {
                AfterFailure::Retry(Error::Handshake { reason }, StartFailure::Handshake)
            }
            StartError::Aborted => AfterFailure::Leave,
        }
    }
}

/// What the head of the ring's reply lane holds: `Some(Ok(Some(frame)))` a reply
/// taken from its slot, `Some(Ok(None))` one that spilled to the socket (read it with
/// `reader`, then free the slot), `Some(Err)` a broken slot, `None` nothing yet.
fn next_reply(
    ring: &Ring,
    limit: u64,
    stamp: &mut u64,
) -> Option<Result<Option<Frame>, ReadError>> {
    let next = ring.next();
    if matches!(next, Ok(Next::Inline | Next::Spilled)) {
        *stamp = ring.head_stamp();
    }
    match next {
        Ok(Next::Empty) => None,
        Ok(Next::Inline) => match ring.take(limit) {
            Ok(Some(frame)) => Some(Ok(Some(frame))),
            // A large reply the worker is still copying in, and slowly.
            Ok(None) => None,
            Err(e) => Some(Err(ReadError::Protocol(e))),
        },
        Ok(Next::Spilled) => Some(Ok(None)),
        Err(e) => Some(Err(ReadError::Protocol(e))),
    }
}

/// A running worker. Dropping it kills the process and has it reaped.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    pid: u32,
    child: Option<Child>,
    pidfd: AsyncFd<OwnedFd>,
    sock: AsyncFd<OwnedFd>,
    /// Tasks out and replies in, where they fit a slot ([`crate::wire::ring`]).
    /// Shared with a caller while the driver lends it ([`crate::pool::direct`]).
    ring: Arc<Ring>,
    /// The ring's doorbell for this side, registered with the reactor.
    bell: AsyncFd<OwnedFd>,
    /// Frames that spilled to the socket.
    reader: FrameReader,
    writer: FrameWriter,
    limit: u64,
    /// When the worker published the last reply taken from the ring (0: none yet).
    reply_stamp: u64,
    /// Which of the tasks sent to it the worker has started.
    progress: Arc<Progress>,
    /// Number of the last task sent (see [`Progress`]).
    seq: u64,
    /// Tasks this worker has finished (for `max_tasks_per_worker`).
    pub(crate) tasks_done: u64,
    /// It said it is over its memory limit: it retires once its tasks are answered.
    pub(crate) over_memory: bool,
    /// It was asked to forward its tasks' spans: replies may come with trace frames.
    pub(crate) traced: bool,
}

/// What [`WorkerProcess::next_io`] saw.
#[derive(Debug)]
pub(crate) enum Io {
    /// A reply (or why none can come).
    Reply(Result<Frame, ReadError>),
    /// The socket may take more of the frames being written.
    Writable(io::Result<()>),
    /// The process has exited, whoever still holds its socket (a grandchild it
    /// forked inherits it).
    Exited,
}

/// A frame of `kind` with an empty body, for the parent's requests to an idle worker.
fn control_frame(kind: Kind) -> Vec<u8> {
    let mut frame = Vec::with_capacity(wire::HEADER_LEN);
    wire::begin(&mut frame);
    wire::finish(&mut frame, kind, 0, 0, 0);
    frame
}

/// What a worker is sent first, and the shared pages it names.
struct Greeting {
    progress: Progress,
    ring: Ring,
    /// The `Hello`, as much of it as the socket took already; the rest is flushed
    /// once the socket is registered.
    writer: FrameWriter,
}

/// Makes the progress page and the ring, and writes the `Hello` naming them to `sock`
/// as far as it goes without waiting (nothing reads it yet).
fn greet(config: &Config, trace_level: u8, sock: BorrowedFd<'_>) -> io::Result<Greeting> {
    let (progress, page) = Progress::create()?;
    // The bulk area maps 128 MiB, which would count against a worker's address-space
    // limit: such a worker's large frames spill to the socket.
    let bulk = config.limits.address_space.is_none();
    let (ring, ring_fds) = Ring::create(bulk)?;
    let waiting = Waiting::on(crate::cpu_count(), config.workers);
    let hello = Hello {
        fingerprint: config.fingerprint,
        max_frame: config.max_frame,
        initializer: config.initializer.clone(),
        progress: true,
        ring: true,
        bulk,
        spin: waiting.poll,
        glance: waiting.glance,
        limits: config.limits.for_worker(),
        trace_level,
        ..spawn::hello(format!(
            "PoolWorker-{}",
            NEXT_WORKER.fetch_add(1, Ordering::Relaxed)
        ))
    };
    // The initializer's descriptors, the ring's, then the progress page (last, see
    // `Hello`).
    let fds = config
        .initializer_fds
        .iter()
        .map(|fd| sys::sock::dup(fd.as_fd()))
        .chain(ring_fds.into_iter().map(Ok))
        .chain(std::iter::once(Ok(page)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut writer = FrameWriter::new();
    writer.start(wire::control(Kind::Hello, &hello), fds);
    match writer.flush(sock, true) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(Greeting {
            progress,
            ring,
            writer,
        }),
    }
}

impl WorkerProcess {
    /// Starts a worker and completes the handshake (fingerprint, initializer).
    ///
    /// If `abort` fires during the handshake, the worker is killed and reaped before
    /// this returns [`StartError::Aborted`]: a pool being stopped leaves no child
    /// behind, not even a zombie for the supervisor thread to reap later.
    pub(crate) async fn start(
        config: &Config,
        abort: &CancellationToken,
    ) -> Result<WorkerProcess, StartError> {
        let trace_level = crate::pool::span::listening_level();
        // The shared pages and the greeting are made while the child starts, and the
        // greeting waits in its socket: the worker reads it as soon as it runs.
        let spec = spawn::ChildSpec {
            daemon: true,
            env: &config.env,
            own_group: true,
            fork_server: config.start_method == StartMethod::ForkServer,
            ..Default::default()
        };
        let (started, greeting) = spawn::start(spec, |sock| greet(config, trace_level, sock))
            .await
            .map_err(StartError::Spawn)?;
        let pid = started.pid;
        let Greeting {
            progress,
            ring,
            writer,
        } = match greeting {
            Ok(greeting) => greeting,
            Err(e) => {
                // It never got its greeting: killed and reaped.
                supervisor::reap_later(started.child);
                return Err(StartError::Spawn(e));
            }
        };
        let mut worker = match Self::attach(started, config.max_frame, progress, ring, writer) {
            Ok(w) => w,
            Err((child, e)) => {
                supervisor::reap_later(child);
                return Err(StartError::Spawn(e));
            }
        };
        // The rest of a greeting larger than what the socket took at first.
        if worker.writer.flush_async(&worker.sock).await.is_err() {
            let exit = worker.wait().await;
            return Err(StartError::Died(pid, exit));
        }
        let answer = tokio::select! {
            biased;
            r = worker.recv() => r,
            _ = abort.cancelled() => {
                worker.kill().await;
                return Err(StartError::Aborted);
            }
        };
        match answer {
            Ok(Frame {
                header: h, body, ..
            }) => match h.kind {
                Kind::Ready => {
                    let ready: Ready = match wire::decode_control(&body) {
                        Ok(r) => r,
                        Err(e) => {
                            worker.kill().await;
                            return Err(StartError::Protocol(e.to_string()));
                        }
                    };
                    if ready.fingerprint != config.fingerprint || ready.pid != pid {
                        worker.kill().await;
                        return Err(StartError::Fatal(Error::FingerprintMismatch {
                            expected: config.fingerprint,
                            found: ready.fingerprint,
                        }));
                    }
                    worker.traced = trace_level != 0;
                    Ok(worker)
                }
                Kind::Refused => {
                    let found: u64 = wire::decode_control(&body).unwrap_or(0);
                    worker.wait().await;
                    Err(StartError::Fatal(Error::FingerprintMismatch {
                        expected: config.fingerprint,
                        found,
                    }))
                }
                Kind::InitFailed => {
                    let failure: Result<Failure, ProtocolError> = wire::decode_control(&body);
                    worker.wait().await;
                    if let Ok(Failure::LimitRefused { limit, errno }) = failure {
                        return Err(StartError::Fatal(Error::LimitRefused { limit, errno }));
                    }
                    let panic = match failure {
                        Ok(Failure::InitializerFailed { message }) => PanicInfo::new(message, None),
                        Ok(Failure::Panicked(p)) => p,
                        Ok(other) => PanicInfo::new(format!("{other:?}"), None),
                        Err(e) => PanicInfo::new(e.to_string(), None),
                    };
                    Err(StartError::Fatal(Error::Initializer(panic)))
                }
                other => {
                    worker.kill().await;
                    Err(StartError::Protocol(format!(
                        "unexpected {other:?} in the handshake"
                    )))
                }
            },
            Err(ReadError::Eof) | Err(ReadError::Io(_)) => {
                let exit = worker.wait().await;
                Err(StartError::Died(pid, exit))
            }
            Err(ReadError::Protocol(e)) => {
                worker.kill().await;
                Err(StartError::Protocol(e.to_string()))
            }
        }
    }

    /// Registers a started child's pidfd and socket with the runtime; on failure,
    /// hands the child back to be killed and reaped.
    fn attach(
        started: spawn::Started,
        limit: u64,
        progress: Progress,
        ring: Ring,
        writer: FrameWriter,
    ) -> Result<WorkerProcess, (Child, io::Error)> {
        let spawn::Started {
            child,
            pid,
            pidfd,
            socket,
        } = started;
        let setup = (|| -> io::Result<_> {
            let pidfd = sys::proc::async_readable(pidfd)?;
            let sock = sys::proc::async_fd(socket, Interest::READABLE | Interest::WRITABLE)?;
            let bell = sys::proc::async_readable(sys::sock::dup(ring.bell().as_fd())?)?;
            Ok((pidfd, sock, bell))
        })();
        match setup {
            Ok((pidfd, sock, bell)) => Ok(WorkerProcess {
                pid,
                child: Some(child),
                pidfd,
                sock,
                ring: Arc::new(ring),
                bell,
                reader: FrameReader::new(limit),
                writer,
                limit,
                reply_stamp: 0,
                progress: Arc::new(progress),
                seq: 0,
                tasks_done: 0,
                over_memory: false,
                traced: true,
            }),
            Err(e) => Err((child, e)),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Numbers the next task to send and marks it pending on the progress page.
    pub(crate) fn queue_next(&mut self) -> u64 {
        self.seq += 1;
        self.progress.queue(self.seq);
        self.seq
    }

    /// The number of the last task sent.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Takes over the numbering after tasks that were sent by a caller the ring
    /// was lent to (see [`crate::pool::direct`]), and when that caller saw the last
    /// reply published.
    pub(crate) fn lent_out(&mut self, seq: u64, reply_stamp: u64) {
        self.seq = seq;
        self.reply_stamp = reply_stamp;
    }

    /// The frame limit replies are checked against.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes back the number [`queue_next`](Self::queue_next) gave a task that is
    /// not sent after all (the worker counts only the tasks it receives).
    pub(crate) fn unqueue(&mut self) {
        self.seq -= 1;
    }

    /// Takes back every number after `seq`: the tasks that had them were never
    /// written to the socket.
    pub(crate) fn unqueue_after(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// When the worker published the reply last taken (`CLOCK_MONOTONIC`, ns; 0
    /// before any).
    pub(crate) fn reply_stamp(&self) -> u64 {
        self.reply_stamp
    }

    /// The ring that tasks go out on (see [`crate::wire::ring`]): a frame that does
    /// not fit a slot is announced there and then sent with [`send_now`](Self::send_now).
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Sends what the socket takes now of `parts` (frames back to back, `fds` with
    /// the first byte) without waiting; how many bytes went.
    ///
    /// # Errors
    /// `WouldBlock` when the socket is full; any other error means the worker is gone.
    pub(crate) fn send_now(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        sys::sock::send_vectored(self.sock.get_ref().as_fd(), parts, fds, true)
    }

    /// Waits for a reply, for room in the socket if `write`, or for the process to
    /// exit, whichever comes first. The ring is polled for a reply for up to `spin`
    /// first, yielding to the runtime between polls, before sleeping on the ring's
    /// doorbell: a worker answering within microseconds costs neither side a system
    /// call or a reactor wake-up.
    ///
    /// # Cancel safety
    /// Cancel safe: a reply is taken from the ring whole or not at all, and a spilled
    /// frame read in part stays in the reader, its slot until it is whole.
    pub(crate) async fn next_io(&mut self, spin: Duration, write: bool) -> Io {
        let WorkerProcess {
            reader,
            sock,
            pidfd,
            ring,
            bell,
            limit,
            reply_stamp,
            ..
        } = self;
        let (sock, ring, bell, limit) = (&*sock, &*ring, &*bell, *limit);
        let reply = async {
            let until = (!spin.is_zero()).then(|| Instant::now() + spin);
            loop {
                match next_reply(ring, limit, reply_stamp) {
                    Some(Ok(Some(frame))) => return Ok(frame),
                    Some(Ok(None)) => {
                        // Announced: the rest of it is coming on the socket.
                        let frame = reader.read_async(sock).await;
                        if frame.is_ok() {
                            ring.skip();
                        }
                        return frame;
                    }
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
                if until.is_some_and(|until| Instant::now() < until) {
                    tokio::task::yield_now().await;
                    continue;
                }
                if !ring.sleep_for_frame() {
                    continue;
                }
                // The worker writes on the socket only what it announced in the ring,
                // and nothing while a large frame of its is unfinished; anything else
                // there is its end, or a lie to be reported.
                tokio::select! {
                    guard = bell.readable() => {
                        ring.woke();
                        guard.map_err(ReadError::Io)?.clear_ready();
                    }
                    guard = sock.readable() => {
                        ring.woke();
                        let mut guard = guard.map_err(ReadError::Io)?;
                        if ring.socket_is_next() {
                            match reader.read(sock.get_ref().as_fd(), true) {
                                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                                    guard.clear_ready();
                                }
                                Err(e) => return Err(e),
                                Ok(frame) => {
                                    return ring.claim_spilled(frame).map_err(ReadError::Protocol)
                                }
                            }
                        }
                    }
                }
            }
        };
        let writable = async {
            // Readiness is cleared first: the caller writes until `WouldBlock`, and
            // then only a new edge means room.
            let mut guard = sock.writable().await?;
            guard.clear_ready();
            Ok(())
        };
        let pidfd = &*pidfd;
        let exited = async {
            match pidfd.readable().await {
                Ok(mut guard) => guard.retain_ready(),
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = reply => Io::Reply(r),
            r = writable, if write => Io::Writable(r),
            () = exited => Io::Exited,
        }
    }

    /// A reply waiting in the ring, taken without waiting; `None` when there is none
    /// yet, or when the next one spilled to the socket (which [`next_io`](Self::next_io)
    /// reads).
    pub(crate) fn try_reply(&mut self) -> Option<Result<Frame, ReadError>> {
        match next_reply(&self.ring, self.limit, &mut self.reply_stamp)? {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// A reply already received, without waiting (used after the worker died).
    pub(crate) fn buffered_reply(&mut self) -> Option<Frame> {
        let sock = self.sock.get_ref().as_fd();
        match next_reply(&self.ring, self.limit, &mut self.reply_stamp)? {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => {
                let frame = self.reader.read(sock, true).ok()?;
                self.ring.skip();
                Some(frame)
            }
            Err(_) => None,
        }
    }

    async fn recv(&mut self) -> Result<Frame, ReadError> {
        self.reader.read_async(&self.sock).await
    }

    /// Resolves once the process has exited (without reaping it).
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits for readiness.
    pub(crate) async fn exited(&self) {
        match self.pidfd.readable().await {
            // A pidfd stays readable once the process has exited.
            Ok(mut guard) => guard.retain_ready(),
            // The reactor is gone: this driver goes with it.
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits for the process to exit, kills what it left in its process group, and
    /// reaps it.
    ///
    /// # Cancel safety
    /// Cancel safe: the child stays ours until it is reaped.
    pub(crate) async fn wait(&mut self) -> Exit {
        if self.child.is_none() {
            return Exit::Code(0);
        }
        if self.pidfd.readable().await.is_ok() {
            // Exited and not reaped yet: the group's id is still its own.
            self.kill_group();
        }
        let Some(child) = self.child.as_mut() else {
            return Exit::Code(0);
        };
        match supervisor::reap(child, &self.pidfd).await {
            Some(status) => {
                self.child = None;
                Exit::from_status(status)
            }
            None => {
                // No runtime left to wait on (it is shutting down): the supervisor
                // kills and reaps it; the status is unknown.
                if let Some(child) = self.child.take() {
                    supervisor::reap_later(child);
                }
                Exit::Signal(libc::SIGKILL)
            }
        }
    }

    /// Kills the process and its process group (`SIGKILL`) and reaps it.
    pub(crate) async fn kill(&mut self) -> Exit {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            self.kill_group();
        }
        self.wait().await
    }

    /// Kills whatever the worker started that stayed in its process group
    /// (`process_group(0)` made it the leader of its own). Only while the worker is
    /// not reaped, so that the group's id cannot belong to anyone else.
    fn kill_group(&self) {
        if self.child.as_ref().is_some_and(Child::parent_kills_group) {
            // ESRCH: nobody left in the group. Nothing else can fail here.
            let _ = sys::proc::kill_group(self.pid);
        }
    }

    /// Gives back the pages of the bulk area once it has been idle a while: this
    /// side's half here, and the worker's by telling it to (if it wrote any since the
    /// last time). Called by an idle driver when [`Ring::bulk_release_due`] passes.
    pub(crate) fn release_bulk(&self) {
        let ours = self.ring.release_bulk();
        let theirs = self.ring.take_bulk_read();
        // The worker is idle: its ring has room. It gives its half back before it
        // reads the next task, which comes behind this in the lane.
        if theirs {
            let _ = self.ring.try_push(&[&control_frame(Kind::Release)]);
        }
        if ours || theirs {
            crate::pool::span::bulk_given_back(self.pid);
        }
    }

    /// Asks the worker to finish, then reaps it. Used for recycling and graceful
    /// shutdown: the worker is idle, so it exits at once.
    pub(crate) async fn retire(mut self) -> Exit {
        // The worker is idle: its ring has room (if the worker is gone, nobody reads
        // it, and the end of the socket below tells it anyway).
        let _ = self.ring.try_push(&[&control_frame(Kind::Shutdown)]);
        let _ = sys::sock::shutdown_write(self.sock.get_ref().as_fd());
        self.wait().await
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill_group();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            supervisor::reap_later(child);
        }
    }
}

/// How a pool's workers may wait for their next task before sleeping, on a machine of
/// `cores` (see `worker::serve::Pace`).
#[derive(Debug, PartialEq, Eq)]
struct Waiting {
    /// Poll for up to the typical gap between tasks: only with a core each for the
    /// workers and one more for the parent's driving thread, so that polling workers
    /// never outnumber the cores (one worker on two cores polls).
    poll: bool,
    /// Glance for a few microseconds: one core per worker is enough, and then
    /// glancing workers never outnumber the cores either.
    glance: bool,
}

impl Waiting {
    fn on(cores: usize, workers: usize) -> Waiting {
        Waiting {
            poll: cores > workers,
            glance: cores >= workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Waiting;

    #[test]
    fn waiting_workers_never_outnumber_the_cores() {
        let on_two = |workers| {
            let w = Waiting::on(2, workers);
            (w.poll, w.glance)
        };
        assert_eq!(on_two(1), (true, true));
        assert_eq!(on_two(2), (false, true));
        assert_eq!(on_two(3), (false, false));
        assert_eq!(on_two(8), (false, false));
    }
}
