//! [`ShareableList`]: a fixed-length list of plain values and bounded strings in one
//! block of shared memory (Python's `multiprocessing.shared_memory.ShareableList`).
//!
//! The block holds a header (a magic word and the length), a table of each slot's
//! offset and capacity, then the slots: a type tag, the length used, and the payload.
//! The table never changes after the list is made; a process that receives the list
//! checks it against the block's size once and keeps its own copy, so no later write
//! to the block can make it read outside it. A slot's tag and length are read under
//! the list's lock and checked against the slot's capacity on every read.

use std::fmt;
use std::io;

use super::{hold, SharedMemory};
use crate::sync::Lock;
use crate::wire::handles::{handle_serde, Handle};

const MAGIC: u64 = 0x7073_6c69_7374_0001;
const HEADER: usize = 16;
const TABLE_ENTRY: usize = 16;
/// A slot's tag (1 byte, padded to 4) and the bytes it uses (`u32`).
const SLOT_HEADER: usize = 8;
/// Room for any fixed-size value.
const MIN_CAPACITY: usize = 8;

const TAG_NONE: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_BYTES: u8 = 5;

/// One value of a [`ShareableList`]: the types Python's `ShareableList` holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// Python's `None`.
    None,
    /// A `bool`.
    Bool(bool),
    /// An `int` (64-bit).
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`, at most its slot's capacity in UTF-8 bytes.
    Str(String),
    /// `bytes`, at most its slot's capacity.
    Bytes(Vec<u8>),
}

impl Item {
    /// Its tag and its bytes, borrowed (a fixed-size value is written into `buf`).
    fn encode<'a>(&'a self, buf: &'a mut [u8; 8]) -> (u8, &'a [u8]) {
        match self {
            Item::None => (TAG_NONE, &[]),
            Item::Bool(b) => {
                buf[0] = u8::from(*b);
                (TAG_BOOL, &buf[..1])
            }
            Item::Int(i) => {
                *buf = i.to_le_bytes();
                (TAG_INT, &buf[..])
            }
            Item::Float(f) => {
                *buf = f.to_le_bytes();
                (TAG_FLOAT, &buf[..])
            }
            Item::Str(s) => (TAG_STR, s.as_bytes()),
            Item::Bytes(b) => (TAG_BYTES, b),
        }
    }

    /// Bytes its slot needs at least: a string's length rounded up to 8, as Python
    /// rounds it.
    fn capacity(&self) -> usize {
        let len = match self {
            Item::Str(s) => s.len(),
            Item::Bytes(b) => b.len(),
            _ => 0,
        };
        len.div_ceil(8).max(1) * 8
    }
}

/// Why a [`ShareableList`] access failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The index is past the end; the list's length is fixed.
    #[error("index {index} is out of range for a list of {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The list's length.
        len: usize,
    },
    /// A string or bytes value longer than its slot's capacity (fixed when the list
    /// was made); nothing was written.
    #[error("a value of {len} bytes does not fit slot {index}, which holds {capacity}")]
    TooLong {
        /// The slot.
        index: usize,
        /// The value's length in bytes.
        len: usize,
        /// The slot's capacity in bytes.
        capacity: usize,
    },
    /// The slot holds something no list writes (another program wrote over the
    /// block, or a writer died half-way); set it again to repair it.
    #[error("slot {index} is damaged: {reason}")]
    Damaged {
        /// The slot.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The list's lock failed.
    #[error("shareable list I/O error")]
    Io(#[from] io::Error),
}

/// A fixed-length list of mixed plain values and bounded strings in shared memory
/// (Python's `ShareableList`), passed to other processes as a handle.
///
/// Each slot keeps the capacity it was made with: 8 bytes for a number, a bool or
/// `None`, a string's or bytes' length rounded up to 8 (or more, with
/// [`with_text_capacity`](Self::with_text_capacity)). Any slot may later hold any
/// item that fits; a longer string is refused with [`ListError::TooLong`]. Reads and
/// writes take the list's lock, so a reader never sees half a string.
///
/// ```
/// use procpool::shm::{Item, ShareableList};
///
/// let list = ShareableList::new([Item::Int(1), Item::Str("hello".into()), Item::None])?;
/// list.set(0, Item::Float(2.5))?;
/// list.set(1, Item::Str("world!".into()))?; // fits the 8 bytes "hello" was given
/// assert!(list.set(1, Item::Str("far too long".into())).is_err());
/// assert_eq!(list.get(1)?, Item::Str("world!".into()));
/// assert_eq!(list.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShareableList {
    mem: SharedMemory,
    lock: Lock,
    /// Each slot's offset and capacity, checked against the block when the list
    /// arrived; never read from the block again.
    slots: Vec<(usize, usize)>,
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("len", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ShareableList {
    /// A list of `items`, each slot sized for its item.
    ///
    /// # Errors
    /// A system error if the memory or its lock cannot be made.
    pub fn new(items: impl IntoIterator<Item = Item>) -> io::Result<ShareableList> {
        ShareableList::with_text_capacity(items, 0)
    }

    /// A list of `items` whose every slot holds at least `capacity` bytes, so that
    /// longer strings fit later.
    ///
    /// # Errors
    /// As [`new`](Self::new); [`io::ErrorKind::InvalidInput`] for a slot over 4 GiB.
    pub fn with_text_capacity(
        items: impl IntoIterator<Item = Item>,
        capacity: usize,
    ) -> io::Result<ShareableList> {
        let items: Vec<Item> = items.into_iter().collect();
        let too_large = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shareable list slot holds at most 4 GiB, and the list must fit memory",
            )
        };
        let floor = capacity.checked_next_multiple_of(8).ok_or_else(too_large)?;
        let mut slots = Vec::with_capacity(items.len());
        let mut offset = TABLE_ENTRY
            .checked_mul(items.len())
            .and_then(|t| t.checked_add(HEADER))
            .ok_or_else(too_large)?;
        for item in &items {
            let cap = item.capacity().max(floor).max(MIN_CAPACITY);
            if u32::try_from(cap).is_err() {
                return Err(too_large());
            }
            slots.push((offset, cap));
            offset = offset
                .checked_add(SLOT_HEADER + cap)
                .ok_or_else(too_large)?;
        }
        let mem = SharedMemory::zeroed(offset)?;
        mem.write(0, &MAGIC.to_le_bytes());
        mem.write(8, &(items.len() as u64).to_le_bytes());
        for (i, &(off, cap)) in slots.iter().enumerate() {
            let at = HEADER + TABLE_ENTRY * i;
            mem.write(at, &(off as u64).to_le_bytes());
            mem.write(at + 8, &(cap as u64).to_le_bytes());
        }
        let list = ShareableList {
            mem,
            lock: Lock::new()?,
            slots,
        };
        for (i, item) in items.iter().enumerate() {
            // Each item fits the slot made for it.
            list.write_slot(i, item);
        }
        Ok(list)
    }

    /// How many items it holds (fixed).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds no items.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The capacity of slot `index` in bytes.
    ///
    /// # Errors
    /// [`ListError::IndexOutOfRange`].
    pub fn capacity(&self, index: usize) -> Result<usize, ListError> {
        Ok(self.slot(index)?.1)
    }

    fn slot(&self, index: usize) -> Result<(usize, usize), ListError> {
        self.slots
            .get(index)
            .copied()
            .ok_or(ListError::IndexOutOfRange {
                index,
                len: self.slots.len(),
            })
    }

    /// The item at `index`.
    ///
    /// # Errors
    /// [`ListError::IndexOutOfRange`]; [`ListError::Damaged`] if the slot holds what
    /// no list writes.
    pub fn get(&self, index: usize) -> Result<Item, ListError> {
        let (offset, cap) = self.slot(index)?;
        let _held = hold(&self.lock)?;
        let mut head = [0u8; SLOT_HEADER];
        self.mem.read(offset, &mut head);
        let tag = head[0];
        let used = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        let damaged = |reason: String| ListError::Damaged { index, reason };
        if used > cap {
            return Err(damaged(format!("{used} bytes used of {cap}")));
        }
        let mut payload = vec![0u8; used];
        self.mem.read(offset + SLOT_HEADER, &mut payload);
        let fixed = |n: usize| -> Result<[u8; 8], ListError> {
            let mut b = [0u8; 8];
            if payload.len() != n {
                return Err(damaged(format!("a fixed value of {} bytes", payload.len())));
            }
            b[..n].copy_from_slice(&payload);
            Ok(b)
        };
        Ok(match tag {
            TAG_NONE => Item::None,
            TAG_BOOL => Item::Bool(fixed(1)?[0] != 0),
            TAG_INT => Item::Int(i64::from_le_bytes(fixed(8)?)),
            TAG_FLOAT => Item::Float(f64::from_le_bytes(fixed(8)?)),
            TAG_STR => Item::Str(
                String::from_utf8(payload)
                    .map_err(|_| damaged("a string that is not UTF-8".into()))?,
            ),
            TAG_BYTES => Item::Bytes(payload),
            other => return Err(damaged(format!("type tag {other}"))),
        })
    }

    /// Stores `item` at `index`.
    ///
    /// # Errors
    /// [`ListError::IndexOutOfRange`]; [`ListError::TooLong`] for a string or bytes
    /// over the slot's capacity (nothing is written).
    pub fn set(&self, index: usize, item: Item) -> Result<(), ListError> {
        let (_, cap) = self.slot(index)?;
        let len = item.encode(&mut [0; 8]).1.len();
        if len > cap {
            return Err(ListError::TooLong {
                index,
                len,
                capacity: cap,
            });
        }
        let _held = hold(&self.lock)?;
        self.write_slot(index, &item);
        Ok(())
    }

    /// Writes an item that fits its slot (checked by the caller).
    fn write_slot(&self, index: usize, item: &Item) {
        let (offset, _) = self.slots[index];
        let mut buf = [0; 8];
        let (tag, payload) = item.encode(&mut buf);
        let mut head = [0u8; SLOT_HEADER];
        head[0] = tag;
        head[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        self.mem.write(offset + SLOT_HEADER, payload);
        self.mem.write(offset, &head);
    }

    /// Every item, in order.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn to_vec(&self) -> Result<Vec<Item>, ListError> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Checks a block that arrived as a list and reads its table.
    fn table_of(mem: &SharedMemory) -> Result<Vec<(usize, usize)>, String> {
        let size = mem.len();
        let mut word = [0u8; 8];
        let mut u64_at = |at: usize| -> Result<u64, String> {
            if at + 8 > size {
                return Err("shareable list block too short".to_owned());
            }
            mem.read(at, &mut word);
            Ok(u64::from_le_bytes(word))
        };
        if u64_at(0)? != MAGIC {
            return Err("not a shareable list".to_owned());
        }
        let len = u64_at(8)?;
        let table_end = (len as u128) * TABLE_ENTRY as u128 + HEADER as u128;
        if table_end > size as u128 {
            return Err(format!("a table of {len} slots does not fit the block"));
        }
        let mut slots = Vec::with_capacity(len as usize);
        let mut next = table_end as usize;
        for i in 0..len as usize {
            let at = HEADER + TABLE_ENTRY * i;
            let (off, cap) = (u64_at(at)?, u64_at(at + 8)?);
            let end = (off as u128) + SLOT_HEADER as u128 + cap as u128;
            if off as usize != next || end > size as u128 || cap < MIN_CAPACITY as u64 {
                return Err(format!("slot {i} lies outside its place"));
            }
            slots.push((off as usize, cap as usize));
            next = end as usize;
        }
        Ok(slots)
    }
}

impl Handle for ShareableList {
    const KIND: &'static str = "ShareableList";
    type Params = ();
    type Parts<'a> = (&'a SharedMemory, &'a Lock);
    type Received = (SharedMemory, Lock);

    fn parts(&self) -> Self::Parts<'_> {
        (&self.mem, &self.lock)
    }

    fn assemble((mem, lock): Self::Received) -> Result<Self, String> {
        let slots = ShareableList::table_of(&mem)?;
        Ok(ShareableList { mem, lock, slots })
    }
}

handle_serde!(ShareableList);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_that_is_not_a_list_or_whose_table_lies_is_refused() {
        let garbage = SharedMemory::zeroed(64).unwrap();
        assert!(ShareableList::table_of(&garbage).is_err());
        // A real list's table, then one whose slot claims more than the block.
        let list = ShareableList::new([Item::Int(1), Item::Str("abc".into())]).unwrap();
        assert_eq!(ShareableList::table_of(&list.mem).unwrap(), list.slots);
        list.mem
            .write(HEADER + TABLE_ENTRY + 8, &(1u64 << 40).to_le_bytes());
        assert!(ShareableList::table_of(&list.mem).is_err());
        // A length that would overflow the table.
        list.mem.write(8, &u64::MAX.to_le_bytes());
        assert!(ShareableList::table_of(&list.mem).is_err());
    }

    #[test]
    fn a_slot_whose_length_passes_its_capacity_reads_as_damaged() {
        let list = ShareableList::new([Item::Str("abc".into())]).unwrap();
        let (offset, _) = list.slots[0];
        list.mem.write(offset + 4, &1000u32.to_le_bytes());
        assert!(matches!(
            list.get(0),
            Err(ListError::Damaged { index: 0, .. })
        ));
        list.mem.write(offset, &[99]);
        list.mem.write(offset + 4, &0u32.to_le_bytes());
        assert!(matches!(list.get(0), Err(ListError::Damaged { .. })));
        // Setting it again repairs it.
        list.set(0, Item::Bool(true)).unwrap();
        assert_eq!(list.get(0).unwrap(), Item::Bool(true));
    }
}
