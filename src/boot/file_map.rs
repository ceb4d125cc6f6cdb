//! Loading files into guest memory without copying them: [`MappingReader`]
//! maps whole pages of the kernel or initrd file (`MAP_PRIVATE`) over the
//! guest RAM they are loaded into, and copies only the partial pages at the
//! ends.
//!
//! A fresh anonymous page that a loader writes costs the host a page clear
//! and a copy; a private file mapping costs neither: the guest sees the
//! host's page-cache pages until it writes one, which then becomes its own
//! copy. In the nested lab, where the host kernel's page clearing runs under
//! TCG, that was most of ember's own start-up time (docs/PERFORMANCE.md).
//! linux-loader still parses and validates the image and decides where each
//! piece goes: the reader only changes how the bytes arrive.
//!
//! The catch of a file mapping is that a later in-place rewrite of the file
//! (`cp new-vmlinux vmlinux`) would show through to the guest's
//! still-unwritten pages. [`crate::boot::lease`] closes that: a mapped file
//! is held under a read lease, and the first attempt to open it for writing
//! replaces every mapped range with an anonymous copy before the writer may
//! proceed. A file that cannot be leased is copied as before.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

use crate::memory::GuestMemoryMmap;

/// Host page size assumed for mapping (x86_64).
const PAGE: u64 = 4096;

/// A host range of guest RAM now backed by file pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRange {
    /// Host virtual address (page aligned).
    pub host: usize,
    /// Length in bytes (whole pages).
    pub len: usize,
}

/// A file reader for linux-loader that maps, instead of copying, every
/// whole page it is asked to read into guest RAM.
#[derive(Debug)]
pub struct MappingReader {
    file: File,
    /// Host ranges of the guest RAM mappings: only these may be replaced.
    ram: Vec<(usize, usize)>,
    /// What was mapped, for [`crate::boot::lease`].
    mapped: Vec<MappedRange>,
    /// When false, everything is copied (the file could not be leased).
    enabled: bool,
}

impl MappingReader {
    /// Wraps `file`, which will be read into `mem`; `enabled` false makes
    /// it a plain reader.
    pub fn new(file: File, mem: &GuestMemoryMmap, enabled: bool) -> Self {
        MappingReader {
            file,
            ram: crate::memory::host_ranges(mem),
            mapped: Vec::new(),
            enabled,
        }
    }

    /// The ranges mapped so far.
    pub fn mapped(&self) -> &[MappedRange] {
        &self.mapped
    }

    /// Gives back the file.
    pub fn into_file(self) -> File {
        self.file
    }

    /// True when `[host, host + len)` lies inside one guest RAM mapping.
    fn inside_ram(&self, host: usize, len: usize) -> bool {
        self.ram
            .iter()
            .any(|&(start, size)| host >= start && host.saturating_add(len) <= start + size)
    }

    /// Maps `len` bytes (whole pages) of the file at `offset` over the
    /// guest RAM at `host`. False if the kernel refused (a file that cannot
    /// be mapped): the caller copies instead.
    fn map(&mut self, host: usize, offset: u64, len: usize) -> bool {
        if !self.inside_ram(host, len) {
            return false;
        }
        let Ok(offset) = libc::off_t::try_from(offset) else {
            return false;
        };
        // SAFETY: `host..host + len` is page aligned and lies inside one of
        // the guest RAM mappings owned by the `GuestMemoryMmap` this reader
        // was made for (checked above), which outlives the mapping (its
        // drop unmaps the whole region, this overlay included). Guest RAM
        // is only ever accessed through raw pointers and volatile slices,
        // never through Rust references, so replacing its pages in place
        // invalidates nothing. MAP_PRIVATE: guest writes never reach the
        // file.
        let p = unsafe {
            libc::mmap(
                host as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                self.file.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            log::debug!(
                "cannot map the file at offset {offset:#x}, copying: {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
        self.mapped.push(MappedRange { host, len });
        true
    }
}

impl Read for MappingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for MappingReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

impl ReadVolatile for MappingReader {
    /// Fills all of `buf` when the file has that many bytes (vm-memory's
    /// `read_exact_volatile_from` calls this once per region): partial
    /// pages copied, whole pages mapped.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let mut done = 0;
        while done < buf.len() {
            let mut rest = buf.offset(done)?;
            let n = self.read_some(&mut rest)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

impl MappingReader {
    /// One step of [`ReadVolatile::read_volatile`]: maps the whole pages at
    /// the start of `buf` if it and the file position are page aligned,
    /// else copies up to the next page boundary (or everything, when
    /// mapping is off or the two are not congruent).
    fn read_some<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let host = buf.ptr_guard_mut().as_ptr() as usize;
        let len = buf.len();
        let pos = self
            .file
            .stream_position()
            .map_err(VolatileMemoryError::IOError)?;
        let size = self
            .file
            .metadata()
            .map_err(VolatileMemoryError::IOError)?
            .len();
        let congruent = host as u64 % PAGE == pos % PAGE;
        let head = ((PAGE - host as u64 % PAGE) % PAGE).min(len as u64);
        // Whole pages inside the file (a page past its end would fault).
        let avail = size.saturating_sub(pos).min(len as u64);
        let body = avail.saturating_sub(head) & !(PAGE - 1);
        if self.enabled && congruent && head == 0 && body > 0 {
            let body = body as usize;
            if self.map(host, pos, body) {
                self.file
                    .seek(SeekFrom::Current(body as i64))
                    .map_err(VolatileMemoryError::IOError)?;
                buf.bitmap().mark_dirty(0, body);
                return Ok(body);
            }
            // Not mappable (a file system without mmap): copy the rest.
            self.enabled = false;
        }
        let copy = if self.enabled && congruent && body > 0 {
            head as usize
        } else {
            len
        };
        let mut part = buf.subslice(0, copy)?;
        self.file.read_volatile(&mut part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn file_with(bytes: &[u8], name: &str) -> File {
        File::open(crate::boot::test_file(&format!("map-{name}"), bytes)).unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    #[test]
    fn aligned_pages_are_mapped_and_the_rest_copied() {
        let data = pattern(5 * 4096 + 100);
        let m = mem();
        let mut r = MappingReader::new(file_with(&data, "aligned"), &m, true);
        m.read_exact_volatile_from(GuestAddress(0x10_0000), &mut r, data.len())
            .unwrap();
        assert_eq!(r.mapped().len(), 1);
        assert_eq!(r.mapped()[0].len, 5 * 4096);
        let mut back = vec![0u8; data.len() + 4096];
        m.read_slice(&mut back, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&back[..data.len()], &data[..]);
        // Past the bytes read, guest RAM is still zero (bss stays clean).
        assert!(back[data.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn offset_reads_map_from_the_right_place() {
        // A segment at file offset 0x2000 loaded at 0x20_3000 (congruent),
        // preceded by a seek, as linux-loader does for ELF segments.
        let data = pattern(8 * 4096);
        let m = mem();
        let mut r = MappingReader::new(file_with(&data, "offset"), &m, true);
        r.seek(SeekFrom::Start(0x2000)).unwrap();
        m.read_exact_volatile_from(GuestAddress(0x20_3000), &mut r, 3 * 4096 + 5)
            .unwrap();
        let mut back = vec![0u8; 3 * 4096 + 5];
        m.read_slice(&mut back, GuestAddress(0x20_3000)).unwrap();
        assert_eq!(&back[..], &data[0x2000..0x2000 + 3 * 4096 + 5]);
        assert_eq!(
            r.into_file().stream_position().unwrap(),
            0x2000 + 3 * 4096 + 5
        );
    }

    #[test]
    fn unaligned_head_is_copied_then_pages_mapped() {
        let data = pattern(6 * 4096);
        let m = mem();
        let mut r = MappingReader::new(file_with(&data, "head"), &m, true);
        r.seek(SeekFrom::Start(0x100)).unwrap();
        m.read_exact_volatile_from(GuestAddress(0x30_0100), &mut r, 4 * 4096)
            .unwrap();
        assert_eq!(r.mapped().len(), 1);
        let mut back = vec![0u8; 4 * 4096];
        m.read_slice(&mut back, GuestAddress(0x30_0100)).unwrap();
        assert_eq!(&back[..], &data[0x100..0x100 + 4 * 4096]);
    }

    #[test]
    fn incongruent_offsets_are_copied() {
        // bzImage: the protected-mode kernel starts at a 512-byte multiple.
        let data = pattern(6 * 4096);
        let m = mem();
        let mut r = MappingReader::new(file_with(&data, "incongruent"), &m, true);
        r.seek(SeekFrom::Start(0xa00)).unwrap();
        m.read_exact_volatile_from(GuestAddress(0x10_0000), &mut r, 4 * 4096)
            .unwrap();
        assert!(r.mapped().is_empty());
        let mut back = vec![0u8; 4 * 4096];
        m.read_slice(&mut back, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&back[..], &data[0xa00..0xa00 + 4 * 4096]);
    }

    #[test]
    fn disabled_reader_copies() {
        let data = pattern(4 * 4096);
        let m = mem();
        let mut r = MappingReader::new(file_with(&data, "disabled"), &m, false);
        m.read_exact_volatile_from(GuestAddress(0x10_0000), &mut r, data.len())
            .unwrap();
        assert!(r.mapped().is_empty());
    }

    #[test]
    fn ranges_outside_guest_ram_are_never_mapped() {
        let data = pattern(4 * 4096);
        let m = mem();
        let mut r = MappingReader::new(file_with(&data, "outside"), &m, true);
        let mut other = vec![0u8; 8 * 4096];
        // A page-aligned buffer that is not guest RAM.
        let start = (other.as_mut_ptr() as usize + 4095) & !4095;
        assert!(!r.map(start, 0, 4096));
    }
}
