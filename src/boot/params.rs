//! The guest memory map (e820 / PVH memmap) and the Linux zero page
//! (`struct boot_params`) for the 64-bit boot protocol.
//!
//! Spec: Documentation/arch/x86/boot.rst ("64-bit boot protocol", "the
//! zero page") and Documentation/arch/x86/zero-page.rst.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::GuestAddress;

use super::Error;
use crate::layout::{CMDLINE_ADDR, ZERO_PAGE_ADDR};
use crate::memory::GuestMemoryMmap;

/// `boot_flag` magic (boot.rst: 0xAA55).
pub const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header` magic: "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: undefined boot loader.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `loadflags` bit 0: kernel loaded high (at 1 MiB).
pub const LOADED_HIGH: u8 = 0x01;
/// `loadflags` bit 7: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// `kernel_alignment` used for ELF kernels (16 MiB, x86 default).
pub const KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// Boot protocol version claimed for ELF kernels (2.15).
pub const ELF_BOOT_PROTOCOL: u16 = 0x020f;

pub use crate::plan::{memory_map, MemEntry, E820_RAM, E820_RESERVED};

/// What the zero page needs to know besides the memory map.
#[derive(Debug, Clone, Copy)]
pub struct ZeroPageInput<'a> {
    /// The bzImage setup header, or `None` for an ELF kernel.
    pub header: Option<setup_header>,
    /// Command line length without the NUL.
    pub cmdline_len: usize,
    /// Initrd (address, size) if any.
    pub initrd: Option<(u64, u64)>,
    /// The guest memory map (the machine plan's).
    pub memory_map: &'a [MemEntry],
    /// ACPI RSDP address for `acpi_rsdp_addr`, or `None` without ACPI.
    pub acpi_rsdp: Option<u64>,
}

/// Builds the zero page (boot.rst "64-bit boot protocol": the loader fills
/// `boot_params`, the setup header fields marked "write", and e820).
pub fn build_zero_page(input: &ZeroPageInput<'_>) -> Result<boot_params, Error> {
    let mut params = boot_params::default();
    match input.header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = BOOT_FLAG_MAGIC;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.version = ELF_BOOT_PROTOCOL;
            params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
        }
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    // The heap ends just below the zero page's own setup area (unused by a
    // 64-bit entry, but "write" fields must be sane).
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = input.cmdline_len as u32;
    if let Some((addr, size)) = input.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    let map = input.memory_map;
    if map.len() > params.e820_table.len() {
        return Err(Error::TooManyE820Entries);
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    // zero-page.rst: 0x070 acpi_rsdp_addr; 0 means "scan for it".
    params.acpi_rsdp_addr = input.acpi_rsdp.unwrap_or(0);
    Ok(params)
}

/// Writes the zero page at [`ZERO_PAGE_ADDR`].
pub fn write_zero_page(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), Error> {
    let bp = BootParams::new(params, GuestAddress(ZERO_PAGE_ADDR));
    LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(Error::ZeroPage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn e820_small() {
        let map = memory_map(128 << 20);
        assert_eq!(
            map,
            vec![
                MemEntry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                MemEntry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820_RESERVED
                },
                // ACPI tables from 0xe0000, MP table from 0xf0000.
                MemEntry {
                    addr: 0xe0000,
                    size: 0x20000,
                    kind: E820_RESERVED
                },
                MemEntry {
                    addr: 0x100000,
                    size: (128 << 20) - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn e820_crosses_gap() {
        let map = memory_map(4 << 30);
        assert_eq!(map.len(), 5);
        assert_eq!(
            map[3],
            MemEntry {
                addr: 0x100000,
                size: 0xc000_0000 - 0x100000,
                kind: E820_RAM
            }
        );
        assert_eq!(
            map[4],
            MemEntry {
                addr: 1 << 32,
                size: 1 << 30,
                kind: E820_RAM
            }
        );
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (4 << 30) - 0x100000 + 0x9fc00);
    }

    #[test]
    fn zero_page_elf() {
        let p = build_zero_page(&ZeroPageInput {
            header: None,
            cmdline_len: 30,
            initrd: Some((0x7000_0000, 0x1234)),
            memory_map: &memory_map(4 << 30),
            acpi_rsdp: Some(0xe0000),
        })
        .unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ hdr.cmdline_size }, 30);
        assert_eq!({ hdr.ramdisk_image }, 0x7000_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!({ hdr.loadflags } & LOADED_HIGH, LOADED_HIGH);
        assert_eq!(p.e820_entries, 5);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        let last = p.e820_table[4];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (1 << 32, 1 << 30, 1)
        );
    }

    #[test]
    fn zero_page_bzimage_keeps_header() {
        let hdr = setup_header {
            header: HDRS_MAGIC,
            version: 0x020f,
            setup_sects: 27,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let p = build_zero_page(&ZeroPageInput {
            header: Some(hdr),
            cmdline_len: 5,
            initrd: None,
            memory_map: &memory_map(128 << 20),
            acpi_rsdp: None,
        })
        .unwrap();
        assert_eq!({ p.hdr.setup_sects }, 27);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
        assert_eq!(p.e820_entries, 4);
    }

    #[test]
    fn zero_page_written_at_0x7000() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let p = build_zero_page(&ZeroPageInput {
            header: None,
            cmdline_len: 1,
            initrd: None,
            memory_map: &memory_map(128 << 20),
            acpi_rsdp: None,
        })
        .unwrap();
        write_zero_page(&mem, &p).unwrap();
        // boot.rst: "HdrS" at offset 0x202, e820 count at 0x1e8, cmd_line_ptr at 0x228.
        let magic: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x202)).unwrap();
        assert_eq!(magic, HDRS_MAGIC);
        let n: u8 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x1e8)).unwrap();
        assert_eq!(n, 4);
        let cmd: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x228)).unwrap();
        assert_eq!(cmd, 0x20000);
        // No ACPI: acpi_rsdp_addr (0x070) stays 0.
        let rsdp: u64 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x70)).unwrap();
        assert_eq!(rsdp, 0);
    }
}
