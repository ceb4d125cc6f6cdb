//! Emulated devices: the [`bus::Bus`] they sit on, the COM1 16550 UART
//! ([`serial`]), the i8042 reset line ([`i8042`]), the ACPI sleep and
//! reset registers ([`acpi_pm`]), the exit-status port ([`exit_status`]),
//! the boot timer ([`boot_timer`]) and the virtio-mmio devices, block and
//! console ([`virtio`]).

pub mod acpi_pm;
pub mod boot_timer;
pub mod bus;
pub mod exit_status;
pub mod i8042;
pub mod serial;
pub mod virtio;

use vmm_sys_util::eventfd::EventFd;

/// A vm-superio [`Trigger`](vm_superio::Trigger) that writes an eventfd
/// (registered with KVM as an irqfd for interrupts).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
