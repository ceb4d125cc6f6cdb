//! Keeping file-mapped guest memory safe from changes to the file.
//!
//! [`super::file_map`] maps kernel and initrd pages straight from their
//! files (`MAP_PRIVATE`). Until the guest writes a page, it sees the file's
//! page cache; and truncating the file discards even the pages the guest
//! did write (the kernel unmaps private copies beyond a new end of file).
//! So a file is only mapped while ember holds a read lease on it
//! (`F_SETLEASE`, `F_RDLCK`): the first open of the file for writing, or a
//! truncate, by anyone, blocks and sends ember `SIGIO`. `crate::vm::lease::LeaseBreaker`,
//! an event-loop subscriber, then pauses the vCPUs, copies every mapped
//! range into fresh anonymous memory moved over it (`mremap`), resumes the
//! vCPUs and releases the leases: the writer proceeds (milliseconds later)
//! and the guest never notices. A file that cannot be leased (another
//! process has it open for writing, a file system without leases, a file
//! owned by someone else without `CAP_LEASE`) is copied as before.
//!
//! `SIGIO` is ignored by ember from [`Leases::new`] on, and blocked and read
//! through an [`crate::signal::SignalFd`] before any other thread
//! exists, so while leases are held it can neither kill the process nor be
//! lost.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::file_map::MappedRange;
use crate::signal::SignalFd;

/// Lease errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Ignoring SIGIO failed.
    #[error("cannot ignore SIGIO for file leases")]
    Ignore(#[source] std::io::Error),
    /// Blocking SIGIO or opening its signalfd failed.
    #[error("cannot set up SIGIO for file leases")]
    Signal(#[source] crate::signal::Error),
}

/// The leased, mapped files of one VM and the guest ranges mapped from
/// them.
#[derive(Debug)]
pub struct Leases {
    /// Declared (so dropped) before `sigio`: the leases go before SIGIO is
    /// unblocked again.
    files: Vec<File>,
    ranges: Vec<MappedRange>,
    sigio: SignalFd,
}

impl Leases {
    /// Ignores and blocks `SIGIO` on the calling thread (threads created
    /// later inherit the mask) and opens a signalfd for it. Call before
    /// any other thread exists.
    pub fn new() -> Result<Self, Error> {
        // Ignored: a SIGIO reaching a thread that does not block it is
        // dropped rather than killing ember (its default action).
        // Blocked signals are still queued for the signalfd.
        // SAFETY: SIG_IGN is a valid disposition for SIGIO, which ember uses
        // for nothing else.
        if unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(Error::Ignore(std::io::Error::last_os_error()));
        }
        Ok(Leases {
            files: Vec::new(),
            ranges: Vec::new(),
            sigio: SignalFd::new(&[libc::SIGIO]).map_err(Error::Signal)?,
        })
    }

    /// Takes a read lease on `file` (opened read-only); false if the
    /// kernel refuses one, in which case the file must be copied.
    pub fn try_lease(&self, file: &File) -> bool {
        // SAFETY: F_SETLEASE on an fd we own; no pointers involved.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        if rc != 0 {
            log::debug!(
                "no read lease on the file ({}): copying it",
                std::io::Error::last_os_error()
            );
        }
        rc == 0
    }

    /// Keeps the lease on `file` for the life of the VM if `ranges` were
    /// mapped from it; releases it otherwise.
    pub fn keep(&mut self, file: File, ranges: &[MappedRange]) {
        if ranges.is_empty() {
            release(&file);
        } else {
            self.files.push(file);
            self.ranges.extend_from_slice(ranges);
        }
    }

    /// The `SIGIO` signalfd: readable when a lease is being broken.
    pub fn sigio(&self) -> &SignalFd {
        &self.sigio
    }

    /// True when no guest memory is mapped from a file.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes of guest memory mapped from files.
    pub fn mapped_bytes(&self) -> usize {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// Replaces every mapped range with an anonymous copy and releases the
    /// leases. The caller must keep the guest from writing those ranges
    /// meanwhile (the VM paused: vCPUs parked, device threads quiescent).
    pub fn detach(&mut self) -> std::io::Result<()> {
        for r in std::mem::take(&mut self.ranges) {
            detach_range(r)?;
        }
        for f in self.files.drain(..) {
            release(&f);
        }
        Ok(())
    }
}

/// Releases the lease on `file`.
fn release(file: &File) {
    // SAFETY: F_SETLEASE on an fd we own; no pointers involved.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

/// Copies the file-backed range `r` into a new anonymous mapping and moves
/// that mapping over it, so that the range no longer depends on the file.
fn detach_range(r: MappedRange) -> std::io::Result<()> {
    // SAFETY: a fresh anonymous mapping of `r.len` bytes; checked below.
    let copy = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            r.len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if copy == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both ranges are `r.len` bytes, mapped readable/writable and
    // disjoint (the copy is a new mapping); `r` is still a live mapping
    // inside guest RAM (made by MappingReader::map), and nothing writes
    // it meanwhile (the caller paused the vCPUs).
    unsafe { std::ptr::copy_nonoverlapping(r.host as *const u8, copy.cast::<u8>(), r.len) };
    // SAFETY: moves the copy's pages over the range, replacing the file
    // mapping in one step (MREMAP_FIXED unmaps the destination first);
    // the destination stays inside guest RAM, the source is ours.
    let moved = unsafe {
        libc::mremap(
            copy,
            r.len,
            r.len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            r.host as *mut libc::c_void,
        )
    };
    if moved == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        // SAFETY: unmapping the copy made above, which was not moved.
        unsafe { libc::munmap(copy, r.len) };
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::file_map::MappingReader;
    use crate::memory::GuestMemoryMmap;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn detached_memory_survives_truncation_and_keeps_guest_writes() {
        let data: Vec<u8> = (0..4 * 4096).map(|i| (i % 251) as u8).collect();
        let path = crate::boot::test_file("lease-kernel", &data);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mut leases = Leases::new().unwrap();
        let file = File::open(&path).unwrap();
        assert!(leases.try_lease(&file), "a file we own can be leased");
        let mut reader = MappingReader::new(file, &mem, true);
        mem.read_exact_volatile_from(GuestAddress(0x10_0000), &mut reader, data.len())
            .unwrap();
        let ranges = reader.mapped().to_vec();
        assert_eq!(ranges.len(), 1);
        leases.keep(reader.into_file(), &ranges);
        // A guest write before the break is kept too.
        mem.write_obj(0xabu8, GuestAddress(0x10_0001)).unwrap();
        leases.detach().unwrap();
        assert!(leases.is_empty());
        // The lease is gone: this open does not block, and truncating the
        // file no longer reaches guest memory.
        std::fs::write(&path, b"").unwrap();
        let mut back = vec![0u8; data.len()];
        mem.read_slice(&mut back, GuestAddress(0x10_0000)).unwrap();
        let mut want = data.clone();
        want[1] = 0xab;
        assert_eq!(back, want);
    }

    #[test]
    fn unmapped_files_release_their_lease() {
        let path = crate::boot::test_file("lease-unmapped", b"short");
        let mut leases = Leases::new().unwrap();
        let file = File::open(&path).unwrap();
        assert!(leases.try_lease(&file));
        leases.keep(file, &[]);
        assert!(leases.is_empty());
        // Would block for the lease-break time (45 s) if still leased.
        let start = std::time::Instant::now();
        std::fs::write(&path, b"rewritten").unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
