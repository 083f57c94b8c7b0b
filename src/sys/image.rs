//! Where the running executable is mapped.
//!
//! `dl_iterate_phdr(3)` reports the main program first; its load base and program
//! headers are all procpool needs to turn a function address into an offset that means
//! the same thing in a re-executed copy of the binary, to check that an offset received
//! from the parent lands in the executable's own code, and to fingerprint the build.
//!
//! Safety rests on the loader's contract: the `dl_phdr_info` handed to the callback and
//! the program headers it points to are valid for the duration of the callback, and
//! every `PT_LOAD` segment is mapped (readable, for the ones we read) at
//! `dlpi_addr + p_vaddr` for `p_memsz` bytes for as long as the process lives (the main
//! executable is never unloaded).
//!
//! # References
//! - <https://man7.org/linux/man-pages/man3/dl_iterate_phdr.3.html>
//! - <https://man7.org/linux/man-pages/man5/elf.5.html>

use std::ffi::c_void;

/// How many bytes at the start of each executable segment feed the fingerprint.
const SAMPLE_BYTES: usize = 64 * 1024;

/// One program header of the executable, as plain numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Segment {
    pub(crate) kind: u32,
    pub(crate) flags: u32,
    pub(crate) vaddr: u64,
    pub(crate) memsz: u64,
    pub(crate) filesz: u64,
    pub(crate) offset: u64,
}

/// The main executable as the loader mapped it in this process.
#[derive(Debug, Default)]
pub(crate) struct Image {
    /// Load base (`dlpi_addr`); zero for a non-PIE executable.
    pub(crate) base: usize,
    /// Absolute `[start, end)` ranges of the executable (`PF_X`) `PT_LOAD` segments.
    pub(crate) code: Vec<(usize, usize)>,
    /// Every program header, in order.
    pub(crate) segments: Vec<Segment>,
    /// The GNU build-id note, when the linker wrote one.
    pub(crate) build_id: Option<Vec<u8>>,
    /// The first bytes of each executable segment, concatenated.
    pub(crate) code_sample: Vec<u8>,
}

impl Image {
    /// Whether `addr` lies inside one of the executable's code segments.
    pub(crate) fn is_code(&self, addr: usize) -> bool {
        self.code
            .iter()
            .any(|&(start, end)| addr >= start && addr < end)
    }
}

/// Reads the main executable's mapping from the loader.
pub(crate) fn main_image() -> Image {
    let mut image = Image::default();
    // SAFETY: the callback only dereferences what the loader passes it for the
    // duration of the call, and `data` is the `&mut Image` above, alive for the whole
    // call and not aliased (dl_iterate_phdr calls back on this thread only).
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            (&mut image as *mut Image).cast::<c_void>(),
        );
    }
    image
}

unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `&mut Image` passed by `main_image`; `info` is valid for
    // this call (dl_iterate_phdr's contract).
    let (image, info) = unsafe { (&mut *data.cast::<Image>(), &*info) };
    image.base = info.dlpi_addr as usize;
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: the loader guarantees `dlpi_phnum` headers at `dlpi_phdr`.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    for ph in phdrs {
        image.segments.push(Segment {
            kind: ph.p_type,
            flags: ph.p_flags,
            vaddr: ph.p_vaddr,
            memsz: ph.p_memsz,
            filesz: ph.p_filesz,
            offset: ph.p_offset,
        });
        let start = image.base.wrapping_add(ph.p_vaddr as usize);
        let len = ph.p_memsz as usize;
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            image.code.push((start, start.wrapping_add(len)));
            let take = len.min(ph.p_filesz as usize).min(SAMPLE_BYTES);
            if ph.p_flags & libc::PF_R != 0 && take > 0 {
                // SAFETY: a readable PT_LOAD segment is mapped at `start` for `p_memsz`
                // bytes, and `take` is no more than `p_filesz` (file-backed bytes).
                let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, take) };
                image.code_sample.extend_from_slice(bytes);
            }
        }
        if ph.p_type == libc::PT_NOTE && ph.p_filesz > 0 {
            // SAFETY: PT_NOTE lies inside a loaded, readable segment for `p_filesz`
            // bytes in every executable the Linux loaders accept.
            let notes =
                unsafe { std::slice::from_raw_parts(start as *const u8, ph.p_filesz as usize) };
            if let Some(id) = find_build_id(notes) {
                image.build_id = Some(id.to_vec());
            }
        }
    }
    1 // stop after the main program
}

/// Finds the `NT_GNU_BUILD_ID` descriptor in a note segment, bounds-checked.
fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8]| -> Option<u32> { Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?)) };
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let namesz = word(notes)? as usize;
        let descsz = word(&notes[4..])? as usize;
        let kind = word(&notes[8..])?;
        let name_end = 12usize.checked_add(align4(namesz)?)?;
        let desc_end = name_end.checked_add(align4(descsz)?)?;
        if desc_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(12..12 + namesz) == Some(b"GNU\0".as_slice()) {
            return notes.get(name_end..name_end + descsz);
        }
        notes = &notes[desc_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_function_is_in_the_executable_code() {
        let image = main_image();
        let addr = main_image as fn() -> Image as *const () as usize;
        assert!(image.is_code(addr));
        assert!(!image.is_code(0));
        assert!(!image.code_sample.is_empty());
    }

    #[test]
    fn build_id_parser_rejects_truncated_notes() {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_ne_bytes());
        note.extend_from_slice(&64u32.to_ne_bytes()); // claims 64 bytes, has none
        note.extend_from_slice(&3u32.to_ne_bytes());
        note.extend_from_slice(b"GNU\0");
        assert_eq!(find_build_id(&note), None);
        note.truncate(12);
        note.extend_from_slice(b"GNU\0");
        let mut ok = note.clone();
        ok[4..8].copy_from_slice(&4u32.to_ne_bytes());
        ok.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(find_build_id(&ok), Some(&[1u8, 2, 3, 4][..]));
    }
}
