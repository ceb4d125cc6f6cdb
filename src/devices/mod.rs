//! Emulated devices: the [`bus::Bus`] they sit on, the COM1 16550 UART
//! ([`serial`]), the i8042 reset line ([`i8042`]), the ACPI sleep and
//! reset registers ([`acpi_pm`]), the exit-status port ([`exit_status`]),
//! the boot timer ([`boot_timer`]) and the virtio-mmio devices, block and
//! console ([`virtio`]); plus the start state of KVM's in-kernel PICs
//! ([`pic`]).

pub mod acpi_pm;
pub mod boot_timer;
pub mod bus;
pub mod exit_status;
pub mod i8042;
pub mod output;
pub mod pic;
pub mod serial;
pub mod virtio;

use vmm_sys_util::eventfd::EventFd;

/// Test helper: a `Write` sink whose bytes the test reads back (the UART
/// and the virtio console write their guest output to one).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestSink(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for TestSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl TestSink {
    /// Takes what was written so far.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

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
