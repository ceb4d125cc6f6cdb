//! Device wiring: creates the legacy devices, connects their interrupts
//! (irqfd on the in-kernel IOAPIC) and places them on the buses.
//!
//! virtio-mmio devices: [`create_virtio_devices`] creates the device of
//! each slot of the machine plan ([`crate::plan::DeviceSlot`]: window, IRQ,
//! kind; the same slots gave the command line and the DSDT their entries)
//! and [`register_virtio_mmio`] wires it (ioeventfd per queue, irqfd, bus
//! insert). A new kind of device: a [`crate::plan::DeviceKind`] variant
//! and an arm here.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::config::Disk;
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::boot_timer::BootTimer;
use crate::devices::bus::{self, Bus, Quiet};
use crate::devices::exit_status::ExitStatus;
use crate::devices::i8042::I8042;
use crate::devices::output::ConsoleOut;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::block::{self, Block};
use crate::devices::virtio::console::{self, Console};
use crate::devices::virtio::mmio::{self, MmioTransport};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::exit::{Booted, ExitEvent};
use crate::layout::VIRTIO_MMIO_SIZE;
use crate::layout::{ACPI_PM_PORT, ACPI_PM_SIZE, EXIT_STATUS_PORT, EXIT_STATUS_SIZE};
use crate::layout::{BOOT_TIMER_MMIO_ADDR, BOOT_TIMER_MMIO_SIZE, BOOT_TIMER_PORT};
use crate::layout::{COM1_IRQ, COM1_PORT, COM1_SIZE, I8042_PORT, I8042_SIZE, QUIET_PORTS};
use crate::memory::GuestMemoryMmap;
use crate::plan::{DeviceKind, DeviceSlot, MachinePlan};
use crate::timeline::Timeline;
use crate::vcpu::exit::Buses;
use kvm_ioctls::IoEventAddress;

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
    /// KVM_IOEVENTFD failed.
    #[error("cannot register an ioeventfd at {0:#x}")]
    Ioeventfd(u64, #[source] kvm_ioctls::Error),
    /// A virtio-block device cannot be created.
    #[error(transparent)]
    Block(#[from] block::Error),
    /// The virtio console cannot be created.
    #[error(transparent)]
    Console(#[from] console::Error),
    /// The plan names a disk the config does not have (a bug).
    #[error("the machine plan names disk {0}, which the configuration does not have")]
    NoSuchDisk(usize),
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
    /// Set when the guest writes the exit-status device's "booted" port.
    pub booted: Booted,
}

fn eventfd() -> Result<EventFd, Error> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd)
}

/// Creates COM1 (irqfd on [`COM1_IRQ`], output to stdout and `console`),
/// the i8042 (reset → `exit`), the ACPI sleep/reset registers (S5
/// power-off and reset → `exit`; present with `--no-acpi` too, where no
/// table announces them), the exit-status port (→ `exit`), the boot timer
/// (port and MMIO, marking `timeline`) and the quiet probe ports.
pub fn create_legacy_devices(
    vm: &VmFd,
    exit: &ExitEvent,
    timeline: &Timeline,
    out: &ConsoleOut,
) -> Result<Devices, Error> {
    let irq = eventfd()?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(|e| Error::Irqfd(COM1_IRQ, e))?;
    let rx_ready = eventfd()?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq,
        rx_ready.try_clone().map_err(Error::EventFd)?,
        Box::new(out.clone()),
    )));

    let booted = Booted::default();
    let mut pio = Bus::new("pio");
    pio.insert(u64::from(COM1_PORT), u64::from(COM1_SIZE), serial.clone())
        .map_err(Error::Bus)?;
    pio.insert(
        u64::from(I8042_PORT),
        u64::from(I8042_SIZE),
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
    )
    .map_err(Error::Bus)?;
    pio.insert(
        u64::from(ACPI_PM_PORT),
        u64::from(ACPI_PM_SIZE),
        Arc::new(Mutex::new(AcpiPm::new(exit.clone()))),
    )
    .map_err(Error::Bus)?;
    pio.insert(
        u64::from(EXIT_STATUS_PORT),
        u64::from(EXIT_STATUS_SIZE),
        Arc::new(Mutex::new(ExitStatus::new(exit.clone(), booted.clone()))),
    )
    .map_err(Error::Bus)?;
    let quiet = Arc::new(Mutex::new(Quiet));
    for &(base, len) in QUIET_PORTS {
        pio.insert(u64::from(base), u64::from(len), quiet.clone())
            .map_err(Error::Bus)?;
    }
    let boot_timer = Arc::new(Mutex::new(BootTimer::new(timeline.clone())));
    pio.insert(u64::from(BOOT_TIMER_PORT), 1, boot_timer.clone())
        .map_err(Error::Bus)?;
    let mut mmio = Bus::new("mmio");
    mmio.insert(BOOT_TIMER_MMIO_ADDR, BOOT_TIMER_MMIO_SIZE, boot_timer)
        .map_err(Error::Bus)?;
    Ok(Devices {
        buses: Buses { pio, mmio },
        serial,
        serial_rx_ready: rx_ready,
        booted,
    })
}

/// Wires a virtio device into the VM at `slot`: an ioeventfd on
/// `QueueNotify` for each queue (datamatch = queue index), the irqfd of
/// `interrupt` on the slot's GSI, and the transport on the MMIO bus.
pub fn register_virtio_mmio(
    vm: &VmFd,
    mmio: &mut Bus,
    slot: &DeviceSlot,
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<Interrupt>,
) -> Result<(), Error> {
    let notify = slot.addr + mmio::reg::QUEUE_NOTIFY;
    {
        let dev = device.lock().unwrap_or_else(|p| p.into_inner());
        for (i, evt) in dev.queue_events().iter().enumerate() {
            vm.register_ioevent(evt, &IoEventAddress::Mmio(notify), i as u32)
                .map_err(|e| Error::Ioeventfd(notify, e))?;
        }
    }
    vm.register_irqfd(interrupt.irq_fd(), slot.irq)
        .map_err(|e| Error::Irqfd(slot.irq, e))?;
    let transport = MmioTransport::new(device, interrupt);
    mmio.insert(slot.addr, VIRTIO_MMIO_SIZE, Arc::new(Mutex::new(transport)))
        .map_err(Error::Bus)?;
    log::debug!("virtio-mmio device at {:#x}, IRQ {}", slot.addr, slot.irq);
    Ok(())
}

/// A created virtio device, for its queue thread.
#[derive(Debug)]
pub struct VirtioEntry {
    /// The queue thread's name (`ember-vda`, `ember-hvc0`).
    pub name: String,
    /// The slot it was wired at (window on the bus, irqfd GSI).
    pub slot: DeviceSlot,
    /// The device.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
}

impl std::fmt::Debug for dyn VirtioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "virtio device {}", self.device_type())
    }
}

/// The virtio devices of a VM, one per slot of its machine plan.
#[derive(Debug, Default)]
pub struct VirtioDevices {
    /// Every device, in slot order.
    pub devices: Vec<VirtioEntry>,
    /// The virtio console, if any (for stdin and the final flush).
    pub console: Option<Arc<Mutex<Console>>>,
}

/// Creates the device of every slot of `plan`, in slot order: a
/// virtio-block device for each disk of `disks` (opened by the config)
/// and the virtio console writing to `out`.
pub fn create_virtio_devices(
    vm: &VmFd,
    mem: &Arc<GuestMemoryMmap>,
    mmio: &mut Bus,
    plan: &MachinePlan,
    disks: &[Disk],
    out: &ConsoleOut,
) -> Result<VirtioDevices, Error> {
    let mut created = VirtioDevices::default();
    for slot in plan.slots() {
        let interrupt = Arc::new(Interrupt::new(eventfd()?));
        let (name, device): (String, Arc<Mutex<dyn VirtioDevice>>) = match slot.kind {
            DeviceKind::Block { disk } => {
                let d = disks.get(disk).ok_or(Error::NoSuchDisk(disk))?;
                let id = d
                    .config
                    .id
                    .clone()
                    .unwrap_or_else(|| block::default_id(&d.file));
                let dev = Block::new(
                    d.file.clone(),
                    d.size,
                    d.config.readonly,
                    &id,
                    mem.clone(),
                    interrupt.clone(),
                )?;
                let name = format!("ember-vd{}", (b'a' + disk as u8) as char);
                (name, Arc::new(Mutex::new(dev)))
            }
            DeviceKind::Console => {
                let dev = Console::new(mem.clone(), interrupt.clone(), Box::new(out.clone()))?;
                let dev = Arc::new(Mutex::new(dev));
                created.console = Some(dev.clone());
                ("ember-hvc0".to_string(), dev)
            }
        };
        register_virtio_mmio(vm, mmio, slot, device.clone(), interrupt)?;
        created.devices.push(VirtioEntry {
            name,
            slot: *slot,
            device,
        });
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use crate::boot::mptable;
    use crate::layout::{MAX_VIRTIO_DEVICES, MPTABLE_START};
    use crate::plan::{DeviceKind, DeviceSlot, Topology};

    #[test]
    fn mp_table_routes_every_virtio_irq() {
        // Each virtio IRQ has an I/O interrupt entry (type 3) on the ISA
        // bus with conforming (edge, active-high) flags to the same pin.
        let t = mptable::build(Topology::new(1), MPTABLE_START);
        let entries = &t[mptable::FLOATING_POINTER_SIZE
            + mptable::HEADER_SIZE
            + mptable::PROCESSOR_ENTRY_SIZE..];
        for i in 0..MAX_VIRTIO_DEVICES {
            let irq = DeviceSlot::new(i, DeviceKind::Console).irq as u8;
            let found = entries.chunks(mptable::SMALL_ENTRY_SIZE).any(|e| {
                e[0] == 3
                    && e[1] == 0
                    && e[2] == 0
                    && e[3] == 0
                    && e[4] == 0
                    && e[5] == irq
                    && e[7] == irq
            });
            assert!(found, "no MP table entry for IRQ {irq}");
        }
    }
}
