//! `tracing` across the process boundary, seen by a capturing subscriber in the parent:
//! what a task emits in its worker arrives with its level, target, message and fields,
//! inside the span of its task, which sits inside the submitter's span; and the
//! worker's life (start, crash, recycling, exit) shows as events.
//!
//! Its own test binary: the subscriber is the process's global default, and the pool
//! asks its workers for records only when one is installed.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use procpool::{Event, ProcessPoolExecutor, TaskError};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Field values as text, by name.
type Fields = BTreeMap<String, String>;

#[derive(Clone, Debug)]
struct Seen {
    level: tracing::Level,
    target: String,
    fields: Fields,
    /// The spans it is in, outermost first: name and fields.
    scope: Vec<(String, Fields)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn span(&self, name: &str) -> Option<&Fields> {
        self.scope.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    changed: Condvar,
}

impl Log {
    /// Waits (on a blocking thread) for an event that `want` accepts. The minute is a
    /// guard against a hang when forwarding is broken, not a timing.
    async fn wait_for(self: &Arc<Self>, want: impl Fn(&Seen) -> bool + Send + 'static) -> Seen {
        let log = self.clone();
        tokio::task::spawn_blocking(move || {
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut seen = log.seen.lock().unwrap();
            loop {
                if let Some(s) = seen.iter().find(|s| want(s)) {
                    return s.clone();
                }
                let left = give_up.saturating_duration_since(std::time::Instant::now());
                assert!(!left.is_zero(), "the event never arrived");
                seen = log.changed.wait_timeout(seen, left).unwrap().0;
            }
        })
        .await
        .unwrap()
    }

    fn find(&self, want: impl Fn(&Seen) -> bool) -> Option<Seen> {
        self.seen.lock().unwrap().iter().find(|s| want(s)).cloned()
    }
}

struct Capture(Arc<Log>);

struct SpanFields(Fields);

struct Text<'a>(&'a mut Fields);

impl Visit for Text<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Text(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Text(&mut f.0));
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Text(&mut fields));
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|s| {
                        let fields = s
                            .extensions()
                            .get::<SpanFields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        (s.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let seen = Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields,
            scope,
        };
        self.0.seen.lock().unwrap().push(seen);
        self.0.changed.notify_all();
    }
}

/// The process's capturing subscriber, installed once.
fn log() -> Arc<Log> {
    static LOG: OnceLock<Arc<Log>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Log::default());
        let subscriber = tracing_subscriber::registry()
            .with(LevelFilter::DEBUG)
            .with(Capture(log.clone()));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

// ---- tasks -------------------------------------------------------------------------

/// Logs its answer with fields, at INFO, and answers with its pid.
fn log_answer(x: u64) -> u32 {
    tracing::info!(
        answer = x * 2,
        label = "thumb",
        ok = true,
        "computed {}",
        x * 2
    );
    std::process::id()
}

/// Logs inside a span of its own, recording one of the span's fields later.
fn in_a_span(width: u64) -> u32 {
    let span = tracing::info_span!("resize", width, height = tracing::field::Empty);
    let _inside = span.enter();
    span.record("height", width / 2);
    tracing::debug!(step = 1, "scaled");
    tracing::trace!("not forwarded: the parent listens up to DEBUG");
    std::process::id()
}

/// Logs, then waits for the parent to have seen the log before it returns.
fn log_then_wait(seen: Event) -> u32 {
    tracing::warn!(phase = "halfway", "long task still running");
    seen.blocking_wait().unwrap();
    std::process::id()
}

fn abort(_: ()) -> u32 {
    std::process::abort()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

// ---- tests -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_in_a_worker_arrives_with_its_fields_in_its_task_span() {
    let log = log();
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let request = tracing::info_span!("request", path = "/thumb/21");
    let worker = pool
        .task(log_answer)
        .name("thumbnail")
        .run(21)
        .instrument(request)
        .await
        .unwrap();

    // The reply comes after the task's records: it is there now.
    let seen = log
        .find(|s| s.field("label") == Some("thumb"))
        .expect("the worker's event arrived before its result");
    assert_eq!(seen.level, tracing::Level::INFO);
    assert_eq!(seen.target, module_path!(), "the worker's own target");
    assert_eq!(seen.field("message"), Some("computed 42"));
    assert_eq!(seen.field("answer"), Some("42"));
    assert_eq!(seen.field("ok"), Some("true"));
    let names: Vec<&str> = seen.scope.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["request", "task"],
        "in the task's span, in the request's"
    );
    let task = seen.span("task").unwrap();
    assert_eq!(task.get("task.name").map(String::as_str), Some("thumbnail"));
    assert_eq!(task.get("worker.pid"), Some(&worker.to_string()));
    assert!(task.contains_key("task.id"));
    assert_eq!(task.get("task.items").map(String::as_str), Some("1"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_in_a_worker_is_made_again_inside_the_task_span() {
    let log = log();
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let worker = pool.run(in_a_span, 640).await.unwrap();

    let seen = log
        .find(|s| s.field("message") == Some("scaled"))
        .expect("the event inside the worker's span arrived");
    assert_eq!(seen.level, tracing::Level::DEBUG);
    assert_eq!(seen.field("step"), Some("1"));
    let names: Vec<&str> = seen.scope.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["task", "resize"]);
    let task = seen.span("task").unwrap();
    assert_eq!(task.get("worker.pid"), Some(&worker.to_string()));
    assert!(
        task.get("task.name").unwrap().ends_with("in_a_span"),
        "an unnamed task is named by its function: {task:?}"
    );
    let resize = seen.span("resize").unwrap();
    assert_eq!(resize.get("width").map(String::as_str), Some("640"));
    assert_eq!(resize.get("height").map(String::as_str), Some("320"));
    assert!(
        log.find(|s| s
            .field("message")
            .is_some_and(|m| m.starts_with("not forwarded")))
            .is_none(),
        "a level the parent does not listen to stays in the worker"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_logs_while_it_runs() {
    let log = log();
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let seen = Event::new().unwrap();
    let task = pool.try_submit(log_then_wait, seen.clone()).unwrap();
    // The task waits for this: its record must arrive while it still runs.
    let got = log.wait_for(|s| s.field("phase") == Some("halfway")).await;
    assert_eq!(got.level, tracing::Level::WARN);
    seen.set();
    let worker = task.await.unwrap();
    let in_task = got.span("task").unwrap();
    assert_eq!(in_task.get("worker.pid"), Some(&worker.to_string()));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_start_crash_recycling_and_exit_are_events() {
    let log = log();
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .max_tasks_per_worker(2)
        .build()
        .unwrap();
    let first = pool.run(pid, ()).await.unwrap();
    let pid_is = |pid: u32| move |s: &Seen| s.field("worker.pid") == Some(&pid.to_string());
    let started = log
        .find(|s| s.field("message") == Some("worker started") && pid_is(first)(s))
        .expect("started before it ran a task");
    assert_eq!(started.target, "procpool::worker");

    // The crash is reported before the task's error is.
    let err = pool.run(abort, ()).await.unwrap_err();
    assert!(matches!(err, TaskError::WorkerDied { .. }), "{err}");
    let crashed = log
        .find(|s| s.field("message") == Some("worker crashed") && pid_is(first)(s))
        .expect("the crash is an event");
    assert_eq!(crashed.level, tracing::Level::WARN);
    assert!(
        crashed.field("how").unwrap().contains("signal"),
        "{crashed:?}"
    );

    // Two tasks, then recycled: the third runs on the next worker, started after the
    // recycling was reported.
    let second = pool.run(pid, ()).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(pool.run(pid, ()).await.unwrap(), second);
    let third = pool.run(pid, ()).await.unwrap();
    assert_ne!(third, second);
    let recycled = log
        .find(|s| s.field("message") == Some("worker recycled") && pid_is(second)(s))
        .expect("the recycling is an event");
    assert_eq!(recycled.field("why"), Some("max_tasks_per_worker"));

    pool.shutdown().await;
    let exited = log
        .find(|s| s.field("message") == Some("worker exited") && pid_is(third)(s))
        .expect("the exit at shutdown is an event");
    assert_eq!(exited.level, tracing::Level::DEBUG);
}
