//! Guest RAM: the split around the 32-bit MMIO gap, the anonymous mappings
//! (`MAP_NORESERVE`, no prefault, transparent huge pages above 2 MiB) and
//! their KVM memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::layout::{HIGH_RAM_START, MMIO_GAP_START};

/// The guest memory type used throughout ember.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Guest memory errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request exceeds the host's RAM.
    #[error("memory size {want_mib} MiB is larger than the host can give ({host_mib} MiB of RAM)")]
    HostTooSmall {
        /// Requested MiB.
        want_mib: u64,
        /// Host MemTotal in MiB.
        host_mib: u64,
    },
    /// mmap of the guest RAM failed.
    #[error("cannot map {0} MiB of guest memory")]
    Mmap(u64, #[source] vm_memory::mmap::FromRangesError),
    /// KVM refused a memory slot.
    #[error("cannot register guest memory slot {0} with KVM")]
    Slot(u32, #[source] kvm_ioctls::Error),
}

/// RAM ranges for `size` bytes: low RAM from 0 up to the MMIO gap, the
/// rest from 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if size > low {
        regions.push((GuestAddress(HIGH_RAM_START), (size - low) as usize));
    }
    regions
}

/// End (exclusive) of RAM below the MMIO gap.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

/// Host RAM in bytes, from `/proc/meminfo` (`None` if unreadable).
pub fn host_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Maps guest RAM (no prefault, `MAP_NORESERVE`) after checking that the
/// host has that much RAM.
pub fn create(size: u64) -> Result<GuestMemoryMmap, Error> {
    if let Some(host) = host_ram() {
        if size > host {
            return Err(Error::HostTooSmall {
                want_mib: size >> 20,
                host_mib: host >> 20,
            });
        }
    }
    // vm-memory maps anonymous regions with MAP_PRIVATE | MAP_NORESERVE and
    // does not touch them: pages are allocated on the guest's first access.
    let mem =
        GuestMemoryMmap::from_ranges(&ram_regions(size)).map_err(|e| Error::Mmap(size >> 20, e))?;
    advise_huge_pages(&mem);
    Ok(mem)
}

/// Guest RAM below this stays in 4 KiB pages: the boot structures, the BIOS
/// area and a small guest's code live there, and one touch would make the
/// whole 2 MiB resident.
pub const SMALL_PAGES_END: u64 = 2 << 20;

/// Asks for transparent huge pages (`MADV_HUGEPAGE`) on guest RAM above
/// [`SMALL_PAGES_END`], as QEMU does: loading the kernel and the guest's
/// first touches then fault 2 MiB at a time, and KVM can map the guest with
/// 2 MiB pages. Without it, hosts whose THP mode is `madvise` (Debian's
/// default) give 4 KiB pages: in the lab, forcing 4 KiB pages made the
/// default guest's boot-to-init 1541 ms instead of 1100 ms (median of 8,
/// docs/PERFORMANCE.md). Best effort: a host without THP keeps small pages.
fn advise_huge_pages(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        let skip = SMALL_PAGES_END.saturating_sub(region.start_addr().0);
        let len = region.len().saturating_sub(skip);
        let Ok(host) = mem.get_host_address(region.start_addr()) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        // SAFETY: the range lies inside this region's mapping (skip < len of
        // the region); madvise only changes how the kernel backs it.
        let rc = unsafe {
            libc::madvise(
                host.add(skip as usize).cast(),
                len as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        if rc != 0 {
            log::debug!(
                "MADV_HUGEPAGE on guest RAM at {:#x}: {}",
                region.start_addr().0 + skip,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Registers every region as a KVM memory slot (slot numbers from 0).
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| Error::Slot(slot, kvm_ioctls::Error::new(libc::EFAULT)))?;
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range belongs to `mem`, which the VMM keeps alive
        // (in an Arc shared with every vCPU) for as long as the VM exists.
        unsafe { vm.set_user_memory_region(desc) }.map_err(|e| Error::Slot(slot, e))?;
    }
    Ok(())
}

/// Guest RAM present in ember's page tables, in KiB: what the guest (or
/// the loader) touched, since nothing is prefaulted. The sum of `Rss` over
/// the mappings inside guest RAM in `/proc/self/smaps`: that counts the
/// kernel and initrd pages mapped from their files ([`crate::boot::file_map`])
/// only where the guest used them, where `mincore` would count every page
/// of the file in the page cache. A mapping the kernel merged with a
/// neighbour (an adjacent anonymous mapping with the same flags, such as
/// the other RAM region) reaches outside guest RAM, so its `Rss` is not
/// ours alone: the part inside guest RAM is counted with `mincore`, as is
/// everything without procfs.
pub fn resident_kib(mem: &GuestMemoryMmap) -> u64 {
    let ranges = host_ranges(mem);
    let smaps = match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => smaps,
        Err(_) => return mincore_kib(&ranges),
    };
    let (kib, partial) = rss_kib_within(&smaps, &ranges);
    kib + mincore_kib(&partial)
}

fn mincore_kib(ranges: &[(usize, usize)]) -> u64 {
    ranges
        .iter()
        .filter_map(|&(start, len)| resident_bytes(start as *mut u8, len))
        .sum::<u64>()
        / 1024
}

/// Resident bytes of the mapping at `addr` of `len` bytes, by `mincore`:
/// for guest RAM (anonymous, not prefaulted) this is what the guest (or
/// the loader) touched.
fn resident_bytes(addr: *mut u8, len: usize) -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    if page == 0 || !(addr as usize).is_multiple_of(page) {
        return None;
    }
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr..addr+len` is a mapping the caller owns; `vec` holds
    // one byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    Some(vec.iter().filter(|b| **b & 1 != 0).count() as u64 * page as u64)
}

/// The host mappings of guest RAM: (host address, length) per region.
pub fn host_ranges(mem: &GuestMemoryMmap) -> Vec<(usize, usize)> {
    mem.iter()
        .filter_map(|r| {
            let host = mem.get_host_address(r.start_addr()).ok()?;
            Some((host as usize, r.len() as usize))
        })
        .collect()
}

/// Sums the `Rss:` of the `smaps` mappings that lie inside one of
/// `ranges` (host address, length), and returns, besides, the parts of
/// `ranges` covered by mappings that reach outside them.
fn rss_kib_within(smaps: &str, ranges: &[(usize, usize)]) -> (u64, Vec<(usize, usize)>) {
    let mut inside = false;
    let mut kib = 0;
    let mut partial = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                inside = false;
                for &(s, len) in ranges {
                    let (lo, hi) = (start.max(s), end.min(s + len));
                    if lo >= hi {
                        continue;
                    }
                    if (lo, hi) == (start, end) {
                        inside = true;
                    } else {
                        partial.push((lo, hi - lo));
                    }
                }
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("Rss:") {
                kib += rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    (kib, partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn split_around_gap() {
        assert_eq!(ram_regions(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        assert_eq!(ram_regions(3 << 30), vec![(GuestAddress(0), 3 << 30)]);
        assert_eq!(
            ram_regions(4 << 30),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        assert_eq!(
            ram_regions(16 << 30),
            vec![
                (GuestAddress(0), 3 << 30),
                (GuestAddress(4 << 30), 13 << 30)
            ]
        );
        assert_eq!(low_ram_end(16 << 30), MMIO_GAP_START);
        assert_eq!(low_ram_end(64 << 20), 64 << 20);
    }

    #[test]
    fn rss_of_guest_mappings_only() {
        let smaps = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
Rss:                 512 kB
7f0000200000-7f0000400000 rw-p 00000000 08:01 1234  /boot/vmlinux
Rss:                  64 kB
Pss:                  64 kB
7f0000400000-7f0000600000 rw-p 00000000 00:00 0
Rss:                1000 kB
";
        let ranges = [(0x7f00_0000_0000, 0x40_0000)];
        assert_eq!(rss_kib_within(smaps, &ranges), (576, vec![]));
        assert_eq!(rss_kib_within(smaps, &[]), (0, vec![]));
        // A mapping merged with a neighbour outside guest RAM: only the
        // overlap comes back, to be counted page by page.
        let ranges = [(0x7f00_0010_0000, 0x20_0000)];
        assert_eq!(
            rss_kib_within(smaps, &ranges),
            (
                0,
                vec![(0x7f00_0010_0000, 0x10_0000), (0x7f00_0020_0000, 0x10_0000)]
            )
        );
    }

    #[test]
    fn resident_counts_touched_pages() {
        let mem = GuestMemoryMmap::from_ranges(&ram_regions(8 << 20)).unwrap();
        assert_eq!(resident_kib(&mem), 0);
        for page in 0..3u64 {
            mem.write_obj(1u8, GuestAddress(page * 4096)).unwrap();
        }
        assert_eq!(resident_kib(&mem), 12);
    }

    #[test]
    fn resident_counts_merged_neighbours_once_each() {
        // Two anonymous NORESERVE mappings side by side are one VMA to the
        // kernel (this happened in CI, with other tests' guest RAM placed
        // next to this one's): each memory must still count only its pages.
        let a = GuestMemoryMmap::from_ranges(&ram_regions(4 << 20)).unwrap();
        let b = GuestMemoryMmap::from_ranges(&ram_regions(4 << 20)).unwrap();
        a.write_obj(1u8, GuestAddress(0)).unwrap();
        for page in 0..2u64 {
            b.write_obj(1u8, GuestAddress(page * 4096)).unwrap();
        }
        assert_eq!(resident_kib(&a), 4);
        assert_eq!(resident_kib(&b), 8);
    }

    #[test]
    fn map_16g_without_touching() {
        // MAP_NORESERVE: 16 GiB of address space costs nothing until used.
        let mem = GuestMemoryMmap::from_ranges(&ram_regions(16 << 30)).unwrap();
        assert_eq!(mem.num_regions(), 2);
        assert_eq!(mem.last_addr(), GuestAddress((4 << 30) + (13 << 30) - 1));
    }

    #[test]
    fn mincore_counts_touched_pages() {
        let mem = create(64 << 20).unwrap();
        let host = mem.get_host_address(GuestAddress(0)).unwrap();
        assert_eq!(resident_bytes(host, 64 << 20), Some(0));
        mem.write_obj(1u8, GuestAddress(0x10_0000)).unwrap();
        mem.write_obj(1u8, GuestAddress(0x20_0000)).unwrap();
        let r = resident_bytes(host, 64 << 20).unwrap();
        assert!((8192..=(4 << 20)).contains(&r), "{r}");
    }
}
