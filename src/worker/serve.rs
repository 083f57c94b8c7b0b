//! The worker loop: the handshake, then one task at a time until EOF or `Shutdown`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::code;
#[cfg(feature = "tracing")]
use super::forward;
use super::identity;
use super::link::{Incoming, Outgoing};
use super::progress::{Begin, Progress};
use crate::pacing::Average;
use crate::sys;
use crate::task::{self, WorkerCtx};
use crate::wire::ring::Ring;
use crate::wire::stream::{FrameReader, FrameWriter};
use crate::wire::{self, Failure, Hello, Kind, ReadError, Ready};

/// The worker loop: handshake, then one task at a time until EOF or `Shutdown`.
pub(super) fn serve(socket: OwnedFd) -> std::io::Result<i32> {
    let sock = socket.as_fd();
    // The parent checked the Hello against its frame limit, which we learn from it.
    let mut reader = FrameReader::new(u64::MAX);
    // The handshake's answers go on the socket, where the parent reads them, before
    // anything else is sent.
    let send_control = |frame: Vec<u8>| -> std::io::Result<()> {
        let mut writer = FrameWriter::new();
        writer.start(frame, Vec::new());
        writer.flush(sock, false).map(drop)
    };

    // Handshake. Until the fingerprint matches, nothing from the parent is trusted as
    // a function name.
    let hello_frame = match reader.read(sock, false) {
        Ok(f) if f.header.kind == Kind::Hello => f,
        Ok(_) | Err(ReadError::Protocol(_)) => return Ok(code::PROTOCOL),
        Err(ReadError::Eof) => return Ok(code::OK),
        Err(ReadError::Io(e)) => return Err(e),
    };
    let Ok(mut hello) = wire::decode_control::<Hello>(&hello_frame.body) else {
        return Ok(code::PROTOCOL);
    };
    let mine = task::fingerprint();
    if hello.fingerprint != mine {
        send_control(wire::control(Kind::Refused, &mine))?;
        return Ok(code::REFUSED);
    }
    reader.set_limit(hello.max_frame);
    let mut hello_fds = hello_frame.fds;
    let progress = if hello.progress {
        match hello_fds.pop().map(|fd| Progress::open(&fd)) {
            Some(Ok(page)) => Some(std::sync::Arc::new(page)),
            _ => return Ok(code::PROTOCOL),
        }
    } else {
        None
    };
    let ring = if hello.ring {
        let bulk = match hello.bulk {
            true => match hello_fds.pop() {
                Some(fd) => Some(fd),
                None => return Ok(code::PROTOCOL),
            },
            false => None,
        };
        let (Some(theirs), Some(mine), Some(memfd)) =
            (hello_fds.pop(), hello_fds.pop(), hello_fds.pop())
        else {
            return Ok(code::PROTOCOL);
        };
        match Ring::open(memfd, mine, theirs, bulk) {
            Ok(ring) => Some(std::sync::Arc::new(ring)),
            Err(_) => return Ok(code::PROTOCOL),
        }
    } else {
        None
    };
    // Frames go through the ring only after `Ready`, which the parent reads from the
    // socket; until then nothing else is sent.
    let link_out = Outgoing::new(sock, ring.clone())?;
    identity::set_name(hello.name.clone(), hello.one_shot);
    if let Some(page) = &progress {
        super::progress::keep_own_page(page.clone());
    }
    // Before anything of the user's runs, so the initializer's events go too.
    let link_out = std::sync::Arc::new(link_out);
    #[cfg(feature = "tracing")]
    forward::install(hello.trace_level, link_out.clone())?;
    crate::authkey::inherit_authkey(hello.authkey.clone());
    let mut ctx = WorkerCtx::new(hello.max_frame);
    ctx.on_item = progress.clone().map(|page| {
        let report: task::ItemReport = std::sync::Arc::new(move |seq, i| page.item_begun(seq, i));
        report
    });
    let mut out = Vec::with_capacity(64 * 1024);
    // Limits first: before anything of the user's runs, the initializer included.
    let limits = hello.limits.clone();
    let mut setup = set_limits(&limits);
    if let (Ok(()), Some(_), Some(_)) = (&setup, limits.address_space, &progress) {
        setup = super::progress::watch_allocation_failures().map_err(|e| Failure::LimitRefused {
            limit: "address_space_limit".to_owned(),
            errno: e.raw_os_error().unwrap_or(0),
        });
    }
    if let (Ok(()), Some((func, arg))) = (&setup, &mut hello.initializer) {
        ctx.fds_in = hello_fds.into_iter().map(Some).collect();
        setup = task::resolve(task::image(), *func).and_then(|t| t(&mut ctx, arg, &mut out));
        ctx.fds_in.clear();
    }
    if let Err(failure) = setup {
        send_control(wire::control(Kind::InitFailed, &failure))?;
        return Ok(code::INIT_FAILED);
    }
    let ready = Ready {
        pid: std::process::id(),
        fingerprint: mine,
    };
    let sent = send_control(wire::control(Kind::Ready, &ready));
    // A `Process` child whose parent has already exited still has its task in the
    // socket; only a pool worker needs a parent listening.
    if !hello.one_shot {
        sent?;
    }
    #[cfg(feature = "tracing")]
    forward::go_live();

    // Tasks are numbered in the order their frames arrive, as the driver numbers them
    // in the order it writes them (see `worker::progress`).
    let mut seq = 0u64;
    let mut pace = Pace::new(hello.spin, hello.glance);
    let bulk_ring = ring.clone();
    let mut link_in = Incoming::new(reader, ring, hello.max_frame);
    loop {
        let mut frame = match pace.next_frame(&mut link_in, sock) {
            Ok(f) => f,
            Err(ReadError::Eof) => return finish(&link_out),
            Err(ReadError::Protocol(_)) => return Ok(code::PROTOCOL),
            Err(ReadError::Io(e)) => return Err(e),
        };
        let header = frame.header;
        match header.kind {
            Kind::Run => {
                seq += 1;
                match progress.as_ref().map(|p| p.begin(seq)) {
                    None | Some(Begin::Run) => {}
                    Some(Begin::Skip) => {
                        wire::begin(&mut out);
                        wire::finish(&mut out, Kind::Done, wire::FLAG_SKIPPED, header.id, 0);
                        link_out.send(&mut out, &[], &[])?;
                        pace.replied();
                        continue;
                    }
                    // Our driver is killing us; nothing after this task may start.
                    Some(Begin::Stop) => return Ok(code::OK),
                    Some(Begin::Lost) => return Ok(code::PROTOCOL),
                }
                ctx.task_seq = seq;
                super::progress::running(seq);
                ctx.outcomes = wire::Outcomes::default();
                wire::begin(&mut out);
                ctx.fds_in = frame.fds.into_iter().map(Some).collect();
                ctx.fds_out.clear();
                let func = wire::TaskRef::from_header(header.flags, header.func);
                if let Some(secs) = limits.cpu_secs {
                    // The limit counts all the CPU time the worker used: each task's
                    // allowance starts from what the ones before it used. Set once
                    // before the first task, so this cannot be refused.
                    let used = sys::limits::cpu_time_used().as_secs_f64().ceil() as u64;
                    let _ = sys::limits::set_cpu_time_limit(used + secs);
                }
                if limits.address_space.is_some() {
                    // Only an allocation failure in this task may mark the page.
                    sys::proc::clear_errno();
                }
                #[cfg(feature = "tracing")]
                forward::set_task(header.id);
                let outcome = task::resolve(task::image(), func)
                    .and_then(|t| t(&mut ctx, &mut frame.body, &mut out));
                #[cfg(feature = "tracing")]
                forward::set_task(0);
                super::progress::running(0);
                // Descriptors no handle in the argument claimed close here.
                ctx.fds_in.clear();
                let flags = match outcome {
                    Ok(()) => 0,
                    Err(failure) => {
                        wire::begin(&mut out);
                        ctx.fds_out.clear();
                        ctx.tail_out = Vec::new();
                        encode_failure(&failure, &mut out);
                        wire::FLAG_FAILED
                    }
                };
                let over = limits
                    .max_rss
                    .is_some_and(|max| sys::limits::resident_bytes().is_ok_and(|rss| rss > max));
                let flags = flags | if over { wire::FLAG_RECYCLE } else { 0 };
                wire::finish(
                    &mut out,
                    Kind::Done,
                    flags,
                    header.id,
                    ctx.outcomes.to_u64(),
                );
                // What the task logged goes before its result.
                #[cfg(feature = "tracing")]
                if let Some(mut records) = forward::take_frame() {
                    link_out.send(&mut records, &[], &[])?;
                }
                let sent = link_out.send(&mut out, &ctx.tail_out, &ctx.fds_out);
                ctx.tail_out = Vec::new();
                ctx.fds_out.clear();
                if hello.one_shot {
                    // A `Process` child: like Python's, exit code 1 when the target
                    // raised (panicked), 0 when it returned, whether or not a parent
                    // is still there to read the result.
                    return Ok(if flags == 0 { code::OK } else { code::FAILED });
                }
                sent?;
                pace.replied();
                // Do not keep a huge result buffer alive between tasks.
                if out.capacity() > 16 << 20 {
                    out = Vec::with_capacity(64 * 1024);
                }
            }
            Kind::Shutdown => return finish(&link_out),
            Kind::Release => {
                if let Some(ring) = &bulk_ring {
                    ring.release_bulk();
                }
            }
            _ => return Ok(code::PROTOCOL),
        }
    }
}

/// Sends what is left before the worker exits: the records its tasks logged last.
fn finish(link_out: &Outgoing) -> std::io::Result<i32> {
    #[cfg(feature = "tracing")]
    if let Some(mut records) = forward::take_frame() {
        link_out.send(&mut records, &[], &[])?;
    }
    let _ = link_out;
    Ok(code::OK)
}

/// How long a worker polls for its next task before sleeping.
///
/// Waking a sleeping process costs tens of microseconds on a busy or virtualised
/// machine; a worker whose tasks have lately come back to back polls its ring
/// (yielding the CPU between polls) for up to twice the typical gap, at most
/// [`Pace::SPIN_MAX`]. A worker whose tasks come rarely sleeps at once: an idle pool
/// burns nothing. And only where the machine has a core to spare for it
/// (`Hello::spin`), and only while it has its core to itself: a yield that lets
/// another thread run ends the polling, and none is done for a while of frames
/// ([`Contention`]), since on busy cores a polling worker sits on the core the
/// parent's threads (or anyone else) need.
///
/// A worker that does not poll still *glances* at its ring for [`Pace::GLANCE`]
/// before it sleeps, where the workers do not outnumber the cores (`Hello::glance`).
/// A worker that finishes its tasks faster than its driver writes them (a stream of
/// trivial tasks) otherwise sleeps after every few, and each sleep costs its driver a
/// wake-up (an `eventfd` write, about 5 µs on the 2-vCPU VM of BENCHMARKS.md) on the
/// path every task takes. (Measured there with a throwaway probe of 5 × 1 M windowed
/// `submit`s on 2 workers, ten rounds alternating with the build before: medians of
/// 602–817 k tasks/s, middle 718, with the glance; 510–748, middle 631, without;
/// ahead in 9 rounds of 10.)
struct Pace {
    /// The time from a reply to the next task's arrival: by the parent's stamp on the
    /// task where there is one, so that a worker that slept does not count its own
    /// wake-up as the parent's slowness (which would keep it from polling after one
    /// slow spell, each slow wait making the next one slow).
    gap: Average,
    replied_at: Option<(Instant, u64)>,
    /// Whether polling is allowed at all (see `Hello::spin`).
    spin: bool,
    /// Whether a glance is (see `Hello::glance`).
    glance: bool,
    /// Frames to wait for without polling, after a poll lost its core.
    contention: Contention,
}

impl Pace {
    const SPIN_MAX: Duration = Duration::from_micros(100);
    /// A yield that took longer ran another thread on this core.
    const PREEMPTED: Duration = Duration::from_micros(20);
    /// About the time a busy driver takes to write its worker's next task.
    const GLANCE: Duration = Duration::from_micros(3);

    fn new(spin: bool, glance: bool) -> Pace {
        Pace {
            gap: Average::new(),
            replied_at: None,
            spin,
            glance,
            contention: Contention::new(),
        }
    }

    fn replied(&mut self) {
        self.replied_at = Some((Instant::now(), sys::proc::monotonic_ns()));
    }

    fn next_frame(
        &mut self,
        link: &mut Incoming,
        sock: BorrowedFd<'_>,
    ) -> Result<wire::stream::Frame, ReadError> {
        let spin = self.gap.spin(Self::SPIN_MAX);
        let poll = self.contention.may_poll() && self.spin && !spin.is_zero();
        if !poll && self.glance && link.has_ring() {
            let until = Instant::now() + Self::GLANCE;
            loop {
                if let Some(frame) = link.try_next(sock)? {
                    self.arrived(link.stamp());
                    return Ok(frame);
                }
                if Instant::now() >= until {
                    break;
                }
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
        }
        if poll {
            let until = Instant::now() + spin;
            loop {
                if let Some(frame) = link.try_next(sock)? {
                    self.arrived(link.stamp());
                    self.contention.caught();
                    return Ok(frame);
                }
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::yield_now();
                if now.elapsed() > Self::PREEMPTED {
                    // Another thread wanted this core and ran: the machine has no
                    // core to spare now, and polling would take it from the parent
                    // (or whoever else needs it). Sleep, for a while of frames.
                    self.contention.lost();
                    break;
                }
            }
        }
        let frame = link.next(sock);
        self.arrived(link.stamp());
        frame
    }

    /// A frame came, published by the parent at `stamp` (0: unknown).
    fn arrived(&mut self, stamp: u64) {
        if let Some((at, ns)) = self.replied_at.take() {
            let gap = match stamp.checked_sub(ns) {
                Some(gap) if stamp != 0 => Duration::from_nanos(gap),
                _ => at.elapsed(),
            };
            self.gap.record(gap);
        }
    }
}

/// How long a worker that lost its core to another thread while polling waits, in
/// frames, before it polls again.
///
/// A single loss (another process ran for a moment) costs a few frames; losses that
/// keep coming (the cores are busy) double the wait each time, up to
/// [`Contention::MOST`] frames; and polls that keep catching frames halve it again.
/// A fixed wait of the most frames let one hiccup cost hundreds of sleeping round
/// trips (on the 2-vCPU VM, a current-thread caller's worker slept on about a
/// quarter of its round trips; with this, on 1–2%).
#[derive(Debug)]
struct Contention {
    /// Frames still to wait for without polling.
    left: u32,
    /// What the next loss costs.
    penalty: u32,
    /// Frames caught by polling since the last loss.
    caught: u32,
}

impl Contention {
    const LEAST: u32 = 8;
    const MOST: u32 = 256;
    /// Frames caught by polling that halve the penalty.
    const TO_FORGIVE: u32 = 32;

    fn new() -> Contention {
        Contention {
            left: 0,
            penalty: Self::LEAST,
            caught: 0,
        }
    }

    /// Counts one frame about to be waited for; whether polling for it is allowed.
    fn may_poll(&mut self) -> bool {
        self.left = self.left.saturating_sub(1);
        self.left == 0
    }

    /// A poll caught its frame.
    fn caught(&mut self) {
        self.caught += 1;
        if self.caught.is_multiple_of(Self::TO_FORGIVE) {
            self.penalty = (self.penalty / 2).max(Self::LEAST);
        }
    }

    /// A poll lost the core.
    fn lost(&mut self) {
        self.left = self.penalty;
        self.penalty = (self.penalty * 2).min(Self::MOST);
        self.caught = 0;
    }
}

fn encode_failure(failure: &Failure, out: &mut Vec<u8>) {
    if wire::encode_into(failure, out).is_err() {
        // Only strings inside; cannot fail, but never panic in the worker loop.
        wire::begin(out);
    }
}

/// Sets the worker's limits on itself; the limit the kernel refused, if one was.
fn set_limits(limits: &wire::WorkerLimits) -> Result<(), Failure> {
    let refused = |limit: &str, e: std::io::Error| Failure::LimitRefused {
        limit: limit.to_owned(),
        errno: e.raw_os_error().unwrap_or(0),
    };
    if let Some(nice) = limits.nice {
        sys::limits::set_nice(nice).map_err(|e| refused("nice", e))?;
    }
    if let Some(cpus) = &limits.cpus {
        sys::limits::set_affinity(cpus).map_err(|e| refused("affinity", e))?;
    }
    if let Some(secs) = limits.cpu_secs {
        let used = sys::limits::cpu_time_used().as_secs_f64().ceil() as u64;
        sys::limits::set_cpu_time_limit(used + secs).map_err(|e| refused("cpu_time_limit", e))?;
    }
    if let Some(bytes) = limits.address_space {
        // A limit below what the worker already maps would fail its first
        // allocation, and every worker after it: refuse it now, by name.
        let mapped = sys::limits::mapped_bytes().map_err(|e| refused("address_space_limit", e))?;
        if mapped >= bytes {
            return Err(refused(
                "address_space_limit",
                std::io::Error::from_raw_os_error(libc::ENOMEM),
            ));
        }
        sys::limits::set_address_space_limit(bytes)
            .map_err(|e| refused("address_space_limit", e))?;
        keep_errno_on_allocation_failure();
    }
    Ok(())
}

/// With `RUST_BACKTRACE` set, Rust prints a backtrace after "memory allocation of …
/// failed" and before it aborts, and reading the debug info on the way overwrites
/// `errno`, so the abort hook could no longer tell an allocation failure. Moves the
/// setting to `RUST_LIB_BACKTRACE` (unless that is set), which `std::backtrace` and
/// the error crates read first, so only std's own allocation-failure backtrace goes.
/// The worker is single-threaded here, before any of the user's code.
fn keep_errno_on_allocation_failure() {
    if let Some(style) = std::env::var_os("RUST_BACKTRACE") {
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            std::env::set_var("RUST_LIB_BACKTRACE", style);
        }
        std::env::remove_var("RUST_BACKTRACE");
    }
}

#[cfg(test)]
mod tests {
    use super::Contention;

    /// Polls allowed among the next `n` frames.
    fn polls_in(c: &mut Contention, n: u32) -> u32 {
        (0..n).filter(|_| c.may_poll()).count() as u32
    }

    #[test]
    fn one_loss_costs_a_few_frames_and_losses_in_a_row_cost_more_up_to_the_most() {
        let mut c = Contention::new();
        assert!(c.may_poll());
        c.lost();
        // The next 7 frames wait; the 8th may poll again.
        assert_eq!(polls_in(&mut c, Contention::LEAST - 1), 0);
        assert!(c.may_poll());
        let mut waits = Vec::new();
        for _ in 0..8 {
            c.lost();
            let mut n = 1;
            while !c.may_poll() {
                n += 1;
            }
            waits.push(n);
        }
        assert_eq!(waits, [16, 32, 64, 128, 256, 256, 256, 256]);
    }

    #[test]
    fn frames_caught_by_polling_halve_the_penalty_down_to_the_least() {
        let mut c = Contention::new();
        for _ in 0..6 {
            c.lost();
        }
        assert_eq!(c.penalty, Contention::MOST);
        for _ in 0..Contention::TO_FORGIVE - 1 {
            c.caught();
        }
        assert_eq!(c.penalty, Contention::MOST);
        c.caught();
        assert_eq!(c.penalty, Contention::MOST / 2);
        for _ in 0..100 * Contention::TO_FORGIVE {
            c.caught();
        }
        assert_eq!(c.penalty, Contention::LEAST);
        // A loss forgets the frames caught before it.
        for _ in 0..Contention::TO_FORGIVE - 1 {
            c.caught();
        }
        c.lost();
        c.caught();
        assert_eq!(c.penalty, 2 * Contention::LEAST);
    }
}
