//! Remote tasks by name: a message from the network names a task, never a code
//! address. Each process finds a name in its own registry, built at link time from
//! the [`remote_task!`](crate::remote_task) lines of its own build.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::task::{self, Message, Task, Trampoline};
use crate::wire::TaskRef;

/// A function registered to run on remote hosts under a stable name. Made by
/// [`remote_task!`](crate::remote_task); nothing else needs to name this type.
#[derive(Debug)]
pub struct RegisteredTask {
    name: &'static str,
    /// The trampoline for one call.
    call: Trampoline,
    /// The trampoline for a `map` chunk of calls.
    batch: Trampoline,
}

impl RegisteredTask {
    /// Registers `f` under `name`. Used by [`remote_task!`](crate::remote_task).
    #[doc(hidden)]
    pub const fn new<F, A, R>(name: &'static str, _f: &F) -> RegisteredTask
    where
        F: Task<A, R>,
        A: Message,
        R: Message,
    {
        RegisteredTask {
            name,
            call: task::call::<F, A, R>,
            batch: task::call_batch::<F, A, R>,
        }
    }

    /// The name the task is registered under.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

inventory::collect!(RegisteredTask);

/// Which form of a registered task a message asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One call: `TaskHandle`.
    Call,
    /// A chunk of a `map`.
    Batch,
}

impl Shape {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Shape::Call => "call",
            Shape::Batch => "batch",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Shape> {
        match s {
            "call" => Some(Shape::Call),
            "batch" => Some(Shape::Batch),
            _ => None,
        }
    }
}

struct Index {
    by_name: HashMap<&'static str, &'static RegisteredTask>,
    by_ref: HashMap<TaskRef, (&'static str, Shape)>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut by_ref = HashMap::new();
        for t in inventory::iter::<RegisteredTask> {
            // A name registered twice keeps its first function; `duplicates` reports it.
            by_name.entry(t.name).or_insert(t);
            by_ref.insert(task::local_ref(t.call), (t.name, Shape::Call));
            by_ref.insert(task::local_ref(t.batch), (t.name, Shape::Batch));
        }
        Index { by_name, by_ref }
    })
}

/// The name (and form) under which the function behind `func` is registered: how a
/// submitter names a task it is about to send.
pub(crate) fn name_of(func: TaskRef) -> Option<(&'static str, Shape)> {
    index().by_ref.get(&func).copied()
}

/// This process's own reference to the task registered as `name`, in the form asked
/// for: how a host turns a name from the network into a function of its own build.
pub(crate) fn lookup(name: &str, shape: Shape) -> Option<TaskRef> {
    let t = index().by_name.get(name)?;
    Some(task::local_ref(match shape {
        Shape::Call => t.call,
        Shape::Batch => t.batch,
    }))
}

/// Names registered more than once in this build (each keeps its first function).
pub(crate) fn duplicates() -> Vec<&'static str> {
    let mut seen = HashMap::new();
    for t in inventory::iter::<RegisteredTask> {
        *seen.entry(t.name).or_insert(0) += 1;
    }
    let mut twice: Vec<_> = seen
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(name, _)| name)
        .collect();
    twice.sort_unstable();
    twice
}
