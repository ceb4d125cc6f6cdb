//! Kernel loading: turns the kernel file (ELF vmlinux, ELF with a PVH
//! note, or bzImage) plus initrd and command line into guest memory
//! contents and an [`EntryPoint`].
//!
//! [`load`] does, in order: detect the format and load it with
//! linux-loader, choose the entry protocol, place the initrd, write the
//! command line, write the ACPI tables ([`crate::acpi`], unless
//! `--no-acpi`), write the zero page ([`params`]) or PVH start info
//! ([`pvh`]) with the RSDP address, and write the MP table ([`mptable`]).

pub mod file_map;
pub mod lease;
pub mod mptable;
pub mod params;
pub mod pvh;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{
    load_cmdline, BzImage, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability,
};
use vm_memory::{Bytes, GuestAddress};

use crate::config::{BootMode, VmConfig};
use crate::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START};
use crate::memory::{low_ram_end, GuestMemoryMmap};
use crate::plan::MachinePlan;
use file_map::MappingReader;
use lease::Leases;

/// bzImage: boot protocol 2.12 is the first with `xloadflags`.
const MIN_BZIMAGE_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at load + 0x200.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry from the protected-mode kernel start.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Default `initrd_addr_max` when no setup header says otherwise
/// (boot.rst: every kernel since protocol 2.03 accepts up to this).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
/// Page size for initrd alignment.
const PAGE_SIZE: u64 = 4096;

/// Kernel loading errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {0}")]
    KernelRead(PathBuf, #[source] std::io::Error),
    /// The file has neither an ELF magic nor a bzImage header.
    #[error("{0} is not a kernel: neither an ELF vmlinux nor a bzImage")]
    NotAKernel(PathBuf),
    /// linux-loader rejected the ELF image.
    #[error("cannot load ELF kernel {0}")]
    Elf(PathBuf, #[source] linux_loader::loader::Error),
    /// linux-loader rejected the bzImage.
    #[error("cannot load bzImage kernel {0}")]
    BzImage(PathBuf, #[source] linux_loader::loader::Error),
    /// The bzImage is too old or has no 64-bit entry point.
    #[error("bzImage {0} has no 64-bit entry point (boot protocol {1:#x}, xloadflags {2:#x})")]
    BzImageNo64Bit(PathBuf, u16, u16),
    /// PVH was requested but the ELF has no PVH note.
    #[error("--boot-mode pvh: kernel {0} has no XEN_ELFNOTE_PHYS32_ENTRY note")]
    NoPvhNote(PathBuf),
    /// PVH was requested for a bzImage.
    #[error("--boot-mode pvh needs an ELF kernel; {0} is a bzImage")]
    PvhBzImage(PathBuf),
    /// The kernel image does not fit in guest memory.
    #[error("kernel ends at {0:#x}, beyond low guest memory ({1:#x}): give the guest more memory")]
    KernelTooBig(u64, u64),
    /// The initrd cannot be opened or read.
    #[error("cannot read initrd {0}")]
    InitrdRead(PathBuf, #[source] std::io::Error),
    /// The initrd does not fit between the kernel and its address limit.
    #[error("initrd {0} ({1} bytes) does not fit in guest memory below {2:#x} above the kernel")]
    InitrdTooBig(PathBuf, u64, u64),
    /// Copying the initrd into guest memory failed.
    #[error("cannot copy initrd into guest memory")]
    InitrdCopy(#[source] vm_memory::GuestMemoryError),
    /// The command line does not fit.
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The command line exceeds the kernel's limit.
    #[error("kernel command line is {0} bytes; this kernel accepts at most {1}")]
    CmdlineTooLong(usize, usize),
    /// Writing the command line failed.
    #[error("cannot write kernel command line")]
    CmdlineWrite(#[source] linux_loader::loader::Error),
    /// Too many memory map entries for the zero page.
    #[error("too many e820 entries for the zero page")]
    TooManyE820Entries,
    /// Writing the zero page failed.
    #[error("cannot write the zero page")]
    ZeroPage(#[source] linux_loader::configurator::Error),
    /// Writing the PVH start info failed.
    #[error("cannot write the PVH start info")]
    Pvh(#[source] linux_loader::configurator::Error),
    /// The MP table does not fit in the BIOS area.
    #[error("MP table for {0} vCPUs does not fit in the BIOS area")]
    MpTableTooLarge(u8),
    /// Writing the MP table failed.
    #[error("cannot write the MP table")]
    MpTableWrite,
    /// Building or writing the ACPI tables failed.
    #[error(transparent)]
    Acpi(#[from] crate::acpi::Error),
}

/// The entry protocol the boot vCPU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// 64-bit Linux boot protocol: long mode, `rsi` = zero page.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, `ebx` = start info.
    Pvh,
}

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    /// First instruction's guest-physical address.
    pub addr: GuestAddress,
    /// Entry protocol.
    pub protocol: Protocol,
}

/// Kernel image format, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF (vmlinux, maybe with a PVH note).
    Elf,
    /// bzImage ("HdrS" at 0x202).
    BzImage,
}

/// Detects the kernel format from its first 0x206 bytes.
pub fn detect_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        Some(KernelFormat::Elf)
    } else if head.get(0x202..0x206) == Some(b"HdrS") {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

/// Loads everything and returns the boot vCPU's entry point. With
/// `leases`, the kernel's and initrd's whole pages are mapped from their
/// files rather than copied wherever a read lease can be taken
/// ([`file_map`], [`lease`]); without, everything is copied.
pub fn load(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    plan: &MachinePlan,
    mut leases: Option<&mut Leases>,
) -> Result<EntryPoint, Error> {
    let path = &config.kernel().to_path_buf();
    let mut file = File::open(path).map_err(|e| Error::KernelRead(path.clone(), e))?;
    let mut head = Vec::with_capacity(0x206);
    (&mut file)
        .take(0x206)
        .read_to_end(&mut head)
        .map_err(|e| Error::KernelRead(path.clone(), e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::KernelRead(path.clone(), e))?;
    let format = detect_format(&head).ok_or_else(|| Error::NotAKernel(path.clone()))?;
    let himem = Some(GuestAddress(HIMEM_START));

    let map = leases.as_deref().is_some_and(|l| l.try_lease(&file));
    let mut file = MappingReader::new(file, mem, map);
    let (result, entry, header): (KernelLoaderResult, EntryPoint, Option<setup_header>) =
        match format {
            KernelFormat::Elf => {
                let r = Elf::load(mem, None, &mut file, himem)
                    .map_err(|e| Error::Elf(path.clone(), e))?;
                let entry = match (r.pvh_boot_cap, config.boot_mode()) {
                    (PvhBootCapability::PvhEntryPresent(addr), BootMode::Auto | BootMode::Pvh) => {
                        EntryPoint {
                            addr,
                            protocol: Protocol::Pvh,
                        }
                    }
                    (_, BootMode::Pvh) => return Err(Error::NoPvhNote(path.clone())),
                    _ => EntryPoint {
                        addr: r.kernel_load,
                        protocol: Protocol::Linux64,
                    },
                };
                (r, entry, None)
            }
            KernelFormat::BzImage => {
                if config.boot_mode() == BootMode::Pvh {
                    return Err(Error::PvhBzImage(path.clone()));
                }
                let r = BzImage::load(mem, None, &mut file, himem)
                    .map_err(|e| Error::BzImage(path.clone(), e))?;
                let hdr = r.setup_header.unwrap_or_default();
                let (version, xlf) = (hdr.version, hdr.xloadflags);
                if version < MIN_BZIMAGE_PROTOCOL || xlf & XLF_KERNEL_64 == 0 {
                    return Err(Error::BzImageNo64Bit(path.clone(), version, xlf));
                }
                let entry = EntryPoint {
                    addr: GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                    protocol: Protocol::Linux64,
                };
                (r, entry, Some(hdr))
            }
        };
    keep_lease(leases.as_deref_mut(), file);
    let low_end = low_ram_end(plan.memory());
    if result.kernel_end > low_end {
        return Err(Error::KernelTooBig(result.kernel_end, low_end));
    }

    let initrd = match config.initrd() {
        Some(p) => {
            let max = match (entry.protocol, header) {
                (Protocol::Pvh, _) => u64::MAX,
                (Protocol::Linux64, Some(h)) if h.initrd_addr_max != 0 => {
                    u64::from(h.initrd_addr_max)
                }
                _ => DEFAULT_INITRD_ADDR_MAX,
            };
            Some(load_initrd(
                mem,
                p,
                result.kernel_end,
                max,
                low_end,
                leases,
            )?)
        }
        None => None,
    };

    let cmdline_len = write_cmdline(mem, plan.cmdline(), header)?;
    let acpi_rsdp = if config.acpi() {
        let platform = crate::acpi::Platform {
            topology: plan.topology(),
            virtio: plan.slots(),
        };
        Some(crate::acpi::write(mem, &platform)?)
    } else {
        None
    };
    match entry.protocol {
        Protocol::Linux64 => {
            let zp = params::build_zero_page(&params::ZeroPageInput {
                header,
                cmdline_len,
                initrd,
                memory_map: plan.memory_map(),
                acpi_rsdp,
            })?;
            params::write_zero_page(mem, &zp)?;
        }
        Protocol::Pvh => pvh::write(mem, plan.memory_map(), initrd, acpi_rsdp)?,
    }
    mptable::write(mem, plan.topology())?;
    log::debug!(
        "kernel {:?} loaded, entry {:#x} ({:?}), initrd {:?}",
        format,
        entry.addr.0,
        entry.protocol,
        initrd
    );
    Ok(entry)
}

/// Where the initrd goes: the highest page-aligned address such that it
/// ends at or below `min(initrd_addr_max + 1, low_end)`, and above the kernel.
pub fn initrd_address(size: u64, kernel_end: u64, addr_max: u64, low_end: u64) -> Option<u64> {
    let limit = addr_max.saturating_add(1).min(low_end);
    let start = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (start >= kernel_end).then_some(start)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &std::path::Path,
    kernel_end: u64,
    addr_max: u64,
    low_end: u64,
    leases: Option<&mut Leases>,
) -> Result<(u64, u64), Error> {
    let file = File::open(path).map_err(|e| Error::InitrdRead(path.to_path_buf(), e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::InitrdRead(path.to_path_buf(), e))?
        .len();
    let addr = initrd_address(size, kernel_end, addr_max, low_end)
        .ok_or_else(|| Error::InitrdTooBig(path.to_path_buf(), size, addr_max.min(low_end)))?;
    let len = usize::try_from(size)
        .map_err(|_| Error::InitrdTooBig(path.to_path_buf(), size, addr_max.min(low_end)))?;
    let map = leases.as_deref().is_some_and(|l| l.try_lease(&file));
    let mut file = MappingReader::new(file, mem, map);
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(Error::InitrdCopy)?;
    keep_lease(leases, file);
    Ok((addr, size))
}

/// Hands a loaded file to `leases`: kept leased if pages were mapped from
/// it, released otherwise.
fn keep_lease(leases: Option<&mut Leases>, reader: MappingReader) {
    let ranges = reader.mapped().to_vec();
    let bytes: usize = ranges.iter().map(|r| r.len).sum();
    match leases {
        Some(l) => {
            log::debug!("{} KiB mapped from the file", bytes / 1024);
            l.keep(reader.into_file(), &ranges);
        }
        None => debug_assert!(ranges.is_empty(), "mapped without a lease"),
    }
}

fn write_cmdline(
    mem: &GuestMemoryMmap,
    text: &str,
    header: Option<setup_header>,
) -> Result<usize, Error> {
    // Protocol 2.06+ headers state the kernel's limit (without the NUL).
    let limit = match header {
        Some(h) if h.version >= 0x0206 && h.cmdline_size > 0 => {
            (h.cmdline_size as usize + 1).min(CMDLINE_MAX_SIZE)
        }
        _ => CMDLINE_MAX_SIZE,
    };
    if text.len() + 1 > limit {
        return Err(Error::CmdlineTooLong(text.len(), limit - 1));
    }
    let cmdline = Cmdline::try_from(text, limit).map_err(Error::Cmdline)?;
    // load_cmdline writes the terminating NUL too.
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline).map_err(Error::CmdlineWrite)?;
    Ok(text.len())
}

/// Test helper: writes `bytes` to `name` in one fixed directory (unique
/// names per test: the files are rewritten by each run rather than left
/// behind per process) and returns the path.
#[cfg(test)]
pub(crate) fn test_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join("ember-boot-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kernel: PathBuf) -> VmConfig {
        crate::config::VmConfigBuilder::new(kernel)
            .cmdline(Some("console=ttyS0".into()))
            .build()
            .unwrap()
    }

    fn plan(config: &VmConfig) -> MachinePlan {
        MachinePlan::new(config).unwrap()
    }

    /// Loads `config`'s kernel into `mem` with its plan, copying.
    fn load_copy(mem: &GuestMemoryMmap, config: &VmConfig) -> Result<EntryPoint, Error> {
        load(mem, config, &plan(config), None)
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&crate::memory::ram_regions(128 << 20)).unwrap()
    }

    #[test]
    fn formats() {
        assert_eq!(detect_format(b"\x7fELF\x02\x01"), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(detect_format(b"#!/bin/sh\n"), None);
        assert_eq!(detect_format(&[]), None);
    }

    #[test]
    fn not_a_kernel() {
        let p = test_file("text", b"hello, this is not a kernel\n");
        assert!(matches!(
            load_copy(&mem(), &config(p)),
            Err(Error::NotAKernel(_))
        ));
    }

    #[test]
    fn fake_bzimage_without_64bit_entry_rejected() {
        // A header claiming protocol 2.10 (no xloadflags), loaded high.
        let mut bz = vec![0u8; 0x2000];
        bz[0x1f1] = 4; // setup_sects
        bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020au16.to_le_bytes());
        bz[0x211] = 1; // loadflags: LOADED_HIGH
        bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let p = test_file("bz-old", &bz);
        let err = load_copy(&mem(), &config(p)).unwrap_err();
        assert!(
            matches!(err, Error::BzImageNo64Bit(_, 0x020a, 0)),
            "{err:?}"
        );
    }

    #[test]
    fn fake_bzimage_not_loaded_high_rejected() {
        let mut bz = vec![0u8; 0x2000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let p = test_file("bz-low", &bz);
        assert!(matches!(
            load_copy(&mem(), &config(p)),
            Err(Error::BzImage(..))
        ));
    }

    #[test]
    fn fake_bzimage_accepted() {
        let mut bz = vec![0u8; 0x2000];
        bz[0x1f1] = 4;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        bz[0x211] = 1;
        bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        bz[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
        bz[0x238..0x23c].copy_from_slice(&255u32.to_le_bytes()); // cmdline_size
        bz[0xa00] = 0x90;
        let p = test_file("bz-ok", &bz);
        let m = mem();
        let entry = load_copy(&m, &config(p)).unwrap();
        assert_eq!(entry.protocol, Protocol::Linux64);
        assert_eq!(entry.addr, GuestAddress(0x10_0200));
        // The setup sectors ((4 + 1) * 512 = 0xa00 bytes) are skipped: file
        // offset 0xa00 lands at code32_start.
        let b: u8 = m.read_obj(GuestAddress(0x10_0000)).unwrap();
        assert_eq!(b, 0x90);
        let text = m.read_obj::<[u8; 14]>(GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&text, b"console=ttyS0\0");
    }

    #[test]
    fn initrd_placement() {
        // Top of low RAM, page aligned.
        assert_eq!(
            initrd_address(0x1800, 0x20_0000, 0x7fff_ffff, 128 << 20),
            Some((128 << 20) - 0x2000)
        );
        // Limited by initrd_addr_max.
        assert_eq!(
            initrd_address(0x1000, 0x20_0000, 0x37ff_ffff, 3 << 30),
            Some(0x3800_0000 - 0x1000)
        );
        // Does not fit above the kernel.
        assert_eq!(
            initrd_address(127 << 20, 0x20_0000, 0x7fff_ffff, 128 << 20),
            None
        );
        assert_eq!(
            initrd_address(1 << 30, 0x20_0000, 0x7fff_ffff, 128 << 20),
            None
        );
    }
}
