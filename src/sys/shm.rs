//! Memory shared between processes, and the calls that wait on it.
//!
//! - [`memfd`]: an anonymous file (`memfd_create`): it has no name in any filesystem,
//!   so nothing is left behind in `/dev/shm` when every process holding it is gone.
//! - [`Region`]: a `MAP_SHARED` view of such a file. Other processes write the same
//!   bytes, so Rust references to them would break the aliasing rules; a `Region`
//!   hands out only atomics, a robust mutex and bounds-checked copies.
//! - [`RobustMutex`]: a process-shared, robust `pthread_mutex_t` living in a region.
//!   When its holder dies the kernel unlocks it and the next locker learns so
//!   (`EOWNERDEAD`) instead of waiting forever.
//! - [`futex_wait`]/[`futex_wake_all`] on a shared 32-bit word (blocking waiters), and
//!   [`EventFd`] (async waiters: an fd tokio can watch).
//!
//! # References
//! - <https://man7.org/linux/man-pages/man2/memfd_create.2.html>
//! - <https://man7.org/linux/man-pages/man2/futex.2.html>
//! - <https://man7.org/linux/man-pages/man3/pthread_mutexattr_setrobust.3.html>
//! - <https://man7.org/linux/man-pages/man2/eventfd.2.html>

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use rustix::event::EventfdFlags;
use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
use rustix::thread::futex::Flags as FutexFlags;

/// Whether a memory file keeps its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Size {
    /// Never changes: sealed against shrinking and growing.
    Fixed,
    /// May grow (a queue's ring), never shrink: sealed against shrinking.
    Growing,
}

/// Creates an anonymous, close-on-exec memory file of `len` bytes, sealed so that no
/// process holding it can shrink it (`F_SEAL_SHRINK`; also `F_SEAL_GROW` if `size`
/// is [`Size::Fixed`]) nor change the seals (`F_SEAL_SEAL`). A file that shrank under
/// another process's mapping would make that process's next access to the lost pages
/// a `SIGBUS`; sealed, a peer's `ftruncate` fails with `EPERM` and harms no one.
pub(crate) fn memfd(name: &str, len: u64, size: Size) -> io::Result<OwnedFd> {
    // A name with a NUL in it (never one of ours) is named nothing rather than refused.
    let name = if name.contains('\0') { "" } else { name };
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    set_len(fd.as_fd(), len)?;
    let seals = match size {
        Size::Fixed => SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        Size::Growing => SealFlags::SHRINK | SealFlags::SEAL,
    };
    rustix::fs::fcntl_add_seals(&fd, seals)?;
    Ok(fd)
}

/// Creates the POSIX shared memory object `/name` (`shm_open` with `O_CREAT |
/// O_EXCL`, mode 0600) of `len` zero bytes; `AlreadyExists` if it exists. Not sealed:
/// any process that opens it by name could resize it.
pub(crate) fn create_named(name: &str, len: u64) -> io::Result<OwnedFd> {
    use rustix::shm::OFlags;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR;
    let fd = rustix::shm::open(
        posix_name(name),
        flags,
        rustix::fs::Mode::from_bits_truncate(0o600),
    )?;
    if let Err(e) = set_len(fd.as_fd(), len) {
        let _ = rustix::shm::unlink(posix_name(name));
        return Err(e);
    }
    Ok(fd)
}

/// Opens the existing POSIX shared memory object `/name` for reading and writing.
pub(crate) fn open_named(name: &str) -> io::Result<OwnedFd> {
    let fd = rustix::shm::open(
        posix_name(name),
        rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    )?;
    Ok(fd)
}

/// Removes the name `/name`; the memory lives on while anything maps it.
pub(crate) fn unlink_named(name: &str) -> io::Result<()> {
    rustix::shm::unlink(posix_name(name))?;
    Ok(())
}

/// `name` as `shm_open` takes it: with one leading slash, as Python's
/// `SharedMemory` prepends it.
fn posix_name(name: &str) -> String {
    format!("/{name}")
}

/// Makes a memory file at least `len` bytes long; never shrinks it (it is sealed
/// against that, see [`memfd`]).
pub(crate) fn grow_to(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    if file_len(fd)? >= len {
        return Ok(());
    }
    set_len(fd, len)
}

/// Gives the pages of `len` bytes at `offset` back to the system, keeping the file's
/// size (`fallocate(PUNCH_HOLE | KEEP_SIZE)`); they read as zeros afterwards.
pub(crate) fn release(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    retry_on_eintr(|| rustix::fs::fallocate(fd, mode, offset, len))
}

/// Sets the size of a memory file (`ftruncate`).
fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    retry_on_eintr(|| rustix::fs::ftruncate(fd, len))
}

/// Runs `call` again while a signal interrupts it.
fn retry_on_eintr(mut call: impl FnMut() -> rustix::io::Result<()>) -> io::Result<()> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// The current size of a file (`fstat`).
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_size as u64)
}

/// Bytes of 512 a file has allocated (`fstat`'s `st_blocks`): what its pages take.
#[cfg(test)]
pub(crate) fn file_blocks(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_blocks as u64)
}

/// A shared mapping of a memory file.
///
/// The mapping may be longer than the file (a reservation the file grows into);
/// touching a page past the file's end raises `SIGBUS`, so users keep every access
/// below a size they have set with [`set_len`]. All accessors check bounds against the
/// mapping and panic past it (a bug in procpool, never input-dependent: callers check
/// values read from shared memory before using them as offsets).
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is an address range; every access goes through atomics, the
// pthread mutex, or copies that callers serialise with that mutex. Nothing in it is
// tied to the thread that mapped it.
unsafe impl Send for Region {}
// SAFETY: as above: shared access is through atomics or copies under the mutex.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of `fd` from offset 0, shared and readable/writable.
    /// `MAP_NORESERVE`: a large reservation costs address space, not memory.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Region> {
        Region::map_at(fd, 0, len)
    }

    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page size).
    pub(crate) fn map_at(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Region> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr null) aliases nothing in
        // this process; the fd is valid for the call.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Region { base, len })
    }

    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The start of the mapping (page aligned), for views whose users uphold the
    /// sharing rules themselves (`crate::shm`).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn at(&self, offset: usize, size: usize, align: usize) -> *mut u8 {
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len)
                && offset.is_multiple_of(align),
            "shared memory access out of bounds: {offset}+{size} of {}",
            self.len
        );
        // SAFETY: offset + size <= len, so the result stays inside the mapping.
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// The 64-bit atomic at `offset` (8-aligned).
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        let p = self.at(offset, 8, 8);
        // SAFETY: in bounds and aligned (checked), the mapping lives as long as `self`,
        // and every process touches this word only atomically.
        unsafe { AtomicU64::from_ptr(p.cast()) }
    }

    /// The 32-bit atomic at `offset` (4-aligned).
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        let p = self.at(offset, 4, 4);
        // SAFETY: as for `u64_at`.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// Copies `src` into the region at `offset`.
    pub(crate) fn write(&self, offset: usize, src: &[u8]) {
        let p = self.at(offset, src.len(), 1);
        // SAFETY: in bounds (checked); the region never overlaps a Rust allocation, and
        // no Rust reference to these bytes exists (they are only ever copied), so a
        // concurrent writer in another process can tear the bytes (callers that need
        // whole values serialise with a mutex) but cannot break this process's memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }

    /// Copies `dst.len()` bytes at `offset` into `dst`.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) {
        let p = self.at(offset, dst.len(), 1);
        // SAFETY: in bounds (checked); `dst` is a distinct Rust buffer of that length;
        // the shared bytes are only copied (see `write` for concurrent writers).
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Appends `len` bytes at `offset` to `dst` (no zeroing of `dst` first).
    pub(crate) fn read_into(&self, offset: usize, len: usize, dst: &mut Vec<u8>) {
        let p = self.at(offset, len, 1);
        dst.reserve(len);
        // SAFETY: in bounds (checked); `dst` has room for `len` more bytes (reserved);
        // the bytes are initialised (a mapped file reads as zero where never written).
        unsafe {
            std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr().add(dst.len()), len);
            dst.set_len(dst.len() + len);
        }
    }

    /// Copies `len` bytes within the region from `from` to `to` (ranges may overlap).
    pub(crate) fn copy_within(&self, from: usize, to: usize, len: usize) {
        let src = self.at(from, len, 1);
        let dst = self.at(to, len, 1);
        // SAFETY: both ranges in bounds (checked); `copy` allows overlap.
        unsafe { std::ptr::copy(src, dst, len) }
    }

    /// The robust mutex at `offset`.
    pub(crate) fn mutex(&self, offset: usize) -> RobustMutex<'_> {
        let p = self.at(
            offset,
            std::mem::size_of::<libc::pthread_mutex_t>(),
            std::mem::align_of::<libc::pthread_mutex_t>(),
        );
        RobustMutex {
            raw: p.cast(),
            _region: std::marker::PhantomData,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is the mapping made in `map`; nothing borrowed from
        // it outlives `self` (accessors borrow `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Size reserved for a [`RobustMutex`] in a region layout.
pub(crate) const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// A process-shared robust `pthread_mutex_t` inside a [`Region`].
#[derive(Debug)]
pub(crate) struct RobustMutex<'a> {
    raw: *mut libc::pthread_mutex_t,
    _region: std::marker::PhantomData<&'a Region>,
}

/// How [`RobustMutex::lock`] got the mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The usual case.
    Clean,
    /// Its previous holder died holding it; the protected state may be half updated.
    /// It has been marked consistent again: the caller repairs what it must.
    OwnerDied,
}

impl RobustMutex<'_> {
    /// Initialises the mutex (once, by the process that creates the region, before
    /// sharing it).
    pub(crate) fn init(&self) -> io::Result<()> {
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before use and
        // destroyed after; `raw` points at MUTEX_SIZE bytes in the region that no
        // other process can see yet.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            let r = (|| {
                check(libc::pthread_mutexattr_setpshared(
                    &mut attr,
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                check(libc::pthread_mutexattr_setrobust(
                    &mut attr,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                check(libc::pthread_mutex_init(self.raw, &attr))
            })();
            libc::pthread_mutexattr_destroy(&mut attr);
            r
        }
    }

    /// Locks, blocking this thread. The caller unlocks with [`unlock`](Self::unlock)
    /// on the same thread, without blocking in between.
    pub(crate) fn lock(&self) -> io::Result<Locked> {
        // SAFETY: `raw` points at a mutex initialised by `init` in the region, which
        // outlives `self`.
        let r = unsafe { libc::pthread_mutex_lock(self.raw) };
        self.after_lock(r)
    }

    /// Locks if free; `Ok(None)` if another thread or process holds it.
    pub(crate) fn try_lock(&self) -> io::Result<Option<Locked>> {
        // SAFETY: as for `lock`.
        let r = unsafe { libc::pthread_mutex_trylock(self.raw) };
        if r == libc::EBUSY {
            return Ok(None);
        }
        self.after_lock(r).map(Some)
    }

    fn after_lock(&self, r: libc::c_int) -> io::Result<Locked> {
        match r {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD means it was acquired).
                check(unsafe { libc::pthread_mutex_consistent(self.raw) })?;
                Ok(Locked::OwnerDied)
            }
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Unlocks a mutex this thread holds.
    pub(crate) fn unlock(&self) {
        // SAFETY: callers unlock only what they locked, on the same thread.
        unsafe {
            libc::pthread_mutex_unlock(self.raw);
        }
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Sleeps while `word` equals `expected`, at most `timeout`. Returns on a wake-up, a
/// changed value, a signal or the timeout; callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| rustix::thread::futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos().into(),
    });
    // Without the PRIVATE flag: the word is in shared memory, and other processes'
    // wakes must reach us. The outcome (woken, value changed, timed out, interrupted)
    // does not matter: callers re-check their condition.
    let _ = rustix::thread::futex::wait(word, FutexFlags::empty(), expected, ts.as_ref());
}

/// Wakes every thread, in any process, sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, FutexFlags::empty(), i32::MAX as u32);
}

/// An `eventfd`: the fd that async waiters in every process watch through tokio.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd (non-blocking, close-on-exec).
    pub(crate) fn new() -> io::Result<EventFd> {
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
        Ok(EventFd(rustix::event::eventfd(0, flags)?))
    }

    /// Wraps an eventfd received from another process.
    pub(crate) fn from_fd(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    /// Signals every watcher (adds 1 to the counter).
    pub(crate) fn notify(&self) {
        // A full counter (EAGAIN, after 2^64 - 2 unread notifications) still leaves
        // the fd readable: ignoring the error loses no wake-up.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets the counter (non-blocking; nothing to read is fine).
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut buf);
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_region_is_shared_between_two_mappings() {
        let fd = memfd("t", 4096, Size::Fixed).unwrap();
        let a = Region::map(fd.as_fd(), 4096).unwrap();
        let b = Region::map(fd.as_fd(), 4096).unwrap();
        a.u64_at(8).store(42, Ordering::SeqCst);
        assert_eq!(b.u64_at(8).load(Ordering::SeqCst), 42);
        a.write(100, b"hello");
        let mut out = Vec::new();
        b.read_into(100, 5, &mut out);
        assert_eq!(out, b"hello");
        assert_eq!(file_len(fd.as_fd()).unwrap(), 4096);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_access_panics() {
        let fd = memfd("t", 4096, Size::Fixed).unwrap();
        let a = Region::map(fd.as_fd(), 4096).unwrap();
        a.write(4090, b"too long");
    }

    #[test]
    fn the_mutex_reports_a_holder_that_died() {
        let fd = memfd("t", 4096, Size::Fixed).unwrap();
        let a = Region::map(fd.as_fd(), 4096).unwrap();
        let m = a.mutex(0);
        m.init().unwrap();
        assert_eq!(m.lock().unwrap(), Locked::Clean);
        m.unlock();
        // A thread that exits holding it: the next locker is told.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(a.mutex(0).lock().unwrap(), Locked::Clean));
        });
        assert_eq!(m.lock().unwrap(), Locked::OwnerDied);
        m.unlock();
        assert_eq!(m.lock().unwrap(), Locked::Clean);
        m.unlock();
    }

    #[test]
    fn futex_wait_returns_when_the_value_differs() {
        let w = AtomicU32::new(1);
        // Not equal to `expected`: returns at once (EAGAIN).
        futex_wait(&w, 0, None);
        // Equal, with a timeout: returns after it.
        futex_wait(&w, 1, Some(Duration::from_millis(1)));
        futex_wake_all(&w);
    }
}
