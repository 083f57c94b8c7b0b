//! What a worker tells its parent about the `tracing` spans and events its tasks
//! emit: the body of a [`Kind::Trace`](super::Kind::Trace) frame.
//!
//! A body is a run of postcard-encoded [`Record`]s, one after the other. A callsite
//! (the static description of a span or event: level, target, field names) is sent
//! once per worker as [`Record::Callsite`] and named by a small number after that, so
//! an event costs its values and little else.
//!
//! Everything in a record is plain data. The parent never takes an address or a code
//! path from it: it interns the callsite's strings (see the pool driver's
//! `callsites`), and bounds how many it keeps.

use serde::{Deserialize, Serialize};

/// The most fields a forwarded span or event may have: `tracing`'s own macros take
/// no more. A callsite with more is not forwarded.
pub(crate) const MAX_FIELDS: usize = 32;

/// The most bytes of one string value that are forwarded; longer ones are cut (at a
/// character boundary) and end in `…`.
pub(crate) const MAX_VALUE_LEN: usize = 16 * 1024;

/// One thing that happened in the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Record {
    /// A callsite seen for the first time, numbered `id` for the records after it.
    Callsite { id: u32, site: Callsite },
    /// A span was created. `parent` is the worker's id of its parent span, if that was
    /// forwarded; otherwise it belongs directly under the span of task `task` (0: no
    /// task was running).
    NewSpan {
        span: u64,
        callsite: u32,
        parent: Option<u64>,
        task: u64,
        values: Vec<(u8, Val)>,
    },
    /// Values recorded on a span after it was created.
    SpanValues { span: u64, values: Vec<(u8, Val)> },
    /// A span was closed; the worker may reuse its id after this.
    CloseSpan { span: u64 },
    /// An event, inside span `parent` or, without one, inside task `task`'s span.
    Event {
        callsite: u32,
        parent: Option<u64>,
        task: u64,
        values: Vec<(u8, Val)>,
    },
    /// The worker dropped this many records because its parent was not reading them
    /// fast enough.
    Dropped { count: u64 },
}

/// The static part of a span or event, as `tracing`'s `Metadata` has it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Callsite {
    pub(crate) span: bool,
    /// 1 (`ERROR`) to 5 (`TRACE`).
    pub(crate) level: u8,
    pub(crate) name: String,
    pub(crate) target: String,
    pub(crate) module_path: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
    pub(crate) fields: Vec<String>,
}

/// A field's value. `Debug` holds what the value's `Debug` printed (the message of
/// an event is one): the parent prints it back as it is, without quotes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Val {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Str(String),
    Debug(String),
}

impl Val {
    /// A string value, cut to [`MAX_VALUE_LEN`].
    pub(crate) fn text(s: &str) -> String {
        if s.len() <= MAX_VALUE_LEN {
            return s.to_owned();
        }
        let mut end = MAX_VALUE_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Appends `record` to a frame body being built.
pub(crate) fn push(body: &mut Vec<u8>, record: &Record) {
    // Plain data into a Vec: cannot fail; never panic while tracing, though.
    let _ = super::encode_into(record, body);
}

/// The records of a body, in order; an error for a body that does not parse.
pub(crate) fn records(
    mut body: &[u8],
) -> impl Iterator<Item = Result<Record, postcard::Error>> + '_ {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<Record>(body) {
            Ok((record, rest)) => {
                body = rest;
                Some(Ok(record))
            }
            Err(e) => {
                body = &[];
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_order() {
        let sent = vec![
            Record::Callsite {
                id: 1,
                site: Callsite {
                    span: false,
                    level: 3,
                    name: "event src/x.rs:1".into(),
                    target: "x".into(),
                    module_path: Some("x".into()),
                    file: None,
                    line: Some(1),
                    fields: vec!["message".into(), "n".into()],
                },
            },
            Record::Event {
                callsite: 1,
                parent: None,
                task: 7,
                values: vec![(0, Val::Debug("hi".into())), (1, Val::U64(3))],
            },
            Record::Dropped { count: 2 },
        ];
        let mut body = Vec::new();
        for r in &sent {
            push(&mut body, r);
        }
        let got: Vec<Record> = records(&body).map(Result::unwrap).collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn a_cut_body_is_an_error_not_a_panic() {
        let mut body = Vec::new();
        push(&mut body, &Record::CloseSpan { span: 1 << 40 });
        body.pop();
        let got: Vec<_> = records(&body).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }

    #[test]
    fn long_text_is_cut_at_a_character() {
        let s = "é".repeat(MAX_VALUE_LEN);
        let cut = Val::text(&s);
        assert!(cut.len() <= MAX_VALUE_LEN + "…".len());
        assert!(cut.ends_with('…'));
    }
}
