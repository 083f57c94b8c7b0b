//! How many items go in each of a `map`'s chunks.
//!
//! A caller may fix the size ([`MapStream::chunk_size`](super::MapStream::chunk_size)).
//! Otherwise it adapts. It starts small: the input's length hint over four chunks per
//! worker, at most [`START_MOST`] items (or [`UNKNOWN_LEN`] when the input does not
//! say how long it is), so that slow items are spread over the workers from the
//! first chunk. Each time a chunk comes back, the map estimates how long one item
//! takes a worker (time since the first chunk went, times the workers, over the
//! items answered) and doubles the size while a chunk would still take at most
//! [`TARGET`]. Short items thus travel in large chunks, whose round trips cost
//! little per item, and long ones in small chunks, which balance well. The size never
//! passes a quarter of a worker's share of a known input, nor [`MOST`].
//!
//! Measured with `cargo run --release` of a probe mapping 1 M trivial items on 2
//! workers (the 2-vCPU VM of BENCHMARKS.md, 2026-12-03), fixed sizes, medians of 20
//! maps, three alternating rounds: 4,096 items 13–20 M items/s, 16,384 20–30 M/s,
//! 65,536 26–28 M/s.

use std::time::{Duration, Instant};

/// The largest first size for an input of known length.
const START_MOST: usize = 4096;
/// The first size for an input that does not know its length.
const UNKNOWN_LEN: usize = 16;
/// The largest size reached by doubling.
const MOST: usize = 1 << 16;
/// How long a worker may take over one chunk before it stops growing.
/// (Tail imbalance is at most about this; a map this short is split by its length.)
const TARGET: Duration = Duration::from_millis(10);

/// The chunk size of one map: fixed by its caller, or adapting (see the module).
#[derive(Debug)]
pub(crate) struct Chunking {
    size: usize,
    /// The most that doubling may reach; `size` itself when fixed.
    most: usize,
    /// When the first chunk was sent, and items answered since.
    since: Option<Instant>,
    answered: u64,
}

impl Chunking {
    /// A size the caller chose (at least 1).
    pub(crate) fn fixed(size: usize) -> Chunking {
        let size = size.max(1);
        Chunking {
            size,
            most: size,
            since: None,
            answered: 0,
        }
    }

    /// An adapting size for an input whose length hint is `hint` (0: unknown), on a
    /// pool of `workers`.
    pub(crate) fn adaptive(hint: usize, workers: usize) -> Chunking {
        let (size, most) = if hint == 0 {
            (UNKNOWN_LEN, MOST)
        } else {
            let share = hint.div_ceil(4 * workers.max(1)).max(1);
            (share.min(START_MOST), share.min(MOST))
        };
        Chunking {
            size,
            most,
            since: None,
            answered: 0,
        }
    }

    /// Items for the next chunk.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// A chunk was sent at `now`.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// A chunk of `items` came back at `now`, with `workers` in the pool; the size
    /// doubles if a chunk of it would still take a worker under [`TARGET`].
    pub(crate) fn answered(&mut self, items: usize, workers: usize, now: Instant) {
        self.answered += items as u64;
        let (Some(since), true) = (self.since, self.size < self.most) else {
            return;
        };
        if self.answered == 0 {
            return;
        }
        // Worker time per item: the time the map has run for, on every worker.
        let per_item = now.saturating_duration_since(since).as_nanos() * workers.max(1) as u128
            / u128::from(self.answered);
        let doubled = self.size.saturating_mul(2).min(self.most);
        if per_item.saturating_mul(doubled as u128) <= TARGET.as_nanos() {
            self.size = doubled;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_size_stays() {
        let mut c = Chunking::fixed(100);
        let t = Instant::now();
        c.sent(t);
        c.answered(100, 2, t);
        assert_eq!(c.size(), 100);
    }

    #[test]
    fn it_starts_at_a_quarter_of_a_workers_share_and_at_most_4096() {
        assert_eq!(Chunking::adaptive(1000, 2).size(), 125);
        assert_eq!(Chunking::adaptive(1_000_000, 2).size(), START_MOST);
        assert_eq!(Chunking::adaptive(0, 2).size(), UNKNOWN_LEN);
        assert_eq!(Chunking::adaptive(3, 8).size(), 1);
    }

    #[test]
    fn quick_items_double_it_up_to_the_share_or_the_most() {
        let t = Instant::now();
        // 4096 items answered 4096 µs after the first chunk went, on 2 workers: 2 µs
        // of worker time each, so 8192 would take 16 ms and the size stays; at 10 ns
        // an item it doubles up to the most.
        let mut c = Chunking::adaptive(1_000_000, 2);
        c.sent(t);
        c.answered(4096, 2, t + Duration::from_micros(4096));
        assert_eq!(c.size(), 4096);
        let mut c = Chunking::adaptive(1_000_000, 2);
        c.sent(t);
        let mut answered = 0u64;
        for _ in 0..10 {
            answered += c.size() as u64;
            // 10 ns per item of worker time: the map has run answered * 10 ns / 2.
            c.answered(c.size(), 2, t + Duration::from_nanos(answered * 5));
        }
        assert_eq!(c.size(), MOST);
        // A shorter input stops at a quarter of a worker's share.
        let mut c = Chunking::adaptive(40_000, 2);
        c.sent(t);
        c.answered(c.size(), 2, t + Duration::from_micros(1));
        assert_eq!(c.size(), 5000);
    }

    #[test]
    fn an_input_of_unknown_length_grows_from_16() {
        let t = Instant::now();
        let mut c = Chunking::adaptive(0, 2);
        c.sent(t);
        c.answered(16, 2, t + Duration::from_micros(1));
        assert_eq!(c.size(), 32);
    }
}
