//! Public types are `Send`/`Sync` where a service needs them to be.

use procpool::{
    Error, Exit, PoolBuilder, PoolStats, ProcessPoolExecutor, ProtocolError, TaskError, TaskHandle,
};

fn send<T: Send>() {}
fn sync<T: Sync>() {}
fn unpin<T: Unpin>() {}

fn double(x: u32) -> u32 {
    x * 2
}

#[test]
fn public_types_are_send_and_sync() {
    send::<ProcessPoolExecutor>();
    sync::<ProcessPoolExecutor>();
    send::<TaskHandle<Vec<u8>>>();
    sync::<TaskHandle<Vec<u8>>>();
    unpin::<TaskHandle<Vec<u8>>>();
    send::<PoolBuilder>();
    sync::<PoolBuilder>();
    send::<TaskError>();
    sync::<TaskError>();
    send::<Error>();
    sync::<Error>();
    send::<Exit>();
    send::<PoolStats>();
    send::<ProtocolError>();
    // A pool can be shared by spawned tasks, and map streams over Send inputs are Send.
    fn map_stream_is_send(pool: &ProcessPoolExecutor) -> impl Send + '_ {
        pool.map_unordered(double, vec![1u32, 2, 3])
    }
    fn map_future_is_send(pool: &ProcessPoolExecutor) -> impl Send + '_ {
        std::future::IntoFuture::into_future(pool.map(double, 0..3u32))
    }
    let _ = map_stream_is_send;
    let _ = map_future_is_send;
}

#[test]
fn errors_say_what_happened() {
    let e = TaskError::WorkerDied {
        exit: Exit::Signal(libc::SIGABRT),
    };
    assert_eq!(
        e.to_string(),
        "the worker running the task died (killed by signal 6 (SIGABRT)); it was replaced, the pool goes on"
    );
    let e = TaskError::QueueFull { capacity: 8 };
    assert!(e.to_string().contains("queue_capacity"));
    let io = std::io::Error::from_raw_os_error(libc::EAGAIN);
    let cloned = TaskError::Spawn(std::sync::Arc::new(io)).clone();
    assert!(matches!(cloned, TaskError::Spawn(ref io) if io.raw_os_error() == Some(libc::EAGAIN)));
}

/// Every error of the chain says its own part only: a cause reached through
/// `source()` is not repeated in the message above it, and no message carries a crate
/// prefix (a report prints "a: b: c", not "procpool: a: b: b: c: c").
#[test]
fn walking_source_prints_each_cause_once() {
    use procpool::connection::{AuthenticationError, ConnectError, HandshakeError};
    use procpool::manager::ManagerError;
    use procpool::pipe::{RecvError, SendError};
    use procpool::queue::{GetError, PutError};
    use procpool::sync::{LockError, ReleaseError, WaitError};
    use procpool::ProcessError;
    let io = || std::io::Error::from_raw_os_error(libc::EAGAIN);
    let shared_io = || std::sync::Arc::new(io());
    let protocol = || ProtocolError::Malformed {
        reason: "bad header".into(),
    };
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(Error::Spawn(shared_io())),
        Box::new(TaskError::Spawn(shared_io())),
        Box::new(TaskError::WorkerStart(Error::Spawn(shared_io()))),
        Box::new(TaskError::Protocol(protocol())),
        Box::new(ProcessError::Protocol(protocol())),
        Box::new(RecvError::Protocol(protocol())),
        Box::new(ManagerError::Protocol(protocol())),
        Box::new(LockError::<()>::Io(io())),
        Box::new(ReleaseError::Io(io())),
        Box::new(WaitError::Io(io())),
        Box::new(PutError::<u8>::Io(io())),
        Box::new(GetError::Io(io())),
        Box::new(TaskError::WorkerStart(Error::FingerprintMismatch {
            expected: 1,
            found: 2,
        })),
        Box::new(ManagerError::Start(io())),
        Box::new(ManagerError::Authentication(
            AuthenticationError::DigestSentWasRejected,
        )),
        Box::new(ConnectError::Io(io())),
        Box::new(ConnectError::Handshake(HandshakeError::TooLong)),
        Box::new(SendError::Io(io())),
        Box::new(RecvError::Io(io())),
    ];
    for e in &errors {
        let mut chain = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert!(chain.len() >= 2, "{chain:?} has a cause");
        for pair in chain.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "{:?} repeats its cause {:?}",
                pair[0],
                pair[1]
            );
        }
        for part in &chain {
            assert!(!part.starts_with("procpool"), "{part:?}");
        }
    }
}

/// A panic and a codec failure read the same in every error that carries one.
#[test]
fn panics_and_codec_failures_read_alike_everywhere() {
    use procpool::pipe::RecvError;
    use procpool::{CodecError, PanicInfo, ProcessError};
    let panic = PanicInfo::new("boom", Some("src/x.rs:1:2".into()));
    assert_eq!(
        TaskError::Panicked(panic.clone()).to_string(),
        "task panicked: boom (at src/x.rs:1:2)"
    );
    assert_eq!(
        ProcessError::Panicked(panic.clone()).to_string(),
        "the child panicked: boom (at src/x.rs:1:2)"
    );
    assert_eq!(
        Error::Initializer(panic).to_string(),
        "the pool initializer failed in a worker: boom (at src/x.rs:1:2)"
    );
    let codec = CodecError::new("app::Order", "unexpected end of input");
    for (e, way) in [
        (TaskError::Decode(codec.clone()).to_string(), "deserialise"),
        (
            ProcessError::Decode(codec.clone()).to_string(),
            "deserialise",
        ),
        (RecvError::Decode(codec.clone()).to_string(), "deserialise"),
        (TaskError::Encode(codec.clone()).to_string(), "serialise"),
        (Error::Encode(codec.clone()).to_string(), "serialise"),
    ] {
        assert_eq!(
            e,
            format!("could not {way} a value of type app::Order: unexpected end of input")
        );
    }
}
