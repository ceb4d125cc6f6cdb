//! Entry register state: general registers, segment/control registers and
//! the FPU, for the 64-bit Linux boot protocol and for PVH.
//!
//! Specs: Linux Documentation/arch/x86/boot.rst "64-bit boot protocol"
//! (long mode, paging on, `rsi` = zero page, CS = `__BOOT_CS`); Xen
//! docs/misc/pvh.pandoc (32-bit protected mode, paging off, `ebx` = start
//! info); Intel SDM Vol. 3A §9.8 (switching to protected/long mode).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{
    boot_segment, BOOT_GDT, CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR, TSS_SELECTOR,
};
use super::Error;
use crate::boot::{EntryPoint, Protocol};
use crate::layout::{
    BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PML4_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (always 1).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: native FPU error reporting.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
pub const RFLAGS_RESERVED: u64 = 1 << 1;
/// x87 control word after FNINIT.
pub const FPU_FCW: u16 = 0x37f;
/// MXCSR reset value (all exceptions masked).
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// General registers at entry.
pub fn entry_regs(entry: &EntryPoint) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry.addr.0,
        ..Default::default()
    };
    match entry.protocol {
        Protocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_ADDR;
        }
        Protocol::Pvh => {
            regs.rbx = PVH_INFO_ADDR;
        }
    }
    regs
}

/// Segment, descriptor-table and control registers at entry, starting
/// from the vCPU's current `sregs` (which hold KVM's APIC base etc.).
pub fn entry_sregs(mut sregs: kvm_sregs, protocol: Protocol) -> kvm_sregs {
    let code = match protocol {
        Protocol::Linux64 => CODE64_SELECTOR,
        Protocol::Pvh => CODE32_SELECTOR,
    };
    sregs.cs = boot_segment(code);
    let data = boot_segment(DATA_SELECTOR);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = boot_segment(TSS_SELECTOR);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 0;
    match protocol {
        Protocol::Linux64 => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        Protocol::Pvh => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// Writes the boot GDT and the (empty) IDT into guest memory.
pub fn write_descriptor_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))
            .map_err(Error::BootTables)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_ADDR))
        .map_err(Error::BootTables)
}

/// Sets the boot vCPU's registers for `entry`.
pub fn setup_boot_vcpu(fd: &VcpuFd, entry: &EntryPoint) -> Result<(), Error> {
    let sregs = fd.get_sregs().map_err(Error::Sregs)?;
    fd.set_sregs(&entry_sregs(sregs, entry.protocol))
        .map_err(Error::Sregs)?;
    fd.set_regs(&entry_regs(entry)).map_err(Error::Regs)
}

/// Initialises the FPU (x87 control word and MXCSR).
pub fn setup_fpu(fd: &VcpuFd) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: FPU_FCW,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    fd.set_fpu(&fpu).map_err(Error::Fpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux64_state() {
        let e = EntryPoint {
            addr: GuestAddress(0x100_0000),
            protocol: Protocol::Linux64,
        };
        let r = entry_regs(&e);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0000, 0x7000, 0x8ff0, 2)
        );
        let s = entry_sregs(kvm_sregs::default(), Protocol::Linux64);
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.ds.selector, 0x18);
        assert_eq!(s.cr0, 0x8000_0031);
        assert_eq!(s.cr3, 0x9000);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, 0x500);
        assert_eq!((s.gdt.base, s.gdt.limit), (0x500, 39));
    }

    #[test]
    fn pvh_state() {
        let e = EntryPoint {
            addr: GuestAddress(0x100_0040),
            protocol: Protocol::Pvh,
        };
        let r = entry_regs(&e);
        assert_eq!((r.rip, r.rbx, r.rflags), (0x100_0040, 0x6000, 2));
        let s = entry_sregs(kvm_sregs::default(), Protocol::Pvh);
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db), (0x08, 0, 1));
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr0 & CR0_PE, 1);
        assert_eq!((s.cr4, s.efer), (0, 0));
    }
}
