//! Device wiring: creates the legacy devices, connects their interrupts
//! (irqfd on the in-kernel IOAPIC) and places them on the buses.
//!
//! virtio-mmio devices: [`VirtioSlot`] gives device `i` its 4 KiB window
//! at [`crate::layout::MMIO_DEVICES_START`]` + i * 4 KiB`, its IRQ
//! [`crate::layout::VIRTIO_IRQ_BASE`]` + i` and its command-line entry;
//! [`register_virtio_mmio`] does the wiring (ioeventfd per queue, irqfd,
//! bus insert); [`create_disks`] builds the virtio-block devices in slots
//! `0..disks`, and [`create_virtio_console`] the virtio console
//! (`--console virtio`) in the slot after them, so the disks keep their
//! `/dev/vda`... names. The command-line entries are added by
//! [`virtio_cmdline`] before the kernel is loaded (which happens before KVM
//! is opened), from the same slots.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::config::{DiskConfig, VmConfig};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::boot_timer::BootTimer;
use crate::devices::bus::{self, Bus, Quiet};
use crate::devices::exit_status::{Booted, ExitStatus};
use crate::devices::i8042::I8042;
use crate::devices::serial::{ConsoleOut, ConsoleTail, SerialDevice};
use crate::devices::virtio::block::{self, Block, BlockHandler};
use crate::devices::virtio::console::{self, Console, ConsoleHandler};
use crate::devices::virtio::mmio::{self, MmioTransport};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::event_loop::ExitEvent;
use crate::layout::{ACPI_PM_PORT, ACPI_PM_SIZE, EXIT_STATUS_PORT, EXIT_STATUS_SIZE};
use crate::layout::{BOOT_TIMER_MMIO_ADDR, BOOT_TIMER_MMIO_SIZE, BOOT_TIMER_PORT};
use crate::layout::{COM1_IRQ, COM1_PORT, COM1_SIZE, I8042_PORT, I8042_SIZE, QUIET_PORTS};
use crate::layout::{MMIO_DEVICES_START, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE};
use crate::memory::GuestMemoryMmap;
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
    console: ConsoleTail,
) -> Result<Devices, Error> {
    let irq = eventfd()?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(|e| Error::Irqfd(COM1_IRQ, e))?;
    let rx_ready = eventfd()?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq,
        rx_ready.try_clone().map_err(Error::EventFd)?,
        Box::new(ConsoleOut {
            timeline: timeline.clone(),
            tail: console,
        }),
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

/// The MMIO window, IRQ and command-line entry of virtio-mmio device `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioSlot {
    /// Base guest-physical address of the 4 KiB register window.
    pub addr: u64,
    /// IOAPIC pin / GSI.
    pub irq: u32,
}

impl VirtioSlot {
    /// Slot `index` (0-based, in device creation order).
    pub fn new(index: usize) -> Self {
        VirtioSlot {
            addr: MMIO_DEVICES_START + index as u64 * VIRTIO_MMIO_SIZE,
            irq: VIRTIO_IRQ_BASE + index as u32,
        }
    }

    /// `virtio_mmio.device=4K@0xADDR:IRQ` (Linux
    /// `drivers/virtio/virtio_mmio.c`, `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`).
    pub fn cmdline_entry(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            VIRTIO_MMIO_SIZE >> 10,
            self.addr,
            self.irq
        )
    }
}

/// The virtio-mmio slots of `config`'s devices: one per disk, slots
/// `0..`, in the order [`create_disks`] fills them, then the virtio
/// console's ([`create_virtio_console`]) if any. The command line
/// ([`virtio_cmdline`]) and the ACPI DSDT ([`crate::acpi`]) both announce
/// these.
pub fn virtio_slots(config: &VmConfig) -> Vec<VirtioSlot> {
    (0..config.disks.len() + config.console.virtio_slots())
        .map(VirtioSlot::new)
        .collect()
}

/// `config` with the command-line entries of its virtio-mmio devices
/// ([`virtio_slots`]) appended. They stay when the ACPI DSDT announces the
/// same devices: see `docs/ACPI.md` for why that is safe.
pub fn virtio_cmdline(config: &VmConfig) -> VmConfig {
    let mut cmdline = config.cmdline.clone();
    for slot in virtio_slots(config) {
        cmdline.push(' ');
        cmdline.push_str(&slot.cmdline_entry());
    }
    VmConfig {
        cmdline: cmdline.trim_start().to_string(),
        ..config.clone()
    }
}

/// Wires a virtio device into the VM at `slot`: an ioeventfd on
/// `QueueNotify` for each queue (datamatch = queue index), the irqfd of
/// `interrupt` on the slot's GSI, and the transport on the MMIO bus.
pub fn register_virtio_mmio(
    vm: &VmFd,
    mmio: &mut Bus,
    slot: VirtioSlot,
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

/// Creates one virtio-block device per disk in slots `0..` (the order
/// [`virtio_cmdline`] announced) and returns their event-loop handlers.
pub fn create_disks(
    vm: &VmFd,
    mem: &Arc<GuestMemoryMmap>,
    mmio: &mut Bus,
    disks: &[DiskConfig],
) -> Result<Vec<BlockHandler>, Error> {
    let mut handlers = Vec::with_capacity(disks.len());
    for (i, disk) in disks.iter().enumerate() {
        let (file, size) = block::open_disk(&disk.path, disk.readonly)?;
        let id = disk.id.clone().unwrap_or_else(|| block::default_id(&file));
        let interrupt = Arc::new(Interrupt::new(eventfd()?));
        let dev = Arc::new(Mutex::new(Block::new(
            file,
            size,
            disk.readonly,
            &id,
            mem.clone(),
            interrupt.clone(),
        )?));
        register_virtio_mmio(vm, mmio, VirtioSlot::new(i), dev.clone(), interrupt)?;
        handlers.push(BlockHandler::new(dev));
    }
    Ok(handlers)
}

/// The virtio console (`--console virtio`): a [`Console`] writing to
/// `out`, in slot `slot` (the one after the disks, as [`virtio_cmdline`]
/// announced). Returns the device, for the stdin forwarder and the final
/// output flush, and its event-loop handler.
pub fn create_virtio_console(
    vm: &VmFd,
    mem: &Arc<GuestMemoryMmap>,
    mmio: &mut Bus,
    slot: usize,
    out: ConsoleOut,
) -> Result<(Arc<Mutex<Console>>, ConsoleHandler), Error> {
    let interrupt = Arc::new(Interrupt::new(eventfd()?));
    let dev = Arc::new(Mutex::new(Console::new(
        mem.clone(),
        interrupt.clone(),
        Box::new(out),
    )?));
    register_virtio_mmio(vm, mmio, VirtioSlot::new(slot), dev.clone(), interrupt)?;
    Ok((dev.clone(), ConsoleHandler::new(dev)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::mptable;
    use crate::layout::{IOAPIC_NUM_PINS, MAX_VIRTIO_DEVICES, MMIO_GAP_END, MPTABLE_START};

    #[test]
    fn virtio_slots() {
        assert_eq!(
            VirtioSlot::new(0).cmdline_entry(),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(
            VirtioSlot::new(2).cmdline_entry(),
            "virtio_mmio.device=4K@0xd0002000:7"
        );
        let last = VirtioSlot::new(MAX_VIRTIO_DEVICES - 1);
        assert_eq!(last.irq, u32::from(IOAPIC_NUM_PINS) - 1);
        assert!(last.addr + VIRTIO_MMIO_SIZE <= MMIO_GAP_END);
        assert!(last.addr + VIRTIO_MMIO_SIZE <= u64::from(crate::layout::IOAPIC_ADDR));
    }

    #[test]
    fn the_virtio_console_follows_the_disks() {
        let kernel = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let base = VmConfig::new(
            kernel,
            None,
            Some("quiet".into()),
            crate::config::DEFAULT_MEMORY,
            1,
            crate::config::BootMode::Auto,
        )
        .unwrap();
        let disk = DiskConfig {
            path: "/a.img".into(),
            readonly: true,
            id: None,
        };
        let two = VmConfig {
            disks: vec![disk.clone(), disk],
            ..base.clone()
        };
        assert_eq!(
            virtio_cmdline(&two).cmdline,
            "quiet virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        assert_eq!(two.max_disks(), MAX_VIRTIO_DEVICES);
        let with_console = two.with_console(crate::config::ConsoleKind::Virtio);
        assert_eq!(
            virtio_cmdline(&with_console).cmdline,
            "quiet virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
             virtio_mmio.device=4K@0xd0002000:7"
        );
        assert_eq!(with_console.max_disks(), MAX_VIRTIO_DEVICES - 1);
        let alone = base.with_console("virtio".parse().unwrap());
        assert_eq!(
            virtio_cmdline(&alone).cmdline,
            "quiet virtio_mmio.device=4K@0xd0000000:5"
        );
    }

    #[test]
    fn mp_table_routes_every_virtio_irq() {
        // Each virtio IRQ has an I/O interrupt entry (type 3) on the ISA
        // bus with conforming (edge, active-high) flags to the same pin.
        let t = mptable::build(1, MPTABLE_START);
        let entries = &t[mptable::FLOATING_POINTER_SIZE
            + mptable::HEADER_SIZE
            + mptable::PROCESSOR_ENTRY_SIZE..];
        for i in 0..MAX_VIRTIO_DEVICES {
            let irq = VirtioSlot::new(i).irq as u8;
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
