//! Every handle type travels through the one codec in `wire::handles`: a handle of
//! another kind, or of the same kind with other type parameters, is refused before
//! its parts are read, with a reason that names what was expected. Tests only; they
//! sit at the top because they use handles from every layer.

use crate::wire::handles::tests::resend;

/// Every handle kind goes through the one codec: another kind, or the same kind
/// with other type parameters, is refused before its parts are read, saying what
/// was expected.
#[test]
fn every_handle_is_refused_as_another_kind_or_type() {
    use crate::pipe::Connection;
    use crate::queue::{Queue, SimpleQueue};
    use crate::sync::{BoundedSemaphore, Event, Lock, Semaphore};

    let expect_refusal = |r: Result<(), String>, expected: &str| {
        let why = r.expect_err(expected);
        assert!(
            why.contains(&format!("where a {expected} was expected")),
            "{why}"
        );
    };
    let q = Queue::<u32>::unbounded().unwrap();
    assert!(resend::<_, Queue<u32>>(&q).is_ok());
    expect_refusal(resend::<_, Queue<i32>>(&q).map(drop), "Queue<i32>");
    expect_refusal(
        resend::<_, SimpleQueue<u32>>(&q).map(drop),
        "SimpleQueue<u32>",
    );
    let sem = Semaphore::new(1).unwrap();
    assert!(resend::<_, Semaphore>(&sem).is_ok());
    expect_refusal(
        resend::<_, BoundedSemaphore>(&sem).map(drop),
        "BoundedSemaphore",
    );
    expect_refusal(resend::<_, Event>(&Lock::new().unwrap()).map(drop), "Event");
    let (a, _b) = crate::pipe::duplex::<u8, u8>().unwrap();
    assert!(resend::<_, Connection<u8, u8>>(&a).is_ok());
    expect_refusal(
        resend::<_, Connection<u8, u16>>(&a).map(drop),
        "Connection<u8, u16>",
    );
    // Shared memory of another element type (a `Value<u64>` read as a `Value<f64>`).
    let v = crate::shm::Value::new(7u64).unwrap();
    assert!(resend::<_, crate::shm::Value<u64>>(&v).is_ok());
    expect_refusal(
        resend::<_, crate::shm::Value<f64>>(&v).map(drop),
        "Value<f64>",
    );
    // Another kind altogether, of another shape: still the same refusal.
    expect_refusal(resend::<_, Lock>(&q).map(drop), "Lock");
}

#[test]
fn a_proxy_arrives_only_as_its_own_kind_and_type() {
    use crate::connection::Address;
    use crate::manager::{ListProxy, ValueProxy};

    let address = Address::unix_abstract("procpool-test-proxy-tag");
    let proxy = ValueProxy::<u64>::for_testing(address, b"k".to_vec(), 3);
    assert!(resend::<_, ValueProxy<u64>>(&proxy).is_ok());
    let why = resend::<_, ValueProxy<f64>>(&proxy).map(drop).unwrap_err();
    assert!(
        why.contains("where a ValueProxy<f64> was expected"),
        "{why}"
    );
    assert!(resend::<_, ListProxy<u64>>(&proxy).is_err());
}
