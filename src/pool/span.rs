//! The pool's side of `tracing` (feature `tracing`): each task's span, and the events
//! of a worker's life. Without the feature, all of it is empty and compiles away.
//!
//! A task's span is made when a worker takes the task, inside the span the submitter
//! was in when it submitted (an HTTP request's, say; kept alive meanwhile). Made then,
//! it is made whole, without a field recorded later (which a subscriber such as fmt
//! pays for by formatting the span's fields again). It is named `task`, with target
//! `procpool`, level `INFO`, and the fields
//! - `task.id`: the pool's number for the task (a `map` chunk is one task);
//! - `task.name`: the name given with [`TaskBuilder::name`], else the function's type
//!   name;
//! - `task.items`: how many items (more than 1 for a `map` chunk);
//! - `worker.pid`: the worker that runs it.
//!
//! What the task emits in the worker is re-emitted inside it (see the driver's
//! `replay`). Worker events have target `procpool::worker` and a `worker.pid` field:
//! `started` (`INFO`), `exited` (`DEBUG`), `crashed` (`WARN`, with how it ended) and
//! `recycled` (`INFO`, with why). When an idle pool gives back the memory of a
//! worker's large frames, an event with target `procpool::bulk` (`DEBUG`) says so.
//!
//! [`TaskBuilder::name`]: crate::TaskBuilder::name

/// What a task is called in its span and errors: its function's type name, or the
/// name given to it.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) enum TaskName {
    Function(&'static str),
    Given(std::sync::Arc<str>),
}

impl TaskName {
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            TaskName::Function(s) => s,
            TaskName::Given(s) => s,
        }
    }
}

/// A task's span in the parent, and until a worker takes the task, what it will be
/// made from. Nothing (a null box) while nothing listens at `INFO`: then a task pays
/// one load of the maximum level, and a job grows by a pointer.
#[derive(Debug, Default)]
pub(crate) struct TaskSpan {
    #[cfg(feature = "tracing")]
    traced: Option<Box<Traced>>,
}

#[cfg(feature = "tracing")]
#[derive(Debug)]
struct Traced {
    /// The submitter's span.
    parent: tracing::Span,
    name: TaskName,
    span: tracing::Span,
}

impl TaskSpan {
    /// A task named `name`, whose span will sit in the caller's current span.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn new(name: TaskName) -> TaskSpan {
        TaskSpan {
            #[cfg(feature = "tracing")]
            traced: tracing::level_enabled!(tracing::Level::INFO).then(|| {
                Box::new(Traced {
                    parent: tracing::Span::current(),
                    name,
                    span: tracing::Span::none(),
                })
            }),
        }
    }

    /// The worker `pid` took task `id` of `items` items: makes its span.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn taken_by(&mut self, id: u64, items: u32, pid: u32) {
        #[cfg(feature = "tracing")]
        if let Some(t) = self.traced.as_mut() {
            t.span = tracing::info_span!(
                target: "procpool",
                parent: &t.parent,
                "task",
                "task.id" = id,
                "task.name" = t.name.as_str(),
                "task.items" = items,
                "worker.pid" = pid,
            );
        }
    }

    /// The span's id, if a subscriber made it.
    #[cfg(feature = "tracing")]
    pub(crate) fn id(&self) -> Option<tracing::span::Id> {
        self.traced.as_ref().and_then(|t| t.span.id())
    }
}

/// The most verbose level the parent listens to, as `Hello::trace_level` says it: 0 if
/// nothing listens (or without the feature).
pub(crate) fn listening_level() -> u8 {
    #[cfg(feature = "tracing")]
    {
        use tracing::level_filters::LevelFilter;
        match LevelFilter::current() {
            LevelFilter::ERROR => 1,
            LevelFilter::WARN => 2,
            LevelFilter::INFO => 3,
            LevelFilter::DEBUG => 4,
            LevelFilter::TRACE => 5,
            _ => 0,
        }
    }
    #[cfg(not(feature = "tracing"))]
    0
}

/// A worker is up and ready for tasks.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn worker_started(pid: u32) {
    #[cfg(feature = "tracing")]
    tracing::event!(target: "procpool::worker", tracing::Level::INFO, worker.pid = pid, "worker started");
}

/// A worker exited as it was told to (shutdown, retirement, recycling).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn worker_exited(pid: u32) {
    #[cfg(feature = "tracing")]
    tracing::event!(target: "procpool::worker", tracing::Level::DEBUG, worker.pid = pid, "worker exited");
}

/// A worker died or was killed while it had work: `how` says how it ended.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn worker_crashed(pid: u32, how: &dyn std::fmt::Display) {
    #[cfg(feature = "tracing")]
    tracing::event!(target: "procpool::worker", tracing::Level::WARN, worker.pid = pid, how = %how, "worker crashed");
}

/// An idle pool gave back the memory its large frames to and from worker `pid` went
/// through (target `procpool::bulk`).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn bulk_given_back(pid: u32) {
    #[cfg(feature = "tracing")]
    tracing::event!(target: "procpool::bulk", tracing::Level::DEBUG, worker.pid = pid, "bulk area given back");
}

/// A worker is being replaced for a reason other than a crash.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn worker_recycled(pid: u32, why: &str) {
    #[cfg(feature = "tracing")]
    tracing::event!(target: "procpool::worker", tracing::Level::INFO, worker.pid = pid, why, "worker recycled");
}
