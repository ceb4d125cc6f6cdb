//! Device wiring: creates the legacy devices, connects their interrupts
//! (irqfd on the in-kernel IOAPIC) and places them on the buses. virtio-mmio
//! devices will be added here (MMIO slot and IRQ allocation, ioeventfd,
//! irqfd, command-line entry) from [`crate::layout::MMIO_DEVICES_START`].

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::{self, Bus, Quiet};
use crate::devices::i8042::I8042;
use crate::devices::serial::{ConsoleOut, SerialDevice};
use crate::event_loop::ExitEvent;
use crate::layout::{COM1_IRQ, COM1_PORT, COM1_SIZE, I8042_PORT, I8042_SIZE, QUIET_PORTS};
use crate::vcpu::exit::Buses;

/// Device wiring errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// eventfd creation failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// KVM_IRQFD failed.
    #[error("cannot register irqfd for GSI {0}")]
    Irqfd(u32, #[source] kvm_ioctls::Error),
    /// A device range conflicts.
    #[error("cannot place a device on the bus")]
    Bus(#[source] bus::Error),
}

/// The legacy devices and the buses holding them.
#[derive(Debug)]
pub struct Devices {
    /// PIO and MMIO buses, shared with the vCPUs.
    pub buses: Buses,
    /// COM1, also fed by the event loop's stdin forwarder.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// Written by the serial device when its receive FIFO empties.
    pub serial_rx_ready: EventFd,
}

fn eventfd() -> Result<EventFd, Error> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd)
}

/// Creates COM1 (irqfd on [`COM1_IRQ`]), the i8042 (reset → `exit`) and
/// the quiet probe ports.
pub fn create_legacy_devices(vm: &VmFd, exit: &ExitEvent) -> Result<Devices, Error> {
    let irq = eventfd()?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(|e| Error::Irqfd(COM1_IRQ, e))?;
    let rx_ready = eventfd()?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq,
        rx_ready.try_clone().map_err(Error::EventFd)?,
        Box::new(ConsoleOut),
    )));

    let mut pio = Bus::new("pio");
    pio.insert(u64::from(COM1_PORT), u64::from(COM1_SIZE), serial.clone())
        .map_err(Error::Bus)?;
    pio.insert(
        u64::from(I8042_PORT),
        u64::from(I8042_SIZE),
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
    )
    .map_err(Error::Bus)?;
    let quiet = Arc::new(Mutex::new(Quiet));
    for &(base, len) in QUIET_PORTS {
        pio.insert(u64::from(base), u64::from(len), quiet.clone())
            .map_err(Error::Bus)?;
    }
    Ok(Devices {
        buses: Buses {
            pio,
            mmio: Bus::new("mmio"),
        },
        serial,
        serial_rx_ready: rx_ready,
    })
}
