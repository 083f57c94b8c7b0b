//! The parent's stand-ins for callsites that live in a worker.
//!
//! `tracing` describes every span and event by a `&'static Metadata` that belongs to a
//! registered callsite. A worker's callsites arrive as data (`wire::trace::Callsite`),
//! so the parent makes one of its own for each: it leaks the strings and a small
//! [`Site`], and registers it, so that the subscriber's filters (`EnvFilter` by
//! target, per-layer filters) see it as they see any other.
//!
//! Leaking is bounded: every worker is this same executable, so they describe the
//! same callsites, and each description is interned once for the process. A worker
//! that sent more than [`MAX_SITES`] distinct ones (it could only by being broken) gets
//! `None` past that, and its records for them are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing_core::callsite::{self, Callsite, Identifier};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::{Interest, Metadata};

use crate::wire::trace::{self as wire_trace, MAX_FIELDS};

/// Most distinct callsites interned for the life of the process.
pub(super) const MAX_SITES: usize = 4096;

static SITES: OnceLock<Mutex<HashMap<wire_trace::Callsite, &'static Site>>> = OnceLock::new();

/// A callsite made at run time.
pub(super) struct Site {
    meta: OnceLock<Metadata<'static>>,
    /// What the subscribers said at registration: 0 never, 1 sometimes, 2 always.
    interest: AtomicU8,
}

impl Callsite for Site {
    fn set_interest(&self, interest: Interest) {
        let n = if interest.is_never() {
            0
        } else if interest.is_always() {
            2
        } else {
            1
        };
        self.interest.store(n, Ordering::Relaxed);
    }

    fn metadata(&self) -> &Metadata<'_> {
        // Set in `make`, before the site is registered or handed out.
        self.meta
            .get()
            .expect("a site's metadata is set before it is used")
    }
}

impl Site {
    /// The site's metadata.
    pub(super) fn meta(&'static self) -> &'static Metadata<'static> {
        self.meta
            .get()
            .expect("a site's metadata is set before it is used")
    }

    /// Whether the current subscriber wants what comes from this site.
    pub(super) fn enabled(&'static self) -> bool {
        let meta = self.meta();
        if self.interest.load(Ordering::Relaxed) == 0
            || *meta.level() > tracing_core::LevelFilter::current()
        {
            return false;
        }
        tracing_core::dispatcher::get_default(|d| d.enabled(meta))
    }
}

/// The parent's site for a worker's callsite `site`; `None` if it cannot be made (a
/// level out of range, too many fields, or [`MAX_SITES`] reached).
pub(super) fn intern(site: &wire_trace::Callsite) -> Option<&'static Site> {
    let mut sites = SITES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&made) = sites.get(site) {
        return Some(made);
    }
    if sites.len() >= MAX_SITES {
        return None;
    }
    let made = make(site)?;
    sites.insert(site.clone(), made);
    Some(made)
}

fn make(site: &wire_trace::Callsite) -> Option<&'static Site> {
    let level = match site.level {
        1 => tracing_core::Level::ERROR,
        2 => tracing_core::Level::WARN,
        3 => tracing_core::Level::INFO,
        4 => tracing_core::Level::DEBUG,
        5 => tracing_core::Level::TRACE,
        _ => return None,
    };
    if site.fields.len() > MAX_FIELDS {
        return None;
    }
    let fields: Vec<&'static str> = site.fields.iter().map(|f| leak(f)).collect();
    let made: &'static Site = Box::leak(Box::new(Site {
        meta: OnceLock::new(),
        interest: AtomicU8::new(1),
    }));
    let meta = Metadata::new(
        leak(&site.name),
        leak(&site.target),
        level,
        site.file.as_deref().map(leak),
        site.line,
        site.module_path.as_deref().map(leak),
        FieldSet::new(Box::leak(fields.into_boxed_slice()), Identifier(made)),
        if site.span { Kind::SPAN } else { Kind::EVENT },
    );
    // A fresh site: nobody else can have set it.
    let _ = made.meta.set(meta);
    callsite::register(made);
    Some(made)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}
