//! One virtio-block request (virtio 1.2 §5.2.6): parse the descriptor
//! chain, check it against guest memory and the disk, do the I/O, write
//! the status byte.
//!
//! Framing: the first descriptor holds the 16-byte header
//! (device-readable), the last one the status byte (device-writable), and
//! those between hold the data. Everything a guest controls is checked
//! before any I/O starts: each descriptor's direction and its range in
//! guest memory, the data length (a multiple of 512), and the sector range
//! against the disk's end, with overflow checks. A request that fails a
//! check gets `VIRTIO_BLK_S_IOERR` (or `UNSUPP` for an unknown type); a
//! chain without a usable status descriptor is returned with length 0 and
//! nothing written.
//!
//! Data moves straight between the file and guest memory, no bounce
//! buffer: one `preadv` per read request, one `pwrite` per guest buffer for
//! writes (see `transfer`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, Bytes, GuestMemoryBackend};

use super::SECTOR_SIZE;
use crate::memory::GuestMemoryMmap;

/// Size of `struct virtio_blk_outhdr`.
pub const HEADER_LEN: u32 = 16;

/// The request header (`struct virtio_blk_outhdr`), little endian.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Header {
    /// Request type (`VIRTIO_BLK_T_*`).
    pub kind: u32,
    /// Reserved (was `ioprio`).
    pub reserved: u32,
    /// First sector (512 bytes) of the transfer.
    pub sector: u64,
}

// SAFETY: `Header` is repr(C) plain data with no padding (4 + 4 + 8 bytes);
// every bit pattern is a valid value.
unsafe impl ByteValued for Header {}

/// Why a request failed (logged at debug level; the guest sees a status).
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// `VIRTIO_BLK_S_IOERR`.
    IoErr(&'static str),
    /// `VIRTIO_BLK_S_UNSUPP`.
    Unsupported(u32),
}

/// A disk image and what the guest knows about it, plus the scratch
/// space its requests reuse (no allocation per request once warm).
#[derive(Debug)]
pub struct Disk {
    file: Arc<File>,
    sectors: u64,
    readonly: bool,
    id: [u8; 20],
    /// The current request's descriptors.
    descs: Vec<Descriptor>,
    /// The current request's data buffers as iovecs.
    iovecs: IoVecs,
}

/// iovecs pointing into guest memory, kept between requests for their
/// allocation only: emptied before each use.
#[derive(Debug, Default)]
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the pointers are only dereferenced (by the kernel) during the
// `transfer` call that filled them, on the thread that owns the disk; at
// rest the vector holds stale values that nothing reads.
unsafe impl Send for IoVecs {}

impl Disk {
    /// A disk of `sectors` 512-byte sectors backed by `file`.
    pub fn new(file: Arc<File>, sectors: u64, readonly: bool, id: [u8; 20]) -> Self {
        Disk {
            file,
            sectors,
            readonly,
            id,
            descs: Vec::new(),
            iovecs: IoVecs::default(),
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether the guest may write.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// True if the file was opened without write access.
    #[cfg(test)]
    pub(super) fn file_is_readonly(&self) -> bool {
        // SAFETY: F_GETFL on a file descriptor we own.
        let flags = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_ACCMODE == libc::O_RDONLY
    }

    /// The 20-byte serial returned by `GET_ID`.
    pub fn id(&self) -> &[u8; 20] {
        &self.id
    }

    /// Serves one request; returns the number of bytes written into the
    /// chain's device-writable buffers (the used element's length).
    pub fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        // The chain iterator stops after `queue size` descriptors, so a
        // loop in the chain ends here too. The vector keeps its capacity
        // from request to request.
        let mut descs = std::mem::take(&mut self.descs);
        descs.clear();
        descs.extend(chain);
        let len = self.execute_descs(mem, &descs);
        self.descs = descs;
        len
    }

    fn execute_descs(&mut self, mem: &GuestMemoryMmap, descs: &[Descriptor]) -> u32 {
        let Some((status, rest)) = descs.split_last() else {
            return 0;
        };
        if !status.is_write_only() || status.len() < 1 || !in_memory(mem, status) {
            log::debug!("virtio-block: request without a usable status descriptor");
            return 0;
        }
        let (code, written) = match rest.split_first() {
            None => (VIRTIO_BLK_S_IOERR, 0),
            Some((header, data)) => match self.serve(mem, header, data) {
                Ok(n) => (VIRTIO_BLK_S_OK, n),
                Err(Failure::Unsupported(kind)) => {
                    log::debug!("virtio-block: unsupported request type {kind}");
                    (VIRTIO_BLK_S_UNSUPP, 0)
                }
                Err(Failure::IoErr(why)) => {
                    log::debug!("virtio-block: request failed: {why}");
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            },
        };
        match mem.write_obj(code as u8, status.addr()) {
            Ok(()) => written + 1,
            Err(_) => 0,
        }
    }

    /// Returns the number of data bytes written into guest memory.
    fn serve(
        &mut self,
        mem: &GuestMemoryMmap,
        header: &Descriptor,
        data: &[Descriptor],
    ) -> Result<u32, Failure> {
        if header.is_write_only() {
            return Err(Failure::IoErr("device-writable header"));
        }
        if header.len() < HEADER_LEN {
            return Err(Failure::IoErr("header too short"));
        }
        let hdr: Header = mem
            .read_obj(header.addr())
            .map_err(|_| Failure::IoErr("header outside guest memory"))?;
        let (kind, sector) = (u32::from_le(hdr.kind), u64::from_le(hdr.sector));
        match kind {
            VIRTIO_BLK_T_IN => {
                let total = self.check_data(mem, data, true, sector)?;
                transfer(
                    &self.file,
                    mem,
                    data,
                    sector * SECTOR_SIZE,
                    Direction::Read,
                    &mut self.iovecs.0,
                )
                .map_err(|_| Failure::IoErr("read failed"))?;
                Ok(total)
            }
            VIRTIO_BLK_T_OUT => {
                if self.readonly {
                    return Err(Failure::IoErr("write to a read-only disk"));
                }
                self.check_data(mem, data, false, sector)?;
                transfer(
                    &self.file,
                    mem,
                    data,
                    sector * SECTOR_SIZE,
                    Direction::Write,
                    &mut self.iovecs.0,
                )
                .map_err(|_| Failure::IoErr("write failed"))?;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                // SAFETY: fdatasync on a file descriptor we own.
                let rc = unsafe { libc::fdatasync(self.file.as_raw_fd()) };
                if rc != 0 {
                    return Err(Failure::IoErr("fdatasync failed"));
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let Some(d) = data.first() else {
                    return Err(Failure::IoErr("GET_ID without a buffer"));
                };
                if !d.is_write_only() || !in_memory(mem, d) {
                    return Err(Failure::IoErr("bad GET_ID buffer"));
                }
                let n = (d.len() as usize).min(self.id.len());
                mem.write_slice(&self.id[..n], d.addr())
                    .map_err(|_| Failure::IoErr("GET_ID buffer outside guest memory"))?;
                Ok(n as u32)
            }
            other => Err(Failure::Unsupported(other)),
        }
    }

    /// Checks the data descriptors of an IN (`to_guest`) or OUT request:
    /// direction, guest memory range, total a multiple of 512 bytes, and
    /// the sector range inside the disk. Returns the total length.
    fn check_data(
        &self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        to_guest: bool,
        sector: u64,
    ) -> Result<u32, Failure> {
        let mut total: u64 = 0;
        for d in data {
            if d.is_write_only() != to_guest {
                return Err(Failure::IoErr("data descriptor in the wrong direction"));
            }
            if !in_memory(mem, d) {
                return Err(Failure::IoErr("data descriptor outside guest memory"));
            }
            total += u64::from(d.len());
        }
        if !total.is_multiple_of(SECTOR_SIZE) {
            return Err(Failure::IoErr("data length not a multiple of 512"));
        }
        let end = sector
            .checked_add(total / SECTOR_SIZE)
            .ok_or(Failure::IoErr("sector overflow"))?;
        if end > self.sectors {
            return Err(Failure::IoErr("sector range beyond the end of the disk"));
        }
        // The chain iterator caps a chain at 2^32 - 1 bytes.
        u32::try_from(total).map_err(|_| Failure::IoErr("request too large"))
    }
}

fn in_memory(mem: &GuestMemoryMmap, d: &Descriptor) -> bool {
    GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize)
}

/// Which way [`transfer`] moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// File to guest memory (`VIRTIO_BLK_T_IN`).
    Read,
    /// Guest memory to file (`VIRTIO_BLK_T_OUT`).
    Write,
}

/// Most iovecs one `preadv` call takes (Linux `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Moves the data buffers of a request (already checked to lie in guest
/// memory) between the file at `offset` and guest memory. Reads are one
/// `preadv` for the whole request rather than one call per buffer; writes
/// are one `pwrite` per buffer, since `pwritev` with a request's 4 KiB
/// buffers measured about 3 times slower (lab, tmpfs-backed image,
/// `docs/PERFORMANCE.md`). `iovecs` is scratch space (emptied first).
fn transfer(
    file: &File,
    mem: &GuestMemoryMmap,
    data: &[Descriptor],
    mut offset: u64,
    direction: Direction,
    iovecs: &mut Vec<libc::iovec>,
) -> io::Result<()> {
    iovecs.clear();
    for d in data {
        for slice in GuestMemoryBackend::get_slices(mem, d.addr(), d.len() as usize) {
            let slice = slice.map_err(io::Error::other)?;
            // The plain mmap backend's guard only carries the pointer: the
            // mapping itself lives as long as `mem`, which outlives this
            // call (guest RAM is never unmapped while the VM runs).
            let guard = slice.ptr_guard_mut();
            if guard.len() > 0 {
                iovecs.push(libc::iovec {
                    iov_base: guard.as_ptr().cast(),
                    iov_len: guard.len(),
                });
            }
        }
    }
    let mut first = 0;
    while first < iovecs.len() {
        let batch = &iovecs[first..iovecs.len().min(first + MAX_IOVECS)];
        // SAFETY: every iovec points into guest memory mapped for as long
        // as `mem` lives (borrowed for this whole call) and its length
        // stays within one checked slice; the kernel reads or writes at
        // most those bytes.
        let n = unsafe {
            match direction {
                Direction::Read => libc::preadv64(
                    file.as_raw_fd(),
                    batch.as_ptr(),
                    batch.len() as libc::c_int,
                    offset as libc::off64_t,
                ),
                Direction::Write => libc::pwrite64(
                    file.as_raw_fd(),
                    batch[0].iov_base,
                    batch[0].iov_len,
                    offset as libc::off64_t,
                ),
            }
        };
        let mut n = match n {
            n if n > 0 => n as usize,
            0 if direction == Direction::Read => return Err(io::ErrorKind::UnexpectedEof.into()),
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        };
        offset += n as u64;
        // Skip the iovecs done and trim a partly done one.
        while n > 0 && first < iovecs.len() {
            let iov = &mut iovecs[first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                first += 1;
            } else {
                // SAFETY: advancing within the same iovec's buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n).cast() };
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}
