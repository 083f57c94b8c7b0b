//! [`Array`] and [`RawArray`]: fixed-length arrays of plain values in shared memory,
//! with and without a built-in lock.

// `ArrayGuard` hands out `&mut [T]` over the mapping while the array's lock is held;
// each block says which rule holds.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};

use super::{hold, hold_if_possible, taken, Pod, SharedMemory};
use crate::sync::{Lock, LockGuard};
use crate::wire::handles::{handle_serde, Handle};

/// A fixed-length array of `T` in shared memory with a built-in [`Lock`] (Python's
/// `multiprocessing.Array`).
pub struct Array<T> {
    lock: Lock,
    raw: RawArray<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            lock: self.lock.clone(),
            raw: self.raw.clone(),
        }
    }
}

impl<T> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array").field("len", &self.raw.len).finish()
    }
}

/// The elements of an [`Array`], with its lock held.
pub struct ArrayGuard<'a, T> {
    _held: LockGuard<'a>,
    raw: &'a RawArray<T>,
}

impl<T> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArrayGuard")
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the mapping is page aligned (so aligned for any Pod `T`) and holds
        // `len` elements for as long as the array lives; the array's lock is held, and
        // every accessor of an `Array` writes only under it, so nothing writes while
        // this shared slice lives. Any bytes are a valid `T` (Pod).
        unsafe { std::slice::from_raw_parts(self.raw.mem.as_ptr().cast(), self.raw.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`; the lock is held by this guard alone, so no other
        // process or thread touches the elements while this exclusive slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.raw.mem.as_ptr().cast(), self.raw.len) }
    }
}

impl<T: Pod> Array<T> {
    /// An array holding a copy of `init`.
    ///
    /// # Errors
    /// A system error if the memory cannot be made.
    pub fn from_slice(init: &[T]) -> io::Result<Array<T>> {
        Ok(Array {
            lock: Lock::new()?,
            raw: RawArray::from_slice(init)?,
        })
    }

    /// `len` zeroed elements.
    ///
    /// # Errors
    /// A system error if the memory cannot be made.
    pub fn zeroed(len: usize) -> io::Result<Array<T>> {
        Ok(Array {
            lock: Lock::new()?,
            raw: RawArray::zeroed(len)?,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Element `i` (under the lock).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        let _g = hold_if_possible(&self.lock);
        self.raw.get(i)
    }

    /// Sets element `i` (under the lock).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, v: T) {
        let _g = hold_if_possible(&self.lock);
        self.raw.set(i, v)
    }

    /// A copy of all elements (under the lock).
    pub fn to_vec(&self) -> Vec<T> {
        let _g = hold_if_possible(&self.lock);
        self.raw.to_vec()
    }

    /// Takes the lock and gives the elements as a slice until the guard drops.
    ///
    /// # Errors
    /// As [`Lock::lock`]; a holder that died is treated as having released it.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lock(&self) -> io::Result<ArrayGuard<'_, T>> {
        let held = taken(self.lock.lock().await)?;
        Ok(ArrayGuard {
            _held: held,
            raw: &self.raw,
        })
    }

    /// Blocking form of [`lock`](Self::lock).
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`lock`](Self::lock) there.
    #[track_caller]
    pub fn blocking_lock(&self) -> io::Result<ArrayGuard<'_, T>> {
        crate::blocking::assert_may_block("blocking_lock", "lock");
        let held = hold(&self.lock)?;
        Ok(ArrayGuard {
            _held: held,
            raw: &self.raw,
        })
    }

    /// The built-in lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

impl<T: Pod> Handle for Array<T> {
    const KIND: &'static str = "Array";
    type Params = T;
    type Parts<'a> = (&'a Lock, &'a RawArray<T>);
    type Received = (Lock, RawArray<T>);

    fn parts(&self) -> Self::Parts<'_> {
        (&self.lock, &self.raw)
    }

    fn assemble((lock, raw): (Lock, RawArray<T>)) -> Result<Self, String> {
        Ok(Array { lock, raw })
    }
}

handle_serde!(Array<T>);

/// A fixed-length array of `T` in shared memory without a lock (Python's `RawArray`):
/// element reads and writes are copies that may interleave with other processes'.
pub struct RawArray<T> {
    mem: SharedMemory,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            mem: self.mem.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray").field("len", &self.len).finish()
    }
}

impl<T: Pod> RawArray<T> {
    /// An array holding a copy of `init`.
    ///
    /// # Errors
    /// A system error if the memory cannot be made.
    pub fn from_slice(init: &[T]) -> io::Result<RawArray<T>> {
        let a = Self::zeroed(init.len())?;
        a.mem.write(0, bytemuck::cast_slice(init));
        Ok(a)
    }

    /// `len` zeroed elements.
    ///
    /// # Errors
    /// A system error if the memory cannot be made; `InvalidInput` if the size
    /// overflows.
    pub fn zeroed(len: usize) -> io::Result<RawArray<T>> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "array too large"))?;
        Ok(RawArray {
            mem: SharedMemory::zeroed(bytes)?,
            len,
            _t: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        assert!(
            i < self.len,
            "index {i} out of range for length {}",
            self.len
        );
        self.mem.read_value(i)
    }

    /// Sets element `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, v: T) {
        assert!(
            i < self.len,
            "index {i} out of range for length {}",
            self.len
        );
        self.mem.write_value(i, &v)
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.len];
        self.mem.read(0, bytemuck::cast_slice_mut(&mut v));
        v
    }
}

impl<T: Pod> Handle for RawArray<T> {
    const KIND: &'static str = "RawArray";
    type Params = T;
    type Parts<'a> = (&'a SharedMemory, u64);
    type Received = (SharedMemory, u64);

    fn parts(&self) -> Self::Parts<'_> {
        (&self.mem, self.len as u64)
    }

    fn assemble((mem, len): (SharedMemory, u64)) -> Result<Self, String> {
        let len = len as usize;
        if len.checked_mul(size_of::<T>()) != Some(mem.len()) {
            return Err("a shared array of another size arrived".to_owned());
        }
        Ok(RawArray {
            mem,
            len,
            _t: PhantomData,
        })
    }
}

handle_serde!(RawArray<T>);
