//! The shared-memory ring between the parent and each worker (`src/wire/ring.rs`):
//! frames on either side of a slot's size, frames that spill to the socket among ones
//! that do not, and workers that die or lie in the middle of a slot.
//!
//! The broken workers are real: the task writes into the worker's own mapping of its
//! ring (found in `/proc/self/maps`) as `src/wire/ring.rs` lays it out, then dies or
//! spins. The ring's magic word is checked first, so a changed layout fails here
//! loudly rather than testing nothing.

// Writing into the worker's own shared mapping through raw pointers.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use crate::common;

use procpool::{ProcessPoolExecutor, ProtocolError, TaskError};

/// The ring's layout, as `src/wire/lanes.rs` and `src/wire/ring.rs` have it.
const MAGIC: u64 = 0x7072_6f63_7269_6e02;
const CONTROL: usize = 4096;
const SLOTS: u64 = 128;
const SLOT_LEN: usize = 4096;
/// The up lane (worker → parent): its `tail` word and its first slot.
const UP_TAIL: usize = 128 + 8 * 128;
const UP_SLOTS: usize = CONTROL + SLOTS as usize * SLOT_LEN;
/// A slot's entry word saying that its frame went on the socket.
const SPILLED: u64 = u64::MAX;
/// A slot's entry word saying that its frame lies in the ring's bulk area, and each
/// side's half of that area (`src/wire/bulk.rs`); the worker writes the second half.
const BULK: u64 = u64::MAX - 1;
const BULK_HALF: usize = 64 << 20;
/// The body of a `Vec<u8>` of this length makes a frame that fills a slot exactly: a
/// 32-byte header, a 2-byte length and the bytes, 4,080 in all (a slot of 4,096 less
/// its 16 bytes of entry: length and time).
const FILLS_A_SLOT: usize = 4046;

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + n) as u8).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn frames_on_either_side_of_a_slot_come_back_whole() {
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    // One at a time, the task and its result both cross the ring or both spill.
    for n in FILLS_A_SLOT - 16..=FILLS_A_SLOT + 16 {
        let v = bytes(n);
        assert_eq!(pool.run(echo, v.clone()).await.unwrap(), v, "{n} bytes");
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_frames_keep_their_place_among_the_ring_s() {
    // One worker, eight tasks ahead of it: frames through the ring and frames on the
    // socket (large ones, and exactly one byte past a slot) alternate in one stream.
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(8)
        .build()
        .unwrap();
    let sizes = [
        3,
        FILLS_A_SLOT,
        FILLS_A_SLOT + 1,
        1 << 20,
        10,
        300_000,
        FILLS_A_SLOT - 1,
        0,
        70_000,
    ];
    let items: Vec<Vec<u8>> = (0..200).map(|i| bytes(sizes[i % sizes.len()])).collect();
    let out = pool.map(echo, items.clone()).chunk_size(1).await.unwrap();
    assert_eq!(out, items);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_through_the_bulk_area_and_the_socket_keep_their_order() {
    // One worker, eight tasks pipelined: a large frame goes through the bulk area while its
    // half has room, and spills to the socket while the frame before it fills the
    // half (two of 33 MiB in a half of 64 MiB); slots, bulk and socket in one order.
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(8)
        .build()
        .unwrap();
    let sizes = [33 << 20, 10, 33 << 20, 5000, 1 << 20, FILLS_A_SLOT + 1, 3];
    let items: Vec<Vec<u8>> = (0..14).map(|i| bytes(sizes[i % sizes.len()])).collect();
    let mut handles = Vec::new();
    for item in &items {
        handles.push(pool.submit(echo, item.clone()).await.unwrap());
    }
    for (handle, item) in handles.into_iter().zip(&items) {
        assert!(
            handle.await.unwrap() == *item,
            "an echo of {} bytes differs",
            item.len()
        );
    }
    // One larger than a whole half spills both ways.
    let huge = bytes(BULK_HALF + 1);
    assert!(pool.run(echo, huge.clone()).await.unwrap() == huge);
    pool.shutdown().await;
}

/// Bytes of memory the bulk files this process holds take now: in a pool worker, its
/// own ring's (in the test binary, every pool's, so the test asks its worker).
fn bulk_bytes_held() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|p| p.to_string_lossy().contains("procpool-bulk"))
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Counts the events that say an idle pool gave back its bulk area
/// (`target: "procpool::bulk"`), and wakes whoever waits for the next one.
#[cfg(feature = "tracing")]
#[derive(Clone, Default)]
struct GivenBack {
    count: std::sync::Arc<AtomicU64>,
    changed: std::sync::Arc<tokio::sync::Notify>,
}

#[cfg(feature = "tracing")]
impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GivenBack {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "procpool::bulk" {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.changed.notify_waiters();
        }
    }
}

#[cfg(feature = "tracing")]
impl GivenBack {
    /// Waits until more than `seen` events have come. The minute is a guard against a
    /// hang when the release is broken, not a timing.
    async fn after(&self, seen: u64) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.count.load(Ordering::SeqCst) > seen {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .expect("the bulk area was never given back");
    }
}

#[cfg(feature = "tracing")]
#[tokio::test(flavor = "current_thread")]
async fn an_idle_pool_gives_back_the_memory_its_large_frames_went_through() {
    use tracing_subscriber::layer::SubscriberExt;
    // On this thread only: the pool's drivers run here (a current-thread runtime).
    let given_back = GivenBack::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(given_back.clone()));
    let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
    let big = bytes(16 << 20);
    // The task and its result each went through a half: both halves hold their pages
    // (unless a second passed in between and they were given back; then again).
    let (mut held, mut seen) = (0, 0);
    for _ in 0..100 {
        assert!(pool.run(echo, big.clone()).await.unwrap() == big);
        seen = given_back.count.load(Ordering::SeqCst);
        held = own_bulk_bytes(&pool).await;
        if held >= 32 << 20 {
            break;
        }
    }
    assert!(held >= 32 << 20, "{held} bytes held after a 16 MiB echo");
    // Idle: a second after the last large frame, the parent gives its half back and
    // tells the worker, which gives its own back before it takes the next task.
    given_back.after(seen).await;
    assert_eq!(own_bulk_bytes(&pool).await, 0);
    // And large frames go through again.
    assert!(pool.run(echo, big.clone()).await.unwrap() == big);
    pool.shutdown().await;
}

/// Bytes the bulk file of `pool`'s one worker takes: the worker looks at its own
/// descriptor of the file (the test binary's other pools have theirs).
async fn own_bulk_bytes(pool: &ProcessPoolExecutor) -> u64 {
    pool.run(|_: ()| bulk_bytes_held(), ()).await.unwrap()
}

/// The progress word's room in front of each frame in a bulk half.
const BULK_LEAD: usize = 64;

/// A frame's header (`src/wire/mod.rs`): body length, then kind (`Done` is 13).
const HEADER_LEN: usize = 32;
const DONE: u16 = 13;

/// Announces a large reply of 4 MiB at the start of the worker's bulk half, as the
/// worker does before copying it in, copies in a megabyte of it (a true header, then
/// filler), and stops there: with `die`, by SIGKILL; else it spins, alive, for ever.
fn unfinished_bulk_reply(die: bool) -> u32 {
    let up = mapping("procpool-bulk").wrapping_add(BULK_HALF);
    let (len, written) = (4u64 << 20, 1usize << 20);
    let base = my_ring();
    let slot = next_slot(base);
    // SAFETY: the worker's half is `BULK_HALF` bytes from `BULK_HALF` on, and the
    // progress word and a megabyte fit at its start (8-aligned); the slot is
    // `SLOT_LEN` bytes inside the ring's mapping and 32 bytes fit.
    unsafe {
        let progress = &*up.cast::<AtomicU64>();
        progress.store(0, Ordering::Relaxed);
        slot.cast::<u64>().write_unaligned(BULK);
        slot.add(16).cast::<u64>().write_unaligned(0);
        slot.add(24).cast::<u64>().write_unaligned(len);
        up_tail(base).fetch_add(1, Ordering::Release);
        let frame = up.add(BULK_LEAD);
        std::ptr::write_bytes(frame, 0xab, written);
        std::ptr::write_bytes(frame, 0, HEADER_LEN);
        frame.cast::<u64>().write_unaligned(len - HEADER_LEN as u64);
        frame.add(8).cast::<u16>().write_unaligned(DONE);
        progress.store(written as u64, Ordering::Release);
    }
    ring_every_eventfd();
    if die {
        common::signal(std::process::id(), libc::SIGKILL);
    }
    common::spin_forever(())
}

fn die_writing_a_bulk_frame(_: ()) -> u32 {
    unfinished_bulk_reply(true)
}

fn stall_writing_a_bulk_frame(_: ()) -> u32 {
    unfinished_bulk_reply(false)
}

/// Announces a large reply said to lie past the end of the worker's bulk half, rings
/// every doorbell, and spins.
fn lie_about_a_bulk_extent(_: ()) -> u32 {
    let base = my_ring();
    let slot = next_slot(base);
    // SAFETY: the slot is `SLOT_LEN` bytes inside the mapping; 32 bytes fit.
    unsafe {
        slot.cast::<u64>().write_unaligned(BULK);
        slot.add(16)
            .cast::<u64>()
            .write_unaligned(BULK_HALF as u64 - 8);
        slot.add(24).cast::<u64>().write_unaligned(4096);
    }
    up_tail(base).fetch_add(1, Ordering::Release);
    ring_every_eventfd();
    common::spin_forever(())
}

/// The start of this process's mapping of the memory file named `name`.
fn mapping(name: &str) -> *mut u8 {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("a pool worker maps {name}"));
    let start = line.split('-').next().unwrap();
    usize::from_str_radix(start, 16).unwrap() as *mut u8
}

/// The base of this worker's ring mapping, after checking its magic word.
fn my_ring() -> *mut u8 {
    let base = mapping("procpool-ring");
    // SAFETY: the mapping is at least the control page long, 8-aligned at its start,
    // and stays mapped for the life of the worker.
    let magic = unsafe { (*base.cast::<AtomicU64>()).load(Ordering::Acquire) };
    assert_eq!(magic, MAGIC, "the ring's layout changed: update this test");
    base
}

/// The up lane's `tail` word in this worker's ring.
fn up_tail(base: *mut u8) -> &'static AtomicU64 {
    // SAFETY: `UP_TAIL` is inside the control page and 8-aligned; the mapping outlives
    // the task, which never returns.
    unsafe { &*base.add(UP_TAIL).cast::<AtomicU64>() }
}

/// The slot the worker's next reply would take.
fn next_slot(base: *mut u8) -> *mut u8 {
    let tail = up_tail(base).load(Ordering::Acquire);
    // SAFETY: the slot index is below `SLOTS`, so the offset is inside the mapping.
    unsafe { base.add(UP_SLOTS + (tail % SLOTS) as usize * SLOT_LEN) }
}

/// Writes half a reply into the next slot, without publishing it, and dies.
fn die_writing_a_slot(_: ()) -> u32 {
    let slot = next_slot(my_ring());
    let half = [0xabu8; 24];
    // SAFETY: the slot is `SLOT_LEN` bytes inside the mapping; 16 + 24 fit.
    unsafe {
        slot.cast::<u64>().write_unaligned(40);
        std::ptr::copy_nonoverlapping(half.as_ptr(), slot.add(16), half.len());
    }
    common::signal(std::process::id(), libc::SIGKILL);
    unreachable!("SIGKILL is not caught")
}

/// Announces a spilled reply and dies before writing any of it.
fn die_after_announcing_a_spill(_: ()) -> u32 {
    let base = my_ring();
    let slot = next_slot(base);
    // SAFETY: as in `die_writing_a_slot`.
    unsafe { slot.cast::<u64>().write_unaligned(SPILLED) };
    up_tail(base).fetch_add(1, Ordering::Release);
    common::signal(std::process::id(), libc::SIGKILL);
    unreachable!("SIGKILL is not caught")
}

/// Claims a thousand replies in a ring of 128 slots, rings every doorbell, and spins.
fn lie_about_the_tail(_: ()) -> u32 {
    let base = my_ring();
    up_tail(base).fetch_add(1000, Ordering::Release);
    ring_every_eventfd();
    common::spin_forever(())
}

fn ring_every_eventfd() {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_eventfd =
            std::fs::read_link(entry.path()).is_ok_and(|p| p.to_string_lossy().contains("eventfd"));
        let fd = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok());
        if let (true, Some(fd)) = (is_eventfd, fd) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: `fd` is open in this process (listed just now); the buffer is a
            // valid local array of the 8 bytes an eventfd takes.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
        }
    }
}

/// Runs `f` with three tasks pipelined behind it on one worker: `f`'s task fails as
/// `check` says, the three run (on another worker), and the pool goes on.
async fn only_its_task_fails<F: procpool::Task<(), u32>>(f: F, check: impl Fn(TaskError)) {
    only_its_task_fails_within(f, None, check).await;
}

/// As [`only_its_task_fails`], `f`'s task given `timeout` if any.
async fn only_its_task_fails_within<F: procpool::Task<(), u32>>(
    f: F,
    timeout: Option<std::time::Duration>,
    check: impl Fn(TaskError),
) {
    let pool = ProcessPoolExecutor::builder()
        .workers(1)
        .pipeline_depth(4)
        .build()
        .unwrap();
    let first = pool.run(common::whoami, ()).await.unwrap();
    let broken = match timeout {
        Some(t) => pool.task(f).timeout(t).try_submit(()),
        None => pool.try_submit(f, ()),
    }
    .unwrap();
    let behind: Vec<_> = (0..3)
        .map(|_| pool.try_submit(common::whoami, ()).unwrap())
        .collect();
    check(broken.await.expect_err("the broken worker's task fails"));
    for handle in behind {
        assert_ne!(handle.await.unwrap(), first, "ran on the replacement");
    }
    assert!(!common::exists(first), "the broken worker was reaped");
    assert_eq!(pool.stats().worker_restarts, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_killed_while_writing_a_slot_fails_only_its_task() {
    only_its_task_fails(die_writing_a_slot, |e| {
        assert!(matches!(e, TaskError::WorkerDied { .. }), "{e:?}")
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_killed_after_announcing_a_spill_fails_only_its_task() {
    only_its_task_fails(die_after_announcing_a_spill, |e| {
        assert!(matches!(e, TaskError::WorkerDied { .. }), "{e:?}")
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_lying_about_its_ring_is_a_protocol_error() {
    only_its_task_fails(lie_about_the_tail, |e| match e {
        TaskError::Protocol(ProtocolError::Malformed { reason }) => {
            assert!(reason.contains("ahead of its reader"), "{reason}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_killed_while_writing_a_bulk_frame_fails_only_its_task() {
    only_its_task_fails(die_writing_a_bulk_frame, |e| {
        assert!(matches!(e, TaskError::WorkerDied { .. }), "{e:?}")
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_lying_about_a_bulk_extent_is_a_protocol_error() {
    only_its_task_fails(lie_about_a_bulk_extent, |e| match e {
        TaskError::Protocol(ProtocolError::Malformed { reason }) => {
            assert!(reason.contains("bulk frame"), "{reason}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_stalled_in_the_middle_of_a_bulk_frame_is_timed_out_not_waited_on() {
    // The parent must not wait in the half-written frame: the task times out on the
    // same single thread, and the tasks behind it run on a replacement.
    let timeout = std::time::Duration::from_millis(200);
    only_its_task_fails_within(stall_writing_a_bulk_frame, Some(timeout), |e| {
        assert!(matches!(e, TaskError::TimedOut { .. }), "{e:?}")
    })
    .await;
}
