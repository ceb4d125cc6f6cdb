//! Identity-mapped page tables for the 64-bit entry: the first 4 GiB with
//! 2 MiB pages (one PML4 entry, four PDPT entries, four page directories).
//!
//! Spec: Intel SDM Vol. 3A §4.5 (4-level paging). The Linux 64-bit boot
//! protocol requires the kernel, zero page and command line to be
//! identity mapped; 4 GiB also covers an initrd anywhere in low RAM.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{PDPT_ADDR, PD_ADDR, PML4_ADDR};
use crate::memory::GuestMemoryMmap;

/// Present + writable.
const PRESENT_RW: u64 = 0x3;
/// Present + writable + 2 MiB page size.
const PRESENT_RW_HUGE: u64 = 0x83;
/// Number of page directories (one per GiB).
pub const NUM_PDS: u64 = 4;

/// Every (address, value) pair of the page tables.
pub fn entries() -> impl Iterator<Item = (u64, u64)> {
    let pml4 = std::iter::once((PML4_ADDR, PDPT_ADDR | PRESENT_RW));
    let pdpt = (0..NUM_PDS).map(|i| (PDPT_ADDR + i * 8, (PD_ADDR + i * 0x1000) | PRESENT_RW));
    let pds = (0..NUM_PDS * 512).map(|i| (PD_ADDR + i * 8, (i << 21) | PRESENT_RW_HUGE));
    pml4.chain(pdpt).chain(pds)
}

/// Writes the page tables; CR3 = [`PML4_ADDR`].
pub fn write(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    for (addr, value) in entries() {
        mem.write_obj(value, GuestAddress(addr))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map_4g() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem).unwrap();
        let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(read(0x9000), 0xa003);
        assert_eq!(read(0x9008), 0);
        assert_eq!(read(0xa000), 0xb003);
        assert_eq!(read(0xa018), 0xe003);
        assert_eq!(read(0xa020), 0);
        assert_eq!(read(0xb000), 0x83);
        assert_eq!(read(0xb008), 0x20_0083);
        // Last 2 MiB page below 4 GiB.
        assert_eq!(read(0xeff8), 0xffe0_0083);
        // Walk a few addresses through the tables.
        for va in [0u64, 0x100_0000, 0x7fff_f000, 0xbfff_ffff, 0xffff_ffff] {
            let pdpte = read(read(0x9000) & !0xfff);
            assert_eq!(pdpte & 1, 1);
            let pd = read((read(0x9000) & !0xfff) + ((va >> 30) & 0x1ff) * 8) & !0xfff;
            let pde = read(pd + ((va >> 21) & 0x1ff) * 8);
            assert_eq!(pde & 0x83, 0x83);
            assert_eq!((pde & !0x1f_ffff & !0xfff) | (va & 0x1f_ffff), va);
        }
    }
}
