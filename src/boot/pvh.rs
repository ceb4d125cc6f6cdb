//! PVH boot: `hvm_start_info`, its module list (the initrd) and memory map.
//!
//! Spec: Xen's PVH ABI (docs/misc/pvh.pandoc) and
//! xen/include/public/arch-x86/hvm/start_info.h. The vCPU enters at the
//! `XEN_ELFNOTE_PHYS32_ENTRY` address in 32-bit protected mode, paging
//! off, with `ebx` = [`PVH_INFO_ADDR`].

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use vm_memory::GuestAddress;

use super::params::MemEntry;
use super::Error;
use crate::layout::{CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR};
use crate::memory::GuestMemoryMmap;

/// `hvm_start_info.version`: 1 has the memory map fields.
pub const START_INFO_VERSION: u32 = 1;

/// Builds the start info, module list and memory map; `rsdp` is the ACPI
/// RSDP address (`rsdp_paddr`, 0 without ACPI).
pub fn build(
    memory_map: &[MemEntry],
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> (
    hvm_start_info,
    Vec<hvm_modlist_entry>,
    Vec<hvm_memmap_table_entry>,
) {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .into_iter()
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_ADDR
        },
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        rsdp_paddr: rsdp.unwrap_or(0),
        ..Default::default()
    };
    (info, modules, memmap)
}

/// Writes the PVH structures to guest memory.
pub fn write(
    mem: &GuestMemoryMmap,
    memory_map: &[MemEntry],
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> Result<(), Error> {
    let (info, modules, memmap) = build(memory_map, initrd, rsdp);
    let mut bp = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    bp.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        bp.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&bp, mem).map_err(Error::Pvh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::memory_map;
    use vm_memory::Bytes;

    #[test]
    fn start_info_in_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(
            &mem,
            &memory_map(4 << 30),
            Some((0x1000_0000, 0x2000)),
            Some(0xe0000),
        )
        .unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.memmap_entries, 5);
        assert_eq!(info.rsdp_paddr, 0xe0000);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_ADDR)).unwrap();
        assert_eq!((m.paddr, m.size), (0x1000_0000, 0x2000));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(PVH_MEMMAP_ADDR + 4 * 24))
            .unwrap();
        assert_eq!((last.addr, last.size, last.type_), (1 << 32, 1 << 30, 1));
    }

    #[test]
    fn no_initrd_no_modules() {
        let (info, modules, memmap) = build(&memory_map(128 << 20), None, None);
        assert_eq!(info.nr_modules, 0);
        assert_eq!(info.rsdp_paddr, 0);
        assert_eq!(info.modlist_paddr, 0);
        assert!(modules.is_empty());
        assert_eq!(memmap.len(), 4);
    }
}
