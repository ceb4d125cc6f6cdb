//! ember: a KVM-based micro virtual machine monitor.
//!
//! # Code map (boot order)
//!
//! | Step | Where |
//! |---|---|
//! | CLI → [`config::VmConfig`] | `main.rs`, [`config::VmConfig::new`], [`config::parse_size`] |
//! | entry point | [`run`] → [`vmm::run`] |
//! | `/dev/kvm`, capabilities, PVM detection | [`kvm::open`], [`kvm::flavour`] |
//! | guest RAM around the MMIO gap, KVM slots | [`memory::create`], [`memory::register`] |
//! | every address, IRQ and port | [`layout`] |
//! | kernel, initrd, command line | [`boot::load`] |
//! | zero page and e820 (64-bit Linux boot) | [`boot::params`] |
//! | PVH start info and memmap | [`boot::pvh`] |
//! | MP table (all vCPUs, IOAPIC, IRQs) | [`boot::mptable`] |
//! | GDT, page tables, registers, FPU | [`vcpu::gdt`], [`vcpu::paging`], [`vcpu::regs`] |
//! | CPUID, MSRs, LAPIC LINT0/1 | [`vcpu::cpuid`], [`vcpu::msrs`], [`vcpu::lapic`] |
//! | COM1, i8042, quiet ports on the buses | [`device_manager::create_legacy_devices`], [`devices`] |
//! | virtio-block disks: slots, ioeventfd, irqfd, cmdline | [`device_manager::create_disks`], [`device_manager::register_virtio_mmio`], [`devices::virtio`] |
//! | vCPU threads, run state, kick | [`vcpu::create`], [`vcpu::Vcpu::start`], [`vcpu::VcpuHandle::kick_stop`] |
//! | one pure exit handler | [`vcpu::exit::handle_exit`] |
//! | exit event, signals, stdin | [`event_loop`] |
//! | raw terminal, restored on every path | [`terminal`] |
//! | boot timeline (`--boot-timer`), boot-timer device | [`timeline`], [`devices::boot_timer`] |
//! | `ember bench`: N boots as child processes, statistics | `bench.rs` (binary) |
//!
//! # Exit status of the `ember` binary
//!
//! See [`exit_code`]: 0 guest reset/reboot/power-off/triple fault, 1 ember
//! error (bad input, host problem), 2 VM failure at run time (KVM internal
//! error, emulation failure, failed entry, unhandled exit, vCPU panic),
//! 128+N stopped by signal N (143 for SIGTERM).

pub mod bench;
pub mod boot;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod event_loop;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod terminal;
pub mod timeline;
pub mod vcpu;
pub mod vmm;

pub use config::VmConfig;
pub use event_loop::StopReason;
pub use timeline::Timeline;
pub use vmm::Error;

/// Exit status: the guest reset, rebooted, powered off or triple-faulted.
pub const EXIT_OK: u8 = 0;
/// Exit status: ember itself failed (bad input, host problem).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: the VM failed at run time.
pub const EXIT_VM_FAILURE: u8 = 2;

/// Boots the VM and runs it until it stops, marking the boot phases on
/// `timeline`; returns why it stopped.
pub fn run(config: &VmConfig, timeline: &Timeline) -> Result<StopReason, Error> {
    vmm::run(config, timeline)
}

/// The process exit status for a stop reason.
pub fn exit_code(reason: &StopReason) -> u8 {
    match reason {
        StopReason::GuestReset | StopReason::TripleFault | StopReason::GuestPowerOff => EXIT_OK,
        StopReason::Signal(sig) => 128u8.wrapping_add(*sig as u8),
        _ => EXIT_VM_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&StopReason::GuestReset), 0);
        assert_eq!(exit_code(&StopReason::TripleFault), 0);
        assert_eq!(exit_code(&StopReason::Signal(libc::SIGTERM)), 143);
        assert_eq!(exit_code(&StopReason::Signal(libc::SIGINT)), 130);
        assert_eq!(exit_code(&StopReason::VcpuPanic { vcpu: 0 }), 2);
        assert_eq!(
            exit_code(&StopReason::InternalError {
                vcpu: 0,
                suberror: 1,
                rip: 0
            }),
            2
        );
    }
}
