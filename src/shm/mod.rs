//! Memory shared between processes: Python's `shared_memory`, `Value` and `Array`.
//!
//! Each object is an anonymous memory file (`memfd`) mapped in every process it is
//! passed to (as a task or [`Process`](crate::Process) argument, or inside a message):
//! nothing is left in `/dev/shm` after a crash. Values are plain data — any
//! [`bytemuck::Pod`] type: integers, floats, fixed arrays of them, and
//! `#[repr(C)]` structs of those deriving `Pod` (re-exported as [`Pod`]).
//!
//! - [`Value<T>`] and [`Array<T>`] come with a built-in [`Lock`]: every `load`,
//!   `store`, `update`, `get`, `set` holds it, so `update(|v| *v += 1)` from many
//!   processes loses no increment.
//! - [`RawValue<T>`] and [`RawArray<T>`] have no lock: plain copies (a value wider than
//!   the CPU's word may be read half-written) and, for integer values, atomic
//!   operations.
//! - [`SharedMemory`] is raw bytes, copied in and out, or viewed through `unsafe`
//!   slices whose rules are on the methods.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procpool::{Process, Value};
//!
//! fn add(counter: Value<i64>) {
//!     for _ in 0..1000 {
//!         counter.update(|v| *v += 1);
//!     }
//! }
//!
//! let counter = Value::new(0i64)?;
//! let mut children = Vec::new();
//! for _ in 0..2 {
//!     children.push(Process::spawn(add, counter.clone())?);
//! }
//! for c in &mut children {
//!     c.join().await?;
//! }
//! assert_eq!(counter.load(), 2000);
//! # Ok(())
//! # }
//! ```

// Views of shared memory: `SharedMemory::as_slice`/`as_mut_slice` are unsafe views
// whose callers promise the sharing rules, and values are read and written through
// the mapping's pointer. Every block says which rule holds. (`array.rs` opts in for
// its guard's slices; `list.rs` has no unsafe.)
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

pub use bytemuck::Pod;

mod array;
mod list;

pub use array::{Array, ArrayGuard, RawArray};
pub use list::{Item, ListError, ShareableList};

use crate::sync::{Lock, LockError, LockGuard};
use crate::sys::shm::{self, Region};
use crate::wire::handles::{handle_serde, Handle, RecvFd, SendFd};

#[derive(Debug)]
struct Mem {
    fd: OwnedFd,
    region: Region,
    len: usize,
    /// The POSIX name of a named segment, without its leading slash.
    name: Option<String>,
}

/// A block of bytes shared by every process it is passed to.
///
/// Anonymous by default ([`new`](Self::new)): a sealed memory file that exists while
/// some process holds it, reaches other processes only as a handle, and can never be
/// resized under them. Named ([`create`](Self::create), [`open`](Self::open)) for
/// processes that procpool did not start, Python's included: the name is a POSIX
/// shared memory object (`/dev/shm/<name>`), the same one Python's
/// `SharedMemory(name=...)` opens.
///
/// # Who unlinks a named segment
/// A named segment outlives every process until its name is removed with
/// [`SharedMemory::unlink`]; procpool never removes it by itself, even when the
/// creator exits. By convention (as in Python) the creator unlinks it once every
/// process that needs it has opened it, or at the end; the memory lives on while
/// anything still maps it. A named segment is not sealed: another program that
/// shrinks it makes the next access past the new end a `SIGBUS`, as in Python.
#[derive(Clone)]
pub struct SharedMemory {
    mem: Arc<Mem>,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("len", &self.mem.len)
            .finish()
    }
}

impl SharedMemory {
    /// `size` bytes, all zero.
    ///
    /// ```
    /// let mem = procpool::SharedMemory::new(16)?;
    /// assert_eq!(mem.len(), 16);
    /// // As Python's `SharedMemory(create=True, size=0)`, an empty block is refused.
    /// let empty = procpool::SharedMemory::new(0).unwrap_err();
    /// assert_eq!(empty.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for `size == 0`; a system error if the memory
    /// cannot be made or mapped.
    pub fn new(size: usize) -> io::Result<SharedMemory> {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared memory must be at least 1 byte (as Python's SharedMemory)",
            ));
        }
        Self::zeroed(size)
    }

    /// `size` bytes, all zero; zero bytes allowed (the memory of a zero-sized
    /// `Value` or an empty `Array`).
    fn zeroed(size: usize) -> io::Result<SharedMemory> {
        let fd = shm::memfd("procpool-shm", size as u64, shm::Size::Fixed)?;
        Self::map(fd, size)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMemory> {
        Self::map_named(fd, len, None)
    }

    fn map_named(fd: OwnedFd, len: usize, name: Option<String>) -> io::Result<SharedMemory> {
        // A mapping cannot be empty; a zero-length block maps one byte it never uses.
        let region = Region::map(fd.as_fd(), len.max(1))?;
        Ok(SharedMemory {
            mem: Arc::new(Mem {
                fd,
                region,
                len,
                name,
            }),
        })
    }

    /// Creates the named segment `name` of `size` zero bytes (Python's
    /// `SharedMemory(name, create=True, size=size)`). See the type's docs for who must
    /// [`unlink`](Self::unlink) it.
    ///
    /// ```
    /// use procpool::SharedMemory;
    ///
    /// let name = format!("procpool-doc-{}", std::process::id());
    /// let mem = SharedMemory::create(&name, 64)?;
    /// mem.write(0, b"hello");
    /// let other = SharedMemory::open(&name)?; // as another program would
    /// assert_eq!(other.len(), 64);
    /// assert_eq!(&other.to_vec()[..5], b"hello");
    /// SharedMemory::unlink(&name)?; // the creator's job
    /// assert!(SharedMemory::open(&name).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`io::ErrorKind::AlreadyExists`] if the name is taken;
    /// [`io::ErrorKind::InvalidInput`] for `size == 0` or a name that is empty, has a
    /// `/` or a NUL, or is over 255 bytes; a system error otherwise.
    pub fn create(name: &str, size: usize) -> io::Result<SharedMemory> {
        check_name(name)?;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared memory must be at least 1 byte (as Python's SharedMemory)",
            ));
        }
        let fd = shm::create_named(name, size as u64)?;
        Self::map_named(fd, size, Some(name.to_owned()))
    }

    /// Opens the existing named segment `name`, all of it (Python's
    /// `SharedMemory(name)`).
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] if there is none; `InvalidInput` for a bad name (as
    /// [`create`](Self::create)) or an empty segment; a system error otherwise.
    pub fn open(name: &str) -> io::Result<SharedMemory> {
        check_name(name)?;
        let fd = shm::open_named(name)?;
        let len = usize::try_from(shm::file_len(fd.as_fd())?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "segment too large"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the named segment is empty",
            ));
        }
        Self::map_named(fd, len, Some(name.to_owned()))
    }

    /// Removes the name `name` (Python's `SharedMemory.unlink()`): no process can open
    /// it any more; the memory itself lives on while anything maps it.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] if there is no such name; `InvalidInput` for a bad
    /// name.
    pub fn unlink(name: &str) -> io::Result<()> {
        check_name(name)?;
        shm::unlink_named(name)
    }

    /// The name of a named segment (without the leading slash), `None` for an
    /// anonymous one.
    pub fn name(&self) -> Option<&str> {
        self.mem.name.as_deref()
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.mem.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.mem.len == 0
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.mem.len),
            "range {offset}..{offset}+{len} is outside shared memory of {} bytes",
            self.mem.len
        );
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    ///
    /// # Panics
    /// If the range is outside the block.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        self.check(offset, buf.len());
        self.mem.region.read(offset, buf);
    }

    /// Copies `bytes` into the block at `offset`.
    ///
    /// # Panics
    /// If the range is outside the block.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        self.mem.region.write(offset, bytes);
    }

    /// A copy of the whole block.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.mem.len];
        self.read(0, &mut v);
        v
    }

    /// The block as a slice.
    ///
    /// # Safety
    /// While the slice lives, no process (this one included) may write to the block.
    /// Other processes are outside Rust's view, so this is the caller's promise, kept
    /// for example with a [`Lock`] all writers take.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `len` bytes for as long as `self` lives;
        // the caller promises no writes while the slice lives.
        unsafe { std::slice::from_raw_parts(self.mem.region.as_ptr(), self.mem.len) }
    }

    /// The block as a mutable slice.
    ///
    /// # Safety
    /// While the slice lives, no other process or thread may read or write the block,
    /// and no other slice of it may exist in this process.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, with exclusive access promised by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.mem.region.as_ptr(), self.mem.len) }
    }

    /// The start of the block in this process (for FFI; the rules of
    /// [`as_mut_slice`](Self::as_mut_slice) apply to what is done with it).
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.region.as_ptr()
    }

    fn read_value<T: Pod>(&self, index: usize) -> T {
        let mut v = T::zeroed();
        self.read(index * size_of::<T>(), bytemuck::bytes_of_mut(&mut v));
        v
    }

    fn write_value<T: Pod>(&self, index: usize, v: &T) {
        self.write(index * size_of::<T>(), bytemuck::bytes_of(v));
    }
}

/// Refuses a name `shm_open` would not take as one object name.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a shared memory name: 1 to 255 bytes, no '/' and no NUL"),
        ));
    }
    Ok(())
}

impl Handle for SharedMemory {
    const KIND: &'static str = "SharedMemory";
    type Params = ();
    type Parts<'a> = (SendFd<'a>, u64, Option<&'a str>);
    type Received = (RecvFd, u64, Option<String>);

    fn parts(&self) -> Self::Parts<'_> {
        (
            SendFd(self.mem.fd.as_fd()),
            self.mem.len as u64,
            self.mem.name.as_deref(),
        )
    }

    fn assemble((RecvFd(fd), len, name): Self::Received) -> Result<Self, String> {
        let actual = shm::file_len(fd.as_fd()).map_err(|e| e.to_string())?;
        if actual < len {
            return Err("shared memory shorter than announced".to_owned());
        }
        SharedMemory::map_named(fd, len as usize, name).map_err(|e| e.to_string())
    }
}

handle_serde!(SharedMemory);

/// Takes `lock`, treating a holder that died as released: a value or array is plain
/// data, valid whatever bytes a dead writer left.
///
/// # Errors
/// Only if the lock's shared state is damaged (the robust mutex refuses).
fn hold(lock: &Lock) -> io::Result<LockGuard<'_>> {
    taken(lock.lock_blocking_unchecked())
}

/// The guard of a wait without a deadline, treating a holder that died as released.
fn taken<'a>(got: Result<LockGuard<'a>, LockError<LockGuard<'a>>>) -> io::Result<LockGuard<'a>> {
    match got {
        Ok(g) | Err(LockError::OwnerDied(g)) => Ok(g),
        Err(LockError::Io(e)) => Err(e),
        // Neither can come from a wait without a deadline.
        Err(LockError::WouldBlock | LockError::Timeout) => {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
    }
}

/// [`hold`] for the accessors that return plain values: with the lock's state damaged
/// they go on without it (the data is plain and still valid, only not serialised);
/// [`Array::lock`] reports that error instead.
fn hold_if_possible(lock: &Lock) -> Option<LockGuard<'_>> {
    hold(lock).ok()
}

/// A `T` in shared memory with a built-in [`Lock`] (Python's `multiprocessing.Value`).
pub struct Value<T> {
    lock: Lock,
    mem: SharedMemory,
    _t: PhantomData<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            lock: self.lock.clone(),
            mem: self.mem.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Value").field(&self.load()).finish()
    }
}

impl<T: Pod> Value<T> {
    /// A shared value, initially `init`.
    ///
    /// # Errors
    /// A system error if the memory cannot be made.
    pub fn new(init: T) -> io::Result<Value<T>> {
        let mem = SharedMemory::zeroed(size_of::<T>())?;
        mem.write_value(0, &init);
        Ok(Value {
            lock: Lock::new()?,
            mem,
            _t: PhantomData,
        })
    }

    /// Reads the value (under the lock). Blocks the thread while another holds the
    /// lock.
    pub fn load(&self) -> T {
        let _g = hold_if_possible(&self.lock);
        self.mem.read_value(0)
    }

    /// Writes the value (under the lock).
    pub fn store(&self, v: T) {
        let _g = hold_if_possible(&self.lock);
        self.mem.write_value(0, &v);
    }

    /// Read-modify-write under the lock: `update(|v| *v += 1)` from any number of
    /// processes loses no update. Returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _g = hold_if_possible(&self.lock);
        let mut v = self.mem.read_value(0);
        let r = f(&mut v);
        self.mem.write_value(0, &v);
        r
    }

    /// The built-in lock (Python's `get_lock()`): hold it to make several operations
    /// one, with the `*_unlocked` accessors inside.
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Reads without taking the lock (for use while holding [`get_lock`](Self::get_lock)).
    pub fn load_unlocked(&self) -> T {
        self.mem.read_value(0)
    }

    /// Writes without taking the lock (for use while holding [`get_lock`](Self::get_lock)).
    pub fn store_unlocked(&self, v: T) {
        self.mem.write_value(0, &v)
    }
}

impl<T: Pod> Handle for Value<T> {
    const KIND: &'static str = "Value";
    type Params = T;
    type Parts<'a> = (&'a Lock, &'a SharedMemory);
    type Received = (Lock, SharedMemory);

    fn parts(&self) -> Self::Parts<'_> {
        (&self.lock, &self.mem)
    }

    fn assemble((lock, mem): (Lock, SharedMemory)) -> Result<Self, String> {
        if mem.len() != size_of::<T>() {
            return Err("a shared value of another size arrived".to_owned());
        }
        Ok(Value {
            lock,
            mem,
            _t: PhantomData,
        })
    }
}

handle_serde!(Value<T>);

/// A `T` in shared memory without a lock (Python's `RawValue`). Integer values also
/// have atomic operations.
pub struct RawValue<T> {
    mem: SharedMemory,
    _t: PhantomData<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            mem: self.mem.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawValue")
    }
}

impl<T: Pod> RawValue<T> {
    /// A shared value, initially `init`.
    ///
    /// # Errors
    /// A system error if the memory cannot be made.
    pub fn new(init: T) -> io::Result<RawValue<T>> {
        let mem = SharedMemory::zeroed(size_of::<T>())?;
        mem.write_value(0, &init);
        Ok(RawValue {
            mem,
            _t: PhantomData,
        })
    }

    /// Copies the value out. Not atomic for values wider than a word: a concurrent
    /// `store` may be seen half done.
    pub fn load(&self) -> T {
        self.mem.read_value(0)
    }

    /// Copies a new value in (not atomic for values wider than a word).
    pub fn store(&self, v: T) {
        self.mem.write_value(0, &v)
    }
}

macro_rules! atomic_ops {
    ($($t:ty => $at:ident),*) => {$(
        impl RawValue<$t> {
            /// Atomically adds `v` (wrapping) and returns the previous value.
            pub fn fetch_add(&self, v: $t) -> $t {
                self.mem.mem.region.$at(0).fetch_add(v as _, SeqCst) as $t
            }

            /// Atomically subtracts `v` (wrapping) and returns the previous value.
            pub fn fetch_sub(&self, v: $t) -> $t {
                self.mem.mem.region.$at(0).fetch_sub(v as _, SeqCst) as $t
            }

            /// Atomically reads the value.
            pub fn load_atomic(&self) -> $t {
                self.mem.mem.region.$at(0).load(SeqCst) as $t
            }

            /// Atomically replaces the value if it equals `current`; returns the value
            /// found (`Ok` if it was `current`).
            ///
            /// # Errors
            /// `Err(found)` if the value was not `current`.
            pub fn compare_exchange(&self, current: $t, new: $t) -> Result<$t, $t> {
                self.mem
                    .mem
                    .region
                    .$at(0)
                    .compare_exchange(current as _, new as _, SeqCst, SeqCst)
                    .map(|v| v as $t)
                    .map_err(|v| v as $t)
            }
        }
    )*};
}

atomic_ops!(u32 => u32_at, i32 => u32_at, u64 => u64_at, i64 => u64_at);
#[cfg(target_pointer_width = "64")]
atomic_ops!(usize => u64_at, isize => u64_at);

impl<T: Pod> Handle for RawValue<T> {
    const KIND: &'static str = "RawValue";
    type Params = T;
    type Parts<'a> = &'a SharedMemory;
    type Received = SharedMemory;

    fn parts(&self) -> &SharedMemory {
        &self.mem
    }

    fn assemble(mem: SharedMemory) -> Result<Self, String> {
        if mem.len() != size_of::<T>() {
            return Err("a shared value of another size arrived".to_owned());
        }
        Ok(RawValue {
            mem,
            _t: PhantomData,
        })
    }
}

handle_serde!(RawValue<T>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::handles::tests::resend;

    #[test]
    fn a_handle_arrives_only_as_its_own_element_type() {
        let v = Value::new(7u64).unwrap();
        let same: Value<u64> = resend(&v).unwrap();
        assert_eq!(same.load(), 7);
        // Same size, another type: refused, not read as an f64, and saying so.
        let err = resend::<_, Value<f64>>(&v).unwrap_err();
        assert!(err.contains("where a Value<f64> was expected"), "{err}");
        assert!(resend::<_, Value<i64>>(&v).is_err());
        let r = RawValue::new(1u32).unwrap();
        assert!(resend::<_, RawValue<f32>>(&r).is_err());
        assert_eq!(resend::<_, RawValue<u32>>(&r).unwrap().load(), 1);
        let a = Array::from_slice(&[1u16, 2, 3, 4]).unwrap();
        assert!(resend::<_, Array<i16>>(&a).is_err());
        assert!(resend::<_, Array<u32>>(&a).is_err());
        assert_eq!(resend::<_, Array<u16>>(&a).unwrap().to_vec(), [1, 2, 3, 4]);
    }
}
