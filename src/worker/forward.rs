//! Forwarding what a worker's tasks emit through `tracing` to the parent.
//!
//! When the parent listens (`Hello::trace_level`), the worker installs, as its global
//! default, a `tracing-subscriber` registry with one layer: [`Forward`]. The layer
//! turns spans and events into [`Record`]s and appends them to the [`Outbox`]. The
//! records leave in `Trace` frames on the worker's link to its parent (its ring, or
//! its control socket for a frame too large for a slot):
//! - before each task's reply, so a task's records always precede its result (through
//!   the ring, slot after slot, where they fit one);
//! - from the emitting thread, at once, when more than [`FLUSH_BYTES`] wait;
//! - from a flusher thread, when the oldest has waited [`FLUSH_AFTER`], so a long
//!   task's logs arrive while it runs. The flusher sleeps on a condition variable
//!   while nothing waits, and is woken only by the first record after that: a busy
//!   worker does not wake it once per task, an idle one does not wake at all.
//!
//! Frames go one at a time, whole, through the worker's [`Outgoing`] link, which the
//! serve loop's replies take too. Until the worker has sent `Ready` the parent reads
//! no `Trace` frame, so records wait in the outbox until then. A parent that does not
//! read fills the ring and the socket, and the emitting thread waits, as it would on
//! a full stderr; records that would pass the frame limit meanwhile are dropped and
//! counted ([`Record::Dropped`]).
//!
//! Nothing of this exists in a worker whose parent has no subscriber.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as Values};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use super::link::Outgoing;
use crate::wire::trace::{self, Callsite, Record, Val, MAX_FIELDS};
use crate::wire::{self, Kind};

/// Buffered bytes past which the emitting thread sends them at once.
pub(crate) const FLUSH_BYTES: usize = 32 * 1024;
/// Age of the oldest buffered record past which the flusher sends them.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Most bytes of records in one frame: under the parent's limit for `Trace` frames
/// (1 MiB), with room for the header.
const FRAME_BODY_MAX: usize = (1 << 20) - 4096;

/// The task the worker is running (0: none); records without a forwarded parent
/// span belong to it.
static CURRENT_TASK: AtomicU64 = AtomicU64::new(0);

static OUTBOX: OnceLock<Outbox> = OnceLock::new();

/// Records waiting to go, and the link they go on.
struct Outbox {
    state: Mutex<Pending>,
    /// The flusher waits on it (with `state`).
    wake: Condvar,
    /// The worker's frames to its parent.
    out: Arc<Outgoing>,
    /// `Ready` is sent: the parent reads `Trace` frames now.
    live: AtomicBool,
}

#[derive(Default)]
struct Pending {
    body: Vec<u8>,
    since: Option<Instant>,
    /// Callsites already described to the parent, by the address of their metadata
    /// (only ever compared, never followed).
    callsites: HashMap<usize, u32>,
    /// The last callsite number given.
    next_site: u32,
    dropped: u64,
    /// The flusher waits until a record comes: the next one must wake it.
    flusher_parked: bool,
}

/// Starts forwarding spans and events up to `level` (1 `ERROR` … 5 `TRACE`) through
/// `out`. Does nothing for 0, or if the process already has a global subscriber.
pub(crate) fn install(level: u8, out: Arc<Outgoing>) -> std::io::Result<()> {
    let Some(level) = level_of(level) else {
        return Ok(());
    };
    let outbox = Outbox {
        state: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        out,
        live: AtomicBool::new(false),
    };
    if OUTBOX.set(outbox).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("procpool-trace".to_owned())
        .spawn(flusher)?;
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::from_level(level))
        .with(Forward);
    // Refused only if the worker already has one; then it keeps its own.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// The parent reads `Trace` frames from now on (its worker sent `Ready`).
pub(crate) fn go_live() {
    if let Some(outbox) = OUTBOX.get() {
        outbox.live.store(true, Ordering::Release);
        let _pending = outbox.lock();
        outbox.wake.notify_one();
    }
}

/// Marks the start (`id`) or the end (0) of a task.
pub(crate) fn set_task(id: u64) {
    CURRENT_TASK.store(id, Ordering::Relaxed);
}

/// The buffered records as a `Trace` frame, for the serve loop to send before a
/// reply; `None` if there are none.
pub(crate) fn take_frame() -> Option<Vec<u8>> {
    let outbox = OUTBOX.get()?;
    let mut pending = outbox.lock();
    pending.frame()
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a record (encoded by `encode`, after the callsite's description if this
    /// is its first use), then sends what is buffered if it is due.
    fn add(&self, meta: &'static Metadata<'static>, encode: impl FnOnce(u32, &mut Vec<u8>)) {
        let mut pending = self.lock();
        let key = std::ptr::from_ref(meta) as usize;
        // Encoded in place, after what waits; taken off again only if it does not fit.
        let start = pending.body.len();
        let mut described = false;
        let callsite = match pending.callsites.get(&key) {
            Some(&id) => id,
            None => {
                described = true;
                let Some(site) = describe(meta) else {
                    return; // more fields than can be forwarded
                };
                // Numbered by a counter, never reused: a number given to a record that
                // is dropped below is simply never heard of.
                pending.next_site += 1;
                let id = pending.next_site;
                trace::push(&mut pending.body, &Record::Callsite { id, site });
                pending.callsites.insert(key, id);
                id
            }
        };
        encode(callsite, &mut pending.body);
        let live = self.live.load(Ordering::Acquire);
        if pending.body.len() > FRAME_BODY_MAX {
            let record = pending.body.split_off(start);
            if live {
                let frame = pending.frame();
                drop(pending);
                if let Some(mut frame) = frame {
                    self.send(&mut frame);
                }
                pending = self.lock();
            }
            if pending.body.len() + record.len() > FRAME_BODY_MAX {
                // The callsite's description (if this record carried it) goes too:
                // describe it again next time.
                if described && pending.callsites.get(&key) == Some(&callsite) {
                    pending.callsites.remove(&key);
                }
                pending.dropped += 1;
                return;
            }
            pending.body.extend_from_slice(&record);
        }
        pending.since.get_or_insert_with(Instant::now);
        if std::mem::take(&mut pending.flusher_parked) {
            self.wake.notify_one();
        }
        if live && pending.body.len() >= FLUSH_BYTES {
            let frame = pending.frame();
            drop(pending);
            if let Some(mut frame) = frame {
                self.send(&mut frame);
            }
        }
    }

    /// Sends one frame, whole, between the serve loop's frames. A failure means the
    /// parent is gone; the serve loop learns it from its own next read or write.
    fn send(&self, frame: &mut [u8]) {
        let _ = self.out.send(frame, &[], &[]);
    }
}

/// The flusher thread: sends what has waited [`FLUSH_AFTER`], for the tasks that run
/// long.
fn flusher() {
    let Some(outbox) = OUTBOX.get() else { return };
    let mut pending = outbox.lock();
    loop {
        let due = match pending.since {
            Some(since) if outbox.live.load(Ordering::Acquire) => since + FLUSH_AFTER,
            _ => {
                pending.flusher_parked = true;
                pending = outbox.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
                continue;
            }
        };
        let now = Instant::now();
        if now < due {
            pending = outbox
                .wake
                .wait_timeout(pending, due - now)
                .map_or_else(|e| e.into_inner().0, |(p, _)| p);
            continue;
        }
        let frame = pending.frame();
        drop(pending);
        if let Some(mut frame) = frame {
            outbox.send(&mut frame);
        }
        pending = outbox.lock();
    }
}

impl Pending {
    fn frame(&mut self) -> Option<Vec<u8>> {
        if self.dropped > 0 {
            let count = std::mem::take(&mut self.dropped);
            trace::push(&mut self.body, &Record::Dropped { count });
        }
        if self.body.is_empty() {
            return None;
        }
        self.since = None;
        let mut frame = Vec::with_capacity(wire::HEADER_LEN + self.body.len());
        wire::begin(&mut frame);
        frame.append(&mut self.body);
        wire::finish(&mut frame, Kind::Trace, 0, 0, 0);
        Some(frame)
    }
}

/// The layer that forwards.
struct Forward;

impl<S> Layer<S> for Forward
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(outbox) = OUTBOX.get() else { return };
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut values = Collect::default();
        attrs.record(&mut values);
        let task = CURRENT_TASK.load(Ordering::Relaxed);
        outbox.add(attrs.metadata(), |callsite, out| {
            trace::push(
                out,
                &Record::NewSpan {
                    span: id.into_u64(),
                    callsite,
                    parent,
                    task,
                    values: values.0,
                },
            );
        });
    }

    fn on_record(&self, id: &Id, values: &Values<'_>, ctx: Context<'_, S>) {
        let (Some(outbox), Some(span)) = (OUTBOX.get(), ctx.span(id)) else {
            return;
        };
        let mut collected = Collect::default();
        values.record(&mut collected);
        outbox.add(span.metadata(), |_, out| {
            trace::push(
                out,
                &Record::SpanValues {
                    span: id.into_u64(),
                    values: collected.0,
                },
            );
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(outbox) = OUTBOX.get() else { return };
        let parent = ctx.event_span(event).map(|s| s.id().into_u64());
        let mut values = Collect::default();
        event.record(&mut values);
        let task = CURRENT_TASK.load(Ordering::Relaxed);
        outbox.add(event.metadata(), |callsite, out| {
            trace::push(
                out,
                &Record::Event {
                    callsite,
                    parent,
                    task,
                    values: values.0,
                },
            );
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let (Some(outbox), Some(span)) = (OUTBOX.get(), ctx.span(&id)) else {
            return;
        };
        outbox.add(span.metadata(), |_, out| {
            trace::push(
                out,
                &Record::CloseSpan {
                    span: id.into_u64(),
                },
            );
        });
    }
}

/// The wire description of a callsite; `None` if it has too many fields.
fn describe(meta: &Metadata<'_>) -> Option<Callsite> {
    if meta.fields().len() > MAX_FIELDS {
        return None;
    }
    Some(Callsite {
        span: meta.is_span(),
        level: level_number(*meta.level()),
        name: meta.name().to_owned(),
        target: meta.target().to_owned(),
        module_path: meta.module_path().map(str::to_owned),
        file: meta.file().map(str::to_owned),
        line: meta.line(),
        fields: meta.fields().iter().map(|f| f.name().to_owned()).collect(),
    })
}

/// 1 (`ERROR`) to 5 (`TRACE`), as [`Callsite::level`] and `Hello::trace_level` count.
pub(crate) fn level_number(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The level numbered `n` by [`level_number`]; `None` for anything else.
pub(crate) fn level_of(n: u8) -> Option<Level> {
    Some(match n {
        1 => Level::ERROR,
        2 => Level::WARN,
        3 => Level::INFO,
        4 => Level::DEBUG,
        5 => Level::TRACE,
        _ => return None,
    })
}

/// Collects field values by their index in the callsite.
#[derive(Default)]
struct Collect(Vec<(u8, Val)>);

impl Collect {
    fn put(&mut self, field: &Field, value: Val) {
        if let Ok(i) = u8::try_from(field.index()) {
            self.0.push((i, value));
        }
    }
}

impl Visit for Collect {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Val::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Val::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Val::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Val::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, Val::U128(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Val::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Val::Str(Val::text(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Val::Debug(Val::text(&value.to_string())));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Val::Debug(Val::text(&format!("{value:?}"))));
    }
}
