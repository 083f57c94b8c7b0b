//! How a value is laid out as a whole message: a task's argument or result, a pipe
//! message, a queue item.
//!
//! Everything is postcard with one exception: a `Vec<u8>` is its bytes, as they are.
//! Through serde a byte vector is a sequence visited one byte at a time (about 20 ms
//! per 16 MiB each way on the machine in BENCHMARKS.md); as the body itself it needs no
//! encoding at all. A task's sender hands the vector over as the frame's tail (written
//! with the header in one `sendmsg`, see
//! [`super::stream::FrameWriter::start_with_tail`]) and the receiver's body buffer *is*
//! the decoded vector, so the only copies of a byte payload are the kernel's; a pipe or
//! queue, which borrow the value they send, copy it once with `memcpy`.
//!
//! Both ends know the type (the parent from `submit`'s `A`/`R`, the worker from the
//! trampoline, pipes and queues from their type parameter, checked by a type hash), so
//! nothing on the wire says which layout a body has. Values nested in other types
//! (`(Vec<u8>, u32)`) go through postcard; `serde_bytes` makes those cheap. The manager
//! keeps its values as postcard and does not use this.

use std::any::Any;

/// `value` as raw bytes if `T` is `Vec<u8>`; otherwise `value` back.
pub(crate) fn into_raw<T: 'static>(value: T) -> Result<Vec<u8>, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        Some(bytes) => Ok(bytes.take().unwrap_or_default()),
        None => Err(slot.take().expect("set above")),
    }
}

/// The bytes of `value` if `T` is `Vec<u8>`.
pub(crate) fn as_raw<T: 'static>(value: &T) -> Option<&[u8]> {
    (value as &dyn Any)
        .downcast_ref::<Vec<u8>>()
        .map(Vec::as_slice)
}

/// `bytes` as a `T` if `T` is `Vec<u8>`; otherwise `bytes` back.
pub(crate) fn from_raw<T: 'static>(bytes: Vec<u8>) -> Result<T, Vec<u8>> {
    let mut slot: Option<T> = None;
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        Some(s) => {
            *s = Some(bytes);
            Ok(slot.take().expect("set above"))
        }
        None => Err(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_byte_vector_is_raw() {
        assert_eq!(into_raw(vec![1i8]), Err(vec![1i8]));
        assert_eq!(as_raw(&vec![4u8, 5]), Some(&[4u8, 5][..]));
        assert_eq!(as_raw(&vec![4i8]), None);
        assert_eq!(into_raw(vec![1u8, 2]), Ok(vec![1, 2]));
        assert_eq!(into_raw(String::from("x")), Err(String::from("x")));
        assert_eq!(from_raw::<Vec<u8>>(vec![3]), Ok(vec![3]));
        assert_eq!(from_raw::<u32>(vec![3]), Err(vec![3]));
    }
}
