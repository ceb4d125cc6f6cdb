//! ember: a KVM-based micro virtual machine monitor.
//!
//! # Layers
//!
//! Modules only import from their own layer or the ones below
//! (`tests/layers.rs` checks it, and that there is no import cycle):
//!
//! | layer | modules |
//! |---|---|
//! | front ends | [`cli`] (`main.rs` calls [`cli::main`]), [`command`], [`share`], [`mod@bench`] |
//! | the VM | [`vm`] (the [`Vm`] object and its states), [`event_loop`], [`stdin`], [`terminal`], [`device_manager`] |
//! | machine parts | [`devices`], [`boot`], [`acpi`], [`vcpu`] |
//! | facts | [`plan`] (the machine plan), [`config`] (the validated config) |
//! | base | [`memory`], [`layout`], [`kvm`], [`exit`] (stop reasons, the exit event), [`signal`], [`timeline`] |
//!
//! # Code map (boot order)
//!
//! | Step | Where |
//! |---|---|
//! | CLI → builder → validated [`config::VmConfig`] | [`cli`], [`config::VmConfigBuilder::build`], [`config::parse_size`] |
//! | the machine plan: topology, device slots, command line, memory map | [`plan::MachinePlan::new`] |
//! | entry point | [`run`] → [`vm::run`]: [`Vm::build`] → [`Vm::start`] → [`Vm::wait`] |
//! | stop signals and `SIGIO` blocked before any thread | [`signal::SignalFd`] |
//! | `/dev/kvm`, capabilities, PVM detection | [`kvm::open`], [`kvm::flavour`] |
//! | guest RAM around the MMIO gap, KVM slots | [`memory::create`], [`memory::register`] |
//! | every address, IRQ and port | [`layout`] |
//! | kernel, initrd, command line | [`boot::load`] |
//! | kernel and initrd pages mapped from their files, under a read lease | [`boot::file_map`], [`boot::lease`], [`vm::lease`] |
//! | zero page and e820 (64-bit Linux boot) | [`boot::params`] |
//! | PVH start info and memmap | [`boot::pvh`] |
//! | MP table (all vCPUs, IOAPIC, IRQs) | [`boot::mptable`] |
//! | ACPI tables: RSDP, XSDT, FADT, MADT, DSDT (`--no-acpi` skips) | [`acpi::write()`], [`acpi::fadt`], [`acpi::madt`], [`acpi::dsdt`] |
//! | GDT, page tables, registers, FPU | [`vcpu::gdt`], [`vcpu::paging`], [`vcpu::regs`] |
//! | CPUID, MSRs, LAPIC LINT0/1 | [`vcpu::cpuid`], [`vcpu::msrs`], [`vcpu::lapic`] |
//! | console output: bounded buffer, stdout thread, back-pressure | [`devices::output`] |
//! | COM1, i8042, ACPI sleep/reset registers, quiet ports on the buses | [`device_manager::create_legacy_devices`], [`devices`] |
//! | in-kernel 8259 PICs masked at creation | [`devices::pic::mask_all`] |
//! | virtio devices of the plan's slots: ioeventfd, irqfd, bus | [`device_manager::create_virtio_devices`], [`device_manager::register_virtio_mmio`] |
//! | the virtio device core, queue serving with a budget | [`devices::virtio`], [`devices::virtio::serve_queue`] |
//! | a thread per virtio device | [`devices::virtio::worker`] |
//! | virtio-block, virtio-console | [`devices::virtio::block`], [`devices::virtio::console`] |
//! | vCPU threads, run state, kick, pause | [`vcpu::create`], [`vcpu::Vcpu::start`], [`vcpu::control`] |
//! | one pure exit handler | [`vcpu::exit::handle_exit`] |
//! | pause / resume, stop with a deadline | [`Vm::pause`], [`Vm::resume`], [`Vm::stop`] |
//! | exit event, stop reasons | [`exit`] |
//! | event loop, signals, deadlines | [`event_loop`] |
//! | stdin → UART FIFO or virtio-console receiveq, bounded | [`stdin`] |
//! | raw terminal, restored on every path | [`terminal`] |
//! | boot timeline (`--boot-timer`), boot-timer device | [`timeline`], [`devices::boot_timer`] |
//! | `ember bench`: N boots as child processes, statistics | [`mod@bench`] |
//! | exit-status port, `--timeout`, panic detection | [`devices::exit_status`], [`event_loop::Deadline`], [`devices::output::ConsoleTail`] |
//! | `-- CMD`: argv on the command line, default guest | [`command`] |
//! | `--share DIR[,rw]`: ext4 image in, changes back out | [`share`] |
//!
//! # Exit status of the `ember` binary
//!
//! See [`exit_code`]: the status the guest wrote to the exit-status port;
//! else 0 guest reset/reboot/power-off/triple fault, 1 ember error (bad
//! input, host problem), 2 VM failure at run time (KVM internal error,
//! emulation failure, failed entry, unhandled exit, vCPU panic), 123 guest
//! kernel panic, 124 `--timeout`, 121 `--boot-timeout`, 128+N stopped by signal N (143 for
//! SIGTERM). With a command (`-- CMD`), ember errors and VM failures are
//! 125 and a guest that stops without a status is 122 (see [`command`]).

pub mod acpi;
pub mod bench;
pub mod boot;
pub mod cli;
pub mod command;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod plan;
pub mod share;
pub mod signal;
pub mod stdin;
pub mod terminal;
pub mod timeline;
pub mod vcpu;
pub mod vm;

pub use config::VmConfig;
pub use exit::StopReason;
pub use timeline::Timeline;
pub use vm::{Error, Outcome, Vm};

/// Exit status: the guest reset, rebooted, powered off or triple-faulted.
pub const EXIT_OK: u8 = 0;
/// Exit status: ember itself failed (bad input, host problem).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: the VM failed at run time.
pub const EXIT_VM_FAILURE: u8 = 2;

/// Boots the VM and runs it until it stops, marking the boot phases on
/// `timeline`; returns why it stopped and the console's tail.
pub fn run(config: &VmConfig, timeline: &Timeline) -> Result<Outcome, Error> {
    vm::run(config, timeline)
}

/// The process exit status for a stop reason; `command` is true when a
/// command runs in the guest (`-- CMD`), where a stop without a reported
/// status is [`command::EXIT_NO_STATUS`] and a VM failure
/// [`command::EXIT_EMBER_FAILED`].
pub fn exit_code(reason: &StopReason, command: bool) -> u8 {
    match reason {
        StopReason::GuestExit(status) => *status,
        StopReason::GuestPanic => command::EXIT_GUEST_PANIC,
        StopReason::Deadline(_) => command::EXIT_DEADLINE,
        StopReason::BootDeadline(_) => command::EXIT_BOOT_DEADLINE,
        StopReason::Signal(sig) => 128u8.wrapping_add(*sig as u8),
        StopReason::GuestReset | StopReason::TripleFault | StopReason::GuestPowerOff => {
            if command {
                command::EXIT_NO_STATUS
            } else {
                EXIT_OK
            }
        }
        _ if command => command::EXIT_EMBER_FAILED,
        _ => EXIT_VM_FAILURE,
    }
}

/// The process exit status for an ember error (bad input, host problem).
pub fn error_code(command: bool) -> u8 {
    if command {
        command::EXIT_EMBER_FAILED
    } else {
        EXIT_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        for command in [false, true] {
            assert_eq!(exit_code(&StopReason::Signal(libc::SIGTERM), command), 143);
            assert_eq!(exit_code(&StopReason::Signal(libc::SIGINT), command), 130);
            assert_eq!(exit_code(&StopReason::GuestExit(7), command), 7);
            assert_eq!(exit_code(&StopReason::GuestExit(0), command), 0);
            assert_eq!(exit_code(&StopReason::GuestPanic, command), 123);
            let deadline = StopReason::Deadline(std::time::Duration::from_secs(5));
            assert_eq!(exit_code(&deadline, command), 124);
            let boot = StopReason::BootDeadline(std::time::Duration::from_secs(5));
            assert_eq!(exit_code(&boot, command), 121);
        }
        assert_eq!(exit_code(&StopReason::GuestReset, false), 0);
        assert_eq!(exit_code(&StopReason::TripleFault, false), 0);
        assert_eq!(exit_code(&StopReason::GuestReset, true), 122);
        assert_eq!(exit_code(&StopReason::GuestPowerOff, true), 122);
        assert_eq!(exit_code(&StopReason::VcpuPanic { vcpu: 0 }, false), 2);
        assert_eq!(exit_code(&StopReason::VcpuPanic { vcpu: 0 }, true), 125);
        assert_eq!(
            exit_code(
                &StopReason::InternalError {
                    vcpu: 0,
                    suberror: 1,
                    rip: 0
                },
                false
            ),
            2
        );
        assert_eq!((error_code(false), error_code(true)), (1, 125));
    }
}
