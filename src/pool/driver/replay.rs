//! Re-emitting a worker's forwarded spans and events in the parent, inside the span of
//! the task that emitted them.
//!
//! One [`Replay`] per driver, for the worker it has now. It maps the worker's
//! callsite numbers to the parent's stand-in sites ([`callsites`]), and the worker's
//! span ids to spans re-created here: a span whose parent was forwarded is created
//! under that parent's stand-in, any other under its task's span. A span lives until
//! the worker says it closed, or until the worker is gone (the `Replay` is dropped).
//!
//! A record that names a callsite or span this side does not know is skipped, not an
//! error: the worker drops records when the parent falls behind, and may have dropped
//! the one that described it. A body that does not parse is a protocol error.

use std::collections::HashMap;

use tracing::field::{self, Field, Value};
use tracing::span::Id;
use tracing::{Event, Span};

use super::callsites::{self, Site};
use crate::error::ProtocolError;
use crate::wire::trace::{self, Record, Val, MAX_FIELDS};

/// Most spans of one worker re-created at a time; past it, new spans are not made
/// and what they contain goes to the task's span.
const MAX_SPANS: usize = 4096;

/// One worker's forwarded callsites and live spans.
#[derive(Default)]
pub(super) struct Replay {
    sites: HashMap<u32, &'static Site>,
    spans: HashMap<u64, Span>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("sites", &self.sites.len())
            .field("spans", &self.spans.len())
            .finish()
    }
}

impl Replay {
    /// Re-emits the records of a `Trace` frame. `task_span` gives the span of a task in
    /// flight on this worker, by id.
    ///
    /// # Errors
    /// A body that does not parse.
    pub(super) fn apply(
        &mut self,
        body: &[u8],
        worker: u32,
        task_span: impl Fn(u64) -> Option<Id>,
    ) -> Result<(), ProtocolError> {
        for record in trace::records(body) {
            let record = record.map_err(|e| ProtocolError::Malformed {
                reason: format!("trace records: {e}"),
            })?;
            match record {
                Record::Callsite { id, site } => {
                    if let Some(made) = callsites::intern(&site) {
                        self.sites.insert(id, made);
                    }
                }
                Record::NewSpan {
                    span,
                    callsite,
                    parent,
                    task,
                    values,
                } => {
                    if self.spans.len() >= MAX_SPANS {
                        continue;
                    }
                    let Some(&site) = self.sites.get(&callsite) else {
                        continue;
                    };
                    if !site.enabled() {
                        continue;
                    }
                    let parent = self.parent(parent, task, &task_span);
                    let made = with_values(site, &values, |set| {
                        Span::child_of(parent, site.meta(), set)
                    });
                    self.spans.insert(span, made);
                }
                Record::SpanValues { span, values } => {
                    let Some(made) = self.spans.get(&span) else {
                        continue;
                    };
                    let Some(meta) = made.metadata() else {
                        continue;
                    };
                    let fields = meta.fields();
                    for (i, val) in &values {
                        if let Some(field) = fields.iter().nth(usize::from(*i)) {
                            made.record(field.name(), Shown::of(val).as_value());
                        }
                    }
                }
                Record::CloseSpan { span } => {
                    self.spans.remove(&span);
                }
                Record::Event {
                    callsite,
                    parent,
                    task,
                    values,
                } => {
                    let Some(&site) = self.sites.get(&callsite) else {
                        continue;
                    };
                    if !site.enabled() {
                        continue;
                    }
                    let parent = self.parent(parent, task, &task_span);
                    with_values(site, &values, |set| {
                        Event::child_of(parent, site.meta(), set);
                    });
                }
                Record::Dropped { count } => {
                    tracing::event!(target: "procpool::worker", tracing::Level::WARN, worker.pid = worker,
                        dropped = count,
                        "a worker dropped tracing records: the parent read them too slowly"
                    );
                }
            }
        }
        Ok(())
    }

    /// The parent span of something forwarded: its forwarded parent span, else its
    /// task's span, else none (a root).
    fn parent(
        &self,
        parent: Option<u64>,
        task: u64,
        task_span: &impl Fn(u64) -> Option<Id>,
    ) -> Option<Id> {
        parent
            .and_then(|p| self.spans.get(&p))
            .and_then(Span::id)
            .or_else(|| task_span(task))
    }
}

/// A forwarded value as `tracing` takes it.
enum Shown<'a> {
    Plain(&'a Val),
    Debug(field::DebugValue<Raw<'a>>),
}

/// Text a worker printed with `Debug`, printed back as it is.
struct Raw<'a>(&'a str);

impl std::fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl<'a> Shown<'a> {
    fn of(val: &'a Val) -> Shown<'a> {
        match val {
            Val::Debug(s) => Shown::Debug(field::debug(Raw(s))),
            other => Shown::Plain(other),
        }
    }

    fn as_value(&self) -> &dyn Value {
        match self {
            Shown::Debug(d) => d,
            Shown::Plain(Val::Bool(v)) => v,
            Shown::Plain(Val::I64(v)) => v,
            Shown::Plain(Val::U64(v)) => v,
            Shown::Plain(Val::I128(v)) => v,
            Shown::Plain(Val::U128(v)) => v,
            Shown::Plain(Val::F64(v)) => v,
            Shown::Plain(Val::Str(v) | Val::Debug(v)) => v,
        }
    }
}

/// Calls `emit` with the value set of `values` (by field index) for `site`.
fn with_values<T>(
    site: &'static Site,
    values: &[(u8, Val)],
    emit: impl FnOnce(&field::ValueSet<'_>) -> T,
) -> T {
    let fields = site.meta().fields();
    // One allocation: each field beside its value, if the record has one.
    let mut items: Vec<(Field, Option<Shown<'_>>)> = fields.iter().map(|f| (f, None)).collect();
    for (i, val) in values {
        if let Some(slot) = items.get_mut(usize::from(*i)) {
            slot.1 = Some(Shown::of(val));
        }
    }
    // `tracing` takes a value set as an array of the callsite's length.
    macro_rules! by_len {
        ($($n:literal)*) => {
            match items.len() {
                $($n => {
                    let array: [(&Field, Option<&dyn Value>); $n] = std::array::from_fn(|i| {
                        (&items[i].0, items[i].1.as_ref().map(Shown::as_value))
                    });
                    emit(&fields.value_set(&array))
                })*
                _ => emit(&fields.value_set(&[])),
            }
        };
    }
    const _: () = assert!(MAX_FIELDS == 32);
    by_len!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
}
