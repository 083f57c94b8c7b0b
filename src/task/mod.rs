//! Naming functions across the process boundary.
//!
//! Rust cannot serialise a closure, and need not: every function the pool runs is a
//! zero-sized type (a fn item or a non-capturing closure), so knowing the type is
//! knowing the value. For each `(F, A, R)` a *trampoline* is monomorphised: it decodes
//! `A`, produces `F` out of nothing ([`conjure`](conjure::conjure)), calls it under
//! `catch_unwind` and encodes `R` into the reply frame. The parent sends the
//! trampoline's address as an offset from the executable's load base; the worker, the
//! same executable, adds its own base, checks the address is code, and calls it.
//!
//! The [build fingerprint](fingerprint) makes sure "same executable" holds.

mod conjure;
mod traits;

use std::any::Any;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use conjure::{conjure, resolve};
pub(crate) use traits::assert_captures_nothing;
pub use traits::{AsyncTask, Message, Task};

use crate::error::{CodecError, PanicInfo};
use crate::sys::image::{self, Image};
use crate::wire::{self, handles, value, Failure, TaskRef, HEADER_LEN};

/// What the worker calls for a `Run` frame: the frame's body in (a trampoline may take
/// it, see [`value`]), the encoded result appended to the reply buffer or left in
/// [`WorkerCtx::tail_out`].
pub(crate) type Trampoline = fn(&mut WorkerCtx, &mut Vec<u8>, &mut Vec<u8>) -> Result<(), Failure>;

/// The executable as mapped in this process, read once.
pub(crate) fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(image::main_image)
}

/// This build's fingerprint: a hash of procpool's version, the executable's program
/// headers, its build-id note (if any) and the first bytes of each code segment. Two
/// processes agree on it only if they run the same build of the same executable.
pub(crate) fn fingerprint() -> u64 {
    static FINGERPRINT: OnceLock<u64> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        let image = image();
        // `DefaultHasher::new` uses fixed keys: the same bytes hash the same in every
        // process of one build, which is all the fingerprint needs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        image.segments.hash(&mut h);
        image.build_id.hash(&mut h);
        image.code_sample.hash(&mut h);
        h.finish()
    })
}

/// The wire name of a trampoline in this process.
pub(crate) fn local_ref(t: Trampoline) -> TaskRef {
    TaskRef::Local((t as *const () as usize).wrapping_sub(image().base) as u64)
}

/// State a worker keeps between tasks.
pub(crate) struct WorkerCtx {
    runtime: Option<tokio::runtime::Runtime>,
    max_frame: u64,
    /// Descriptors that came with the `Run` frame, for handles in the argument.
    pub(crate) fds_in: Vec<Option<OwnedFd>>,
    /// Descriptors of handles in the result, sent with the `Done` frame.
    pub(crate) fds_out: Vec<OwnedFd>,
    /// A raw result ([`value`]), sent after the reply buffer as the rest of the body.
    pub(crate) tail_out: Vec<u8>,
    /// Where a `map` chunk reports each item it begins: `(task number, item index)`,
    /// for the parent to know, if this worker dies, which item was running.
    pub(crate) on_item: Option<ItemReport>,
    /// The task number of the current task, for [`on_item`](Self::on_item).
    pub(crate) task_seq: u64,
    /// Items of the current `map` chunk that failed; sent in its `Done` header.
    pub(crate) outcomes: wire::Outcomes,
}

/// A report of a `map` item begun: `(task number, item index)`.
pub(crate) type ItemReport = std::sync::Arc<dyn Fn(u64, usize) + Send + Sync>;

impl std::fmt::Debug for WorkerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCtx")
            .field("max_frame", &self.max_frame)
            .field("fds_in", &self.fds_in.len())
            .field("fds_out", &self.fds_out.len())
            .field("task_seq", &self.task_seq)
            .finish_non_exhaustive()
    }
}

impl WorkerCtx {
    pub(crate) fn new(max_frame: u64) -> Self {
        WorkerCtx {
            runtime: None,
            max_frame,
            fds_in: Vec::new(),
            fds_out: Vec::new(),
            tail_out: Vec::new(),
            on_item: None,
            task_seq: 0,
            outcomes: wire::Outcomes::default(),
        }
    }

    /// The worker's current-thread runtime, built on first use.
    fn runtime(&mut self) -> Result<&tokio::runtime::Runtime, Failure> {
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Runtime {
                    reason: e.to_string(),
                })?;
            self.runtime = Some(rt);
        }
        Ok(self.runtime.as_ref().expect("set above"))
    }
}

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the worker's panic hook: it records where a panic happened for the
/// [`Failure::Panicked`] report, and prints nothing (the parent gets the message).
pub(crate) fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        PANIC_LOCATION.with(|cell| *cell.borrow_mut() = loc);
    }));
}

/// The message of a caught panic (its payload, when that is a string).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any> (a panic payload that is not a string)".to_owned()
    }
}

/// Runs `f`, turning a panic into [`Failure::Panicked`].
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Failure> {
    PANIC_LOCATION.with(|cell| cell.borrow_mut().take());
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = panic_message(&*payload);
        // A payload whose destructor panics would abort; leaking it is harmless.
        std::mem::forget(payload);
        Failure::Panicked(PanicInfo::new(
            message,
            PANIC_LOCATION.with(|cell| cell.borrow_mut().take()),
        ))
    })
}

fn decode<A: DeserializeOwned>(ctx: &mut WorkerCtx, input: &[u8]) -> Result<A, Failure> {
    handles::supply_from(&mut ctx.fds_in, || postcard::from_bytes(input))
        .map_err(|e| Failure::Decode(CodecError::of::<A>(handles::reason(&e))))
}

/// Appends `value` to `out` and its handles' descriptors to `fds`, or leaves both as
/// they were and reports why not.
pub(crate) fn encode_into<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    max_frame: u64,
) -> Result<(), Failure> {
    let fds_before = fds.len();
    let r = handles::collect_into(fds, || encode_plain(value, out, max_frame));
    if r.is_err() {
        fds.truncate(fds_before);
    }
    r
}

/// Appends `value` to `out` (handles go to the collection already installed), or
/// leaves `out` as it was and reports why not.
fn encode_plain<T: Serialize>(value: &T, out: &mut Vec<u8>, max_frame: u64) -> Result<(), Failure> {
    let start = out.len();
    if let Err(e) = wire::encode_into(value, out) {
        out.truncate(start);
        return Err(Failure::Encode(CodecError::of::<T>(e)));
    }
    let body = (out.len() - HEADER_LEN.min(out.len())) as u64;
    if body > max_frame {
        out.truncate(start);
        return Err(Failure::Encode(CodecError::of::<T>(wire::over_limit(
            body, max_frame,
        ))));
    }
    Ok(())
}

/// Decodes a task's argument from a whole body, taking the body itself when `A` is
/// raw bytes ([`value`]).
fn decode_value<A: DeserializeOwned + 'static>(
    ctx: &mut WorkerCtx,
    input: &mut Vec<u8>,
) -> Result<A, Failure> {
    match value::from_raw::<A>(std::mem::take(input)) {
        Ok(arg) => Ok(arg),
        Err(bytes) => {
            *input = bytes;
            decode(ctx, input)
        }
    }
}

/// Encodes a task's result as a whole body: raw bytes go to [`WorkerCtx::tail_out`]
/// untouched, anything else is appended to `out`.
fn encode_value<R: Serialize + 'static>(
    result: R,
    ctx: &mut WorkerCtx,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    match value::into_raw(result) {
        Ok(bytes) if bytes.len() as u64 > ctx.max_frame => Err(Failure::Encode(
            CodecError::of::<R>(wire::over_limit(bytes.len() as u64, ctx.max_frame)),
        )),
        Ok(bytes) => {
            ctx.tail_out = bytes;
            Ok(())
        }
        Err(result) => encode_into(&result, out, &mut ctx.fds_out, ctx.max_frame),
    }
}

/// Trampoline for a plain function `F: Fn(A) -> R`.
pub(crate) fn call<F, A, R>(
    ctx: &mut WorkerCtx,
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), Failure>
where
    F: Fn(A) -> R + Copy,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let arg: A = decode_value(ctx, input)?;
    let f: F = conjure();
    let result = catch(move || f(arg))?;
    encode_value(result, ctx, out)
}

/// Trampoline for an async function, run to completion on the worker's runtime.
pub(crate) fn call_async<F, A, R>(
    ctx: &mut WorkerCtx,
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), Failure>
where
    F: AsyncTask<A, R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let arg: A = decode_value(ctx, input)?;
    let f: F = conjure();
    let rt = ctx.runtime()?;
    let result = catch(move || rt.block_on(f.call(arg)))?;
    encode_value(result, ctx, out)
}

/// Trampoline for a chunk of `map`: the input is the items' encodings back to back;
/// the output is one encoded `Result<R, Failure>` per item, back to back. A panic fails
/// only its item. An item that does not decode ends the chunk (the rest of the bytes
/// cannot be trusted); the parent fails the items that got no answer.
// One signature for every trampoline; `call` takes the body, this one borrows it.
#[allow(clippy::ptr_arg)]
pub(crate) fn call_batch<F, A, R>(
    ctx: &mut WorkerCtx,
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), Failure>
where
    F: Fn(A) -> R + Copy,
    A: DeserializeOwned,
    R: Serialize,
{
    // Handles' descriptors are supplied and collected once per chunk, not per item:
    // per item, that bookkeeping cost a third of `map`'s throughput on trivial items.
    // The arguments are decoded first and the results encoded last, so that the
    // user's function never runs while a message's descriptors are installed.
    let mut args = Vec::new();
    let mut rest = &input[..];
    let stopped = handles::supply_from(&mut ctx.fds_in, || {
        while !rest.is_empty() {
            match postcard::take_from_bytes::<A>(rest) {
                Ok((arg, tail)) => {
                    args.push(arg);
                    rest = tail;
                }
                Err(e) => return Some(Failure::Decode(CodecError::of::<A>(handles::reason(&e)))),
            }
        }
        None
    });
    let f: F = conjure();
    let (report, seq) = (ctx.on_item.clone(), ctx.task_seq);
    // Failures boxed: a `Failure` is several words, and a chunk of small results
    // kept as `Result<R, Failure>` moved that many bytes per item. A box serialises
    // as what it holds.
    let results: Vec<Result<R, Box<Failure>>> = args
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            if let Some(report) = &report {
                report(seq, i);
            }
            catch(move || f(a)).map_err(Box::new)
        })
        .collect();
    // Items that returned a value; the parent counts the chunk's others as failed
    // (items cut short by an argument that did not decode among them).
    for item in &results {
        match item.as_ref().map_err(|f| &**f) {
            Ok(_) => ctx.outcomes.ok += 1,
            Err(Failure::Panicked(_)) => ctx.outcomes.panicked += 1,
            Err(_) => {}
        }
    }
    let max_frame = ctx.max_frame;
    handles::collect_into(&mut ctx.fds_out, || {
        for item in &results {
            if let Err(failure) = encode_plain(item, out, max_frame) {
                encode_plain::<Result<R, Failure>>(&Err(failure), out, max_frame)?;
            }
        }
        if let Some(failure) = stopped {
            encode_plain::<Result<R, Failure>>(&Err(failure), out, max_frame)?;
        }
        Ok(())
    })
}

/// Trampoline for the pool initializer `F: Fn(A) -> Result<(), E>`.
// One signature for every trampoline; `call` takes the body, this one borrows it.
#[allow(clippy::ptr_arg)]
pub(crate) fn call_init<F, A, E>(
    ctx: &mut WorkerCtx,
    input: &mut Vec<u8>,
    _out: &mut Vec<u8>,
) -> Result<(), Failure>
where
    F: Fn(A) -> Result<(), E> + Copy,
    A: DeserializeOwned,
    E: std::fmt::Display,
{
    let arg: A = decode(ctx, input)?;
    let f: F = conjure();
    catch(move || f(arg))?.map_err(|e| Failure::InitializerFailed {
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn a_trampoline_resolves_to_itself_and_runs() {
        fn item_trampoline<F: Fn(u32) -> u32 + Copy>(_: F) -> Trampoline {
            call::<F, u32, u32>
        }
        let t = item_trampoline(double);
        let r = local_ref(t);
        let back = resolve(image(), r).expect("resolves");
        let mut ctx = WorkerCtx::new(1 << 20);
        let mut out = Vec::new();
        back(
            &mut ctx,
            &mut postcard::to_allocvec(&21u32).unwrap(),
            &mut out,
        )
        .unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&out).unwrap(), 42);
    }

    #[test]
    fn addresses_outside_the_code_are_refused() {
        assert!(matches!(
            resolve(image(), TaskRef::Local(u64::MAX / 2)),
            Err(Failure::UnknownFunction { .. })
        ));
        assert!(matches!(
            resolve(image(), TaskRef::Registered(1)),
            Err(Failure::UnknownFunction { .. })
        ));
    }

    #[test]
    fn fingerprint_is_stable_within_a_process() {
        assert_eq!(fingerprint(), fingerprint());
    }
}
