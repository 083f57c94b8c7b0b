//! The wire between a parent and one worker: a unix socketpair carrying frames.
//!
//! A frame is a fixed 32-byte header followed by a body:
//!
//! | bytes  | field | meaning                                                        |
//! |--------|-------|----------------------------------------------------------------|
//! | 0..8   | len   | body length (little endian), checked against the frame limit  |
//! | 8..10  | kind  | which message (see [`Kind`])                                   |
//! | 10..12 | nfds  | descriptors sent with the frame's first byte ([`handles`])     |
//! | 12..16 | flags | per kind: [`FLAG_FAILED`] on `Done`, [`FLAG_REGISTERED`] on `Run` |
//! | 16..24 | id    | the task id a `Run`/`Done` belongs to                           |
//! | 24..32 | func  | the task reference of a `Run`                                  |
//!
//! Bodies are postcard: a task's argument or result is serialised straight into the
//! frame buffer after the header (no intermediate copy), and control messages
//! ([`Hello`], [`Ready`], [`Failure`]) are postcard-encoded structs. A header that
//! does not parse, a kind that is unknown or a length over the limit is a
//! [`ProtocolError`], never a panic; the connection is then dropped.
//!
//! The fixed header keeps the hot path free of a second encoding pass: the header is
//! patched in place once the body's length is known.

use std::io;

use serde::{Deserialize, Serialize};

use crate::error::{CodecError, PanicInfo, ProtocolError};

pub(crate) mod bulk;
pub(crate) mod fork;
pub(crate) mod handles;
pub(crate) mod lanes;
pub(crate) mod ring;
pub(crate) mod stream;
#[cfg(feature = "tracing")]
pub(crate) mod trace;
pub(crate) mod value;

/// Size of the fixed frame header.
pub(crate) const HEADER_LEN: usize = 32;
/// On `Done`: the body is a [`Failure`], not the result.
pub(crate) const FLAG_FAILED: u32 = 1;
/// On `Run`: `func` is a registered id, not a local offset.
pub(crate) const FLAG_REGISTERED: u32 = 2;
/// On `Done`: the task was cancelled before it started and did not run; no body.
pub(crate) const FLAG_SKIPPED: u32 = 4;
/// On `Done`: the worker is over its memory limit after this task; retire it once
/// its tasks in flight are answered.
pub(crate) const FLAG_RECYCLE: u32 = 8;
/// Control messages are small; anything bigger is garbage.
const MAX_CONTROL_BODY: u64 = 1 << 20;

/// The message a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// Parent → worker, first frame: [`Hello`].
    Hello = 1,
    /// Parent → worker: run `func` on the body (the encoded argument).
    Run = 2,
    /// Parent → worker: finish and exit 0.
    Shutdown = 3,
    /// Parent → worker: the pool has been idle a while; give back the pages of your
    /// half of the bulk area (`wire::bulk`), unless a frame there is still unread.
    Release = 4,
    /// Worker → parent, answer to `Hello`: [`Ready`].
    Ready = 10,
    /// Worker → parent, answer to `Hello`: the worker's fingerprint (u64), then it exits.
    Refused = 11,
    /// Worker → parent, answer to `Hello`: the initializer's [`Failure`], then it exits.
    InitFailed = 12,
    /// Worker → parent: the result of `Run` `id` (or a [`Failure`] with [`FLAG_FAILED`]).
    Done = 13,
    /// Worker → parent: `tracing` spans and events of its tasks (`wire::trace`),
    /// sent only when the `Hello` asked for them.
    Trace = 14,
    /// A message on a pipe (`Connection`): the body is the encoded value; `id` is its
    /// number in the pipe's order when the pipe has a ring (`crate::pipe::ring`).
    Message = 20,
    /// On a pipe with a ring: no message, only a wake-up for a receiver that fell
    /// asleep just as a message went into the ring. Receivers discard it.
    Nudge = 21,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Run,
            3 => Kind::Shutdown,
            4 => Kind::Release,
            10 => Kind::Ready,
            11 => Kind::Refused,
            12 => Kind::InitFailed,
            13 => Kind::Done,
            14 => Kind::Trace,
            20 => Kind::Message,
            21 => Kind::Nudge,
            _ => return None,
        })
    }

    /// Small fixed-purpose messages, held to their own 1 MiB limit. `Hello` is not one:
    /// it carries the initializer's argument, held to the pool's frame limit.
    fn is_control(self) -> bool {
        !matches!(self, Kind::Hello | Kind::Run | Kind::Done | Kind::Message)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u64,
    pub(crate) kind: Kind,
    /// Descriptors that came with the frame.
    pub(crate) nfds: u16,
    pub(crate) flags: u32,
    pub(crate) id: u64,
    pub(crate) func: u64,
}

impl Header {
    /// The header of a message of `len` bytes that came without one of ours (Python's
    /// framing, see [`stream::Framing`]).
    pub(crate) fn message(len: u64) -> Header {
        Header {
            len,
            kind: Kind::Message,
            nfds: 0,
            flags: 0,
            id: 0,
            func: 0,
        }
    }

    /// Parses and validates a header against the frame size limit.
    pub(crate) fn parse(raw: &[u8; HEADER_LEN], limit: u64) -> Result<Header, ProtocolError> {
        let u64_at = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let len = u64_at(0);
        let u16_at = |i: usize| u16::from_le_bytes(raw[i..i + 2].try_into().expect("2 bytes"));
        let kind = Kind::from_u32(u16_at(8).into()).ok_or_else(|| ProtocolError::Malformed {
            reason: format!("unknown frame kind {}", u16_at(8)),
        })?;
        let limit = if kind.is_control() {
            limit.min(MAX_CONTROL_BODY)
        } else {
            limit
        };
        if len > limit {
            return Err(ProtocolError::FrameTooLarge { len, limit });
        }
        Ok(Header {
            len,
            kind,
            nfds: u16_at(10),
            flags: u32_at(12),
            id: u64_at(16),
            func: u64_at(24),
        })
    }
}

/// Clears `buf` and reserves room for a header; append the body, then call [`finish`].
pub(crate) fn begin(buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
}

/// Writes the header of a frame whose body has been appended after [`begin`].
pub(crate) fn finish(buf: &mut [u8], kind: Kind, flags: u32, id: u64, func: u64) {
    let len = (buf.len() - HEADER_LEN) as u64;
    buf[0..8].copy_from_slice(&len.to_le_bytes());
    buf[8..10].copy_from_slice(&(kind as u16).to_le_bytes());
    buf[10..12].copy_from_slice(&0u16.to_le_bytes());
    buf[12..16].copy_from_slice(&flags.to_le_bytes());
    buf[16..24].copy_from_slice(&id.to_le_bytes());
    buf[24..32].copy_from_slice(&func.to_le_bytes());
}

/// Sets a finished header's `id`.
pub(crate) fn set_id(buf: &mut [u8], id: u64) {
    buf[16..24].copy_from_slice(&id.to_le_bytes());
}

/// Sets a finished header's body length and descriptor count, for a frame whose body
/// goes on past `buf` in a tail of `tail` bytes and which carries `nfds` descriptors.
pub(crate) fn set_extent(buf: &mut [u8], tail: usize, nfds: usize) {
    let len = (buf.len() - HEADER_LEN + tail) as u64;
    buf[0..8].copy_from_slice(&len.to_le_bytes());
    buf[10..12].copy_from_slice(&(nfds as u16).to_le_bytes());
}

/// Why a body of `len` bytes is refused under a frame limit of `limit` bytes.
pub(crate) fn over_limit(len: u64, limit: u64) -> String {
    format!("{len} bytes is over the frame size limit of {limit} bytes")
}

/// Appends `value`, postcard-encoded, to `out`. On an error, what was appended so far
/// stays (callers truncate back).
///
/// Not `postcard::to_io`: its writer takes every byte through `io::Write::write_all`,
/// a call and a `memcpy` per byte of a varint, which cost a trivial `map` item as much
/// as running it. This pushes the bytes into the vector directly.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> postcard::Result<()> {
    /// `Extend<u8>` onto a borrowed vector, for `postcard::to_extend`.
    struct Tail<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Tail<'_> {
        #[inline]
        fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
            self.0.extend(bytes);
        }
    }
    postcard::to_extend(value, Tail(out)).map(drop)
}

/// A whole control frame with a postcard body.
pub(crate) fn control<T: Serialize>(kind: Kind, body: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    begin(&mut buf);
    // Serialising our own plain structs into a Vec cannot fail.
    encode_into(body, &mut buf).expect("control messages always encode");
    finish(&mut buf, kind, 0, 0, 0);
    buf
}

/// An encoded value and the descriptors of the handles in it.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    pub(crate) body: Vec<u8>,
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
    /// For a `map` chunk, how its items ended.
    pub(crate) outcomes: Outcomes,
}

/// How the items of a `map` chunk ended: how many returned a value and how many
/// panicked (the others failed otherwise). The worker counts them, so that the pool's
/// statistics count items without decoding results. Carried in a `Done` header's
/// `func` field, unused otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcomes {
    pub(crate) ok: u32,
    pub(crate) panicked: u32,
}

impl Outcomes {
    pub(crate) fn to_u64(self) -> u64 {
        u64::from(self.ok) | u64::from(self.panicked) << 32
    }

    pub(crate) fn from_u64(raw: u64) -> Outcomes {
        Outcomes {
            ok: raw as u32,
            panicked: (raw >> 32) as u32,
        }
    }
}

/// Decodes a control body.
pub(crate) fn decode_control<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProtocolError> {
    postcard::from_bytes(body).map_err(|e| ProtocolError::Malformed {
        reason: format!("control message {}: {e}", std::any::type_name::<T>()),
    })
}

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection (at or inside a frame).
    Eof,
    /// Another I/O error.
    Io(io::Error),
    /// The bytes are not a frame we accept.
    Protocol(ProtocolError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => ReadError::Eof,
            _ => ReadError::Io(e),
        }
    }
}

/// How a task names its function: an offset into this executable (a same-binary
/// worker), or a registered id (reserved for workers on other machines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum TaskRef {
    /// Address of a trampoline minus the executable's load base.
    Local(u64),
    /// A stable id from an explicit registry (not yet served by workers).
    Registered(u64),
}

impl TaskRef {
    pub(crate) fn to_header(self) -> (u32, u64) {
        match self {
            TaskRef::Local(off) => (0, off),
            TaskRef::Registered(id) => (FLAG_REGISTERED, id),
        }
    }

    pub(crate) fn from_header(flags: u32, func: u64) -> TaskRef {
        if flags & FLAG_REGISTERED != 0 {
            TaskRef::Registered(func)
        } else {
            TaskRef::Local(func)
        }
    }
}

/// First frame from the parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The parent's build fingerprint; the worker refuses to go on if its own differs.
    pub(crate) fingerprint: u64,
    /// Frame size limit the worker must respect for results.
    pub(crate) max_frame: u64,
    /// The initializer and its encoded argument, run before `Ready`.
    pub(crate) initializer: Option<(TaskRef, Vec<u8>)>,
    /// The child's name (`current_process().name`).
    pub(crate) name: String,
    /// A `Process` child: run one task, then exit (0, or 1 if it failed).
    pub(crate) one_shot: bool,
    /// The parent's authentication key, inherited as Python's
    /// `current_process().authkey` is (over the socket, not the environment).
    pub(crate) authkey: Vec<u8>,
    /// A pool worker: the frame's last descriptor is its progress page
    /// (`worker::progress`), to claim each task on before running it.
    pub(crate) progress: bool,
    /// A pool worker: before the progress page come the descriptors of its
    /// shared-memory ring ([`ring::WorkerFds`]), through which frames go after `Ready`.
    pub(crate) ring: bool,
    /// The ring has a bulk area: its file is the ring's fourth descriptor.
    pub(crate) bulk: bool,
    /// Whether the worker may poll for its next task before sleeping: only where
    /// there are more cores than the workers and the parent's busiest thread need.
    pub(crate) spin: bool,
    /// Whether a worker that may not poll still glances at its ring for a few
    /// microseconds before sleeping: where the workers do not outnumber the cores.
    pub(crate) glance: bool,
    /// A pool worker's limits.
    pub(crate) limits: WorkerLimits,
    /// The most verbose `tracing` level the parent listens to, 1 (`ERROR`) to 5
    /// (`TRACE`): the worker forwards spans and events up to it in `Trace` frames. 0:
    /// forward nothing (no subscriber in the parent, or not a pool worker).
    pub(crate) trace_level: u8,
}

/// The worker's answer once it is set up and its initializer has run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub(crate) pid: u32,
    pub(crate) fingerprint: u64,
}

/// Why a task (or an item of a batch) produced no value, as the worker reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked(PanicInfo),
    Encode(CodecError),
    Decode(CodecError),
    UnknownFunction {
        reason: String,
    },
    Runtime {
        reason: String,
    },
    InitializerFailed {
        message: String,
    },
    /// The worker could not set one of its limits on itself.
    LimitRefused {
        limit: String,
        errno: i32,
    },
}

/// Limits a pool worker sets on itself before it runs anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerLimits {
    /// CPU seconds each task may use (`RLIMIT_CPU`, moved on before each task).
    pub(crate) cpu_secs: Option<u64>,
    /// Resident bytes after a task above which the worker asks to be retired.
    pub(crate) max_rss: Option<u64>,
    pub(crate) nice: Option<i32>,
    /// The CPUs it may run on.
    pub(crate) cpus: Option<Vec<usize>>,
    /// Bytes of address space (`RLIMIT_AS`).
    pub(crate) address_space: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_into_appends_exactly_what_postcard_encodes() {
        #[derive(Serialize)]
        struct Item {
            n: u64,
            s: String,
            v: Vec<i32>,
            r: Result<u8, Failure>,
        }
        let mut out = vec![7u8; 3];
        let values = [
            Item {
                n: u64::MAX,
                s: "ünïcode".into(),
                v: vec![-1, 0, 1 << 30],
                r: Ok(5),
            },
            Item {
                n: 0,
                s: String::new(),
                v: vec![],
                r: Err(Failure::Runtime {
                    reason: "boom".into(),
                }),
            },
        ];
        let mut expected = out.clone();
        for v in &values {
            encode_into(v, &mut out).unwrap();
            expected.extend(postcard::to_stdvec(v).unwrap());
        }
        assert_eq!(out, expected);
        // A boxed failure encodes as the failure itself (what `call_batch` relies on).
        let (mut boxed, plain) = (Vec::new(), Vec::new());
        encode_into(
            &Err::<u64, _>(Box::new(Failure::Runtime { reason: "x".into() })),
            &mut boxed,
        )
        .unwrap();
        let mut plain = plain;
        encode_into(
            &Err::<u64, _>(Failure::Runtime { reason: "x".into() }),
            &mut plain,
        )
        .unwrap();
        assert_eq!(boxed, plain);
    }

    fn frame(kind: u32, len: u64) -> [u8; HEADER_LEN] {
        let mut raw = [0u8; HEADER_LEN];
        raw[0..8].copy_from_slice(&len.to_le_bytes());
        raw[8..10].copy_from_slice(&(kind as u16).to_le_bytes());
        raw
    }

    /// Writes `bytes` into a socketpair, closes the writing end and reads frames
    /// until an error.
    /// A socket that reads `bytes`, then EOF.
    pub(super) fn socket_reading(bytes: &[u8]) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd;
        let (a, b) = crate::sys::sock::pair(crate::sys::sock::Kind::Stream).unwrap();
        let mut sent = 0;
        while sent < bytes.len() {
            sent += crate::sys::sock::send(a.as_fd(), &bytes[sent..], &[], false).unwrap();
        }
        b
    }

    pub(super) fn read_all(bytes: &[u8], limit: u64) -> (Vec<stream::Frame>, ReadError) {
        use std::os::fd::AsFd;
        let b = socket_reading(bytes);
        let mut reader = stream::FrameReader::new(limit);
        let mut frames = Vec::new();
        loop {
            match reader.read(b.as_fd(), false) {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, e),
            }
        }
    }

    #[test]
    fn header_round_trips() {
        let mut buf = Vec::new();
        begin(&mut buf);
        buf.extend_from_slice(b"hello");
        finish(&mut buf, Kind::Done, FLAG_FAILED, 7, 99);
        let h = Header::parse(buf[..HEADER_LEN].try_into().unwrap(), 1 << 30).unwrap();
        assert_eq!(
            h,
            Header {
                len: 5,
                kind: Kind::Done,
                nfds: 0,
                flags: FLAG_FAILED,
                id: 7,
                func: 99
            }
        );
    }

    #[test]
    fn unknown_kind_and_oversized_frames_are_typed_errors() {
        assert!(matches!(
            Header::parse(&frame(77, 0), 100),
            Err(ProtocolError::Malformed { .. })
        ));
        assert_eq!(
            Header::parse(&frame(Kind::Done as u32, 101), 100),
            Err(ProtocolError::FrameTooLarge {
                len: 101,
                limit: 100
            })
        );
        // Control frames have their own, small limit whatever the pool's limit is.
        assert!(matches!(
            Header::parse(&frame(Kind::Ready as u32, 1 << 40), u64::MAX),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn truncated_stream_is_eof_and_garbage_is_protocol() {
        assert!(matches!(read_all(&[1, 2, 3], 100), (f, ReadError::Eof) if f.is_empty()));
        assert!(matches!(
            read_all(&[0xffu8; 64], 100),
            (f, ReadError::Protocol(_)) if f.is_empty()
        ));
        // A varint longer than any u32 and a body cut short are both refused.
        assert!(decode_control::<Ready>(&[0xff; 16]).is_err());
        let ready = control(
            Kind::Ready,
            &Ready {
                pid: 1,
                fingerprint: u64::MAX,
            },
        );
        assert!(decode_control::<Ready>(&ready[HEADER_LEN..ready.len() - 1]).is_err());
    }

    #[test]
    fn a_frame_cut_short_is_dropped_whole() {
        let mut ok = Vec::new();
        begin(&mut ok);
        ok.extend_from_slice(&[1, 2, 3]);
        finish(&mut ok, Kind::Done, 0, 5, 0);
        let mut two = ok.clone();
        two.extend_from_slice(&ok[..HEADER_LEN + 1]);
        let (frames, end) = read_all(&two, 1 << 30);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].body, [1, 2, 3]);
        assert!(matches!(end, ReadError::Eof));
    }

    #[test]
    fn a_frame_announcing_descriptors_that_never_came_is_refused() {
        let mut f = Vec::new();
        begin(&mut f);
        finish(&mut f, Kind::Message, 0, 0, 0);
        f[10..12].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(read_all(&f, 100), (_, ReadError::Protocol(_))));
    }

    #[tokio::test]
    async fn async_reader_on_a_real_socket_rejects_garbage_without_panicking() {
        use std::os::fd::AsFd;
        let (a, b) = crate::sys::sock::pair(crate::sys::sock::Kind::Stream).unwrap();
        let b = crate::sys::proc::async_fd(b, tokio::io::Interest::READABLE).unwrap();
        let mut raw = frame(Kind::Done as u32, 10);
        raw[0..8].copy_from_slice(&(u64::MAX).to_le_bytes());
        crate::sys::sock::send(a.as_fd(), &raw, &[], false).unwrap();
        let mut reader = stream::FrameReader::new(1 << 30);
        match reader.read_async(&b).await {
            Err(ReadError::Protocol(ProtocolError::FrameTooLarge { len, .. })) => {
                assert_eq!(len, u64::MAX)
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_and_descriptors_cross_an_async_socket_in_order() {
        let (a, b) = crate::sys::sock::pair(crate::sys::sock::Kind::Stream).unwrap();
        let a = crate::sys::proc::async_fd(a, tokio::io::Interest::WRITABLE).unwrap();
        let b = crate::sys::proc::async_fd(b, tokio::io::Interest::READABLE).unwrap();
        let big = vec![7u8; 3 << 20];
        let writer = async move {
            let mut w = stream::FrameWriter::new();
            for i in 0..3u64 {
                let mut f = Vec::new();
                begin(&mut f);
                if i == 1 {
                    f.extend_from_slice(&big);
                }
                finish(&mut f, Kind::Message, 0, i, 0);
                let fds = (0..i)
                    .map(|_| {
                        crate::sys::sock::pair(crate::sys::sock::Kind::Stream)
                            .unwrap()
                            .0
                    })
                    .collect();
                w.start(f, fds);
                w.flush_async(&a).await.unwrap();
            }
        };
        let reader = async {
            let mut r = stream::FrameReader::new(1 << 30);
            let mut got = Vec::new();
            for _ in 0..3 {
                let f = r.read_async(&b).await.unwrap();
                got.push((f.header.id, f.body.len(), f.fds.len()));
            }
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got, vec![(0, 0, 0), (1, 3 << 20, 1), (2, 0, 2)]);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// No header, however garbled, panics the parser; what it accepts respects the
        /// limit for its kind.
        #[test]
        fn any_header_parses_or_is_a_typed_error(raw in any::<[u8; HEADER_LEN]>(), limit in any::<u64>()) {
            match Header::parse(&raw, limit) {
                Ok(h) => {
                    prop_assert!(h.len <= limit);
                    if h.kind.is_control() {
                        prop_assert!(h.len <= MAX_CONTROL_BODY);
                    }
                }
                Err(ProtocolError::FrameTooLarge { len, limit: l }) => prop_assert!(len > l),
                Err(_) => {}
            }
        }

        /// Whatever bytes arrive, reading frames ends in frames, EOF or a typed error.
        #[test]
        fn any_byte_stream_reads_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (frames, _) = tests::read_all(&bytes, 256);
            for f in frames {
                prop_assert_eq!(f.body.len() as u64, f.header.len);
            }
        }

        /// A stream of good frames cut anywhere yields the frames before the cut, whole
        /// and in order, then EOF: never a partial frame, never a panic.
        #[test]
        fn a_truncated_stream_yields_whole_frames_then_eof(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                let mut frame = Vec::new();
                begin(&mut frame);
                frame.extend_from_slice(body);
                finish(&mut frame, Kind::Done, 0, i as u64, 0);
                stream.extend_from_slice(&frame);
                ends.push(stream.len());
            }
            let cut = cut.index(stream.len() + 1);
            let (frames, end) = tests::read_all(&stream[..cut], 1 << 20);
            prop_assert!(matches!(end, ReadError::Eof), "{:?}", end);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(frames.len(), whole);
            for (i, f) in frames.iter().enumerate() {
                prop_assert_eq!(f.header.id, i as u64);
                prop_assert_eq!(&f.body, &bodies[i]);
            }
        }

        /// Whatever a peer sends, the reader never holds more than its read-ahead
        /// buffer and one body within the limit, even for headers that claim bodies
        /// of any size up to `u64::MAX`.
        #[test]
        fn a_peer_cannot_make_the_reader_allocate_past_its_limit(
            claims in proptest::collection::vec(any::<u64>(), 1..6),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
            limit in 1u64..4096,
        ) {
            use std::os::fd::AsFd;
            let mut bytes = Vec::new();
            for claim in claims {
                let mut frame = Vec::new();
                begin(&mut frame);
                finish(&mut frame, Kind::Done, 0, 1, 0);
                frame[..8].copy_from_slice(&claim.to_le_bytes());
                bytes.extend_from_slice(&frame);
                bytes.extend_from_slice(&noise);
            }
            let b = tests::socket_reading(&bytes);
            let mut reader = stream::FrameReader::new(limit);
            let before = reader.allocated();
            loop {
                let r = reader.read(b.as_fd(), false);
                prop_assert!(reader.allocated() as u64 <= before as u64 + limit + HEADER_LEN as u64,
                    "{} bytes held for a limit of {limit}", reader.allocated());
                match r {
                    Ok(f) => prop_assert!(f.header.len <= limit),
                    Err(ReadError::Eof | ReadError::Protocol(_)) => break,
                    Err(ReadError::Io(e)) => prop_assert!(false, "{e}"),
                }
            }
        }

        /// A frame written with `begin`/`finish` reads back as written.
        #[test]
        fn frames_round_trip(body in proptest::collection::vec(any::<u8>(), 0..4096), id in any::<u64>(), func in any::<u64>(), failed in any::<bool>()) {
            let mut frame = Vec::new();
            begin(&mut frame);
            frame.extend_from_slice(&body);
            let flags = if failed { FLAG_FAILED } else { 0 };
            finish(&mut frame, Kind::Done, flags, id, func);
            let (frames, end) = tests::read_all(&frame, 1 << 20);
            prop_assert!(matches!(end, ReadError::Eof));
            prop_assert_eq!(frames.len(), 1);
            prop_assert_eq!(frames[0].header, Header { len: body.len() as u64, kind: Kind::Done, nfds: 0, flags, id, func });
            prop_assert_eq!(&frames[0].body, &body);
        }

        /// Control messages decode only from what encodes them, never with a panic.
        #[test]
        fn failures_round_trip_and_garbage_is_rejected(message in ".{0,64}", garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            let f = Failure::Panicked(PanicInfo::new(message.clone(), Some("x.rs:1:2".into())));
            let frame = control(Kind::InitFailed, &f);
            prop_assert_eq!(decode_control::<Failure>(&frame[HEADER_LEN..]).unwrap(), f);
            let _ = decode_control::<Failure>(&garbage);
            let _ = decode_control::<Hello>(&garbage);
        }
    }
}
