//! The machine plan: every fact about the machine's shape, computed once
//! from the validated [`VmConfig`] before KVM is opened.
//!
//! - the topology: APIC ID of each vCPU and the IOAPIC's ID ([`Topology`]),
//!   read by the MP table, the MADT and each vCPU's CPUID;
//! - every virtio-mmio device slot in creation order, disks first (so they
//!   keep their `/dev/vda`... names), then the virtio console: MMIO base,
//!   IRQ, kind, command-line entry ([`DeviceSlot`]), read by the command
//!   line, the DSDT and the device manager;
//! - the final kernel command line (the config's, plus one
//!   `virtio_mmio.device=` entry per slot);
//! - the guest memory map (e820 / PVH memmap, [`MemEntry`]).
//!
//! Nothing else computes these facts: tests cross-check the readers.

use crate::config::{ConsoleKind, VmConfig};
use crate::layout::{
    BIOS_END, BIOS_START, CMDLINE_MAX_SIZE, EBDA_START, HIGH_RAM_START, HIMEM_START,
    MAX_VIRTIO_DEVICES, MMIO_DEVICES_START, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE,
};

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// Planning errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line with the device entries is too long.
    #[error("the kernel command line with its virtio-mmio device entries is too long")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// More virtio devices than slots (the config checks this first).
    #[error("too many virtio devices: {0}, at most {MAX_VIRTIO_DEVICES}")]
    TooManyDevices(usize),
}

/// The vCPU and interrupt-controller topology: one package, one core per
/// vCPU, no SMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    cpus: u8,
}

impl Topology {
    /// `cpus` vCPUs (1..=254, checked by the config).
    pub fn new(cpus: u8) -> Self {
        Topology { cpus }
    }

    /// Number of vCPUs.
    pub fn cpus(&self) -> u8 {
        self.cpus
    }

    /// The (x)APIC ID of vCPU `index`: the index itself.
    pub fn apic_id(&self, index: u8) -> u8 {
        index
    }

    /// The IOAPIC's ID: the first ID after the vCPUs' APIC IDs.
    pub fn ioapic_id(&self) -> u8 {
        self.cpus
    }
}

/// What sits in a virtio-mmio slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// virtio-block for the config's disk number `disk`.
    Block {
        /// Index into [`VmConfig::disks`].
        disk: usize,
    },
    /// The virtio console (`--console virtio`).
    Console,
}

/// One virtio-mmio device: its slot, window, IRQ and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlot {
    /// Slot number, in creation order.
    pub index: usize,
    /// Base guest-physical address of the 4 KiB register window.
    pub addr: u64,
    /// IOAPIC pin / GSI.
    pub irq: u32,
    /// The device.
    pub kind: DeviceKind,
}

impl DeviceSlot {
    /// Slot `index` holding `kind`.
    pub fn new(index: usize, kind: DeviceKind) -> Self {
        DeviceSlot {
            index,
            addr: MMIO_DEVICES_START + index as u64 * VIRTIO_MMIO_SIZE,
            irq: VIRTIO_IRQ_BASE + index as u32,
            kind,
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

/// One memory map entry, shared by the e820 table and the PVH memmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEntry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`] (same values as the PVH types).
    pub kind: u32,
}

/// The guest memory map for `mem_size` bytes of RAM: base memory up to
/// the EBDA, the reserved EBDA and BIOS area (ACPI tables, MP table), RAM
/// from 1 MiB to the MMIO gap, and RAM above 4 GiB.
pub fn memory_map(mem_size: u64) -> Vec<MemEntry> {
    let low_end = crate::memory::low_ram_end(mem_size);
    let mut map = vec![
        MemEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemEntry {
            addr: EBDA_START,
            size: 0xa0000 - EBDA_START,
            kind: E820_RESERVED,
        },
        MemEntry {
            addr: BIOS_START,
            size: BIOS_END - BIOS_START,
            kind: E820_RESERVED,
        },
        MemEntry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        },
    ];
    if mem_size > low_end {
        map.push(MemEntry {
            addr: HIGH_RAM_START,
            size: mem_size - low_end,
            kind: E820_RAM,
        });
    }
    map
}

/// The machine plan of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePlan {
    topology: Topology,
    slots: Vec<DeviceSlot>,
    cmdline: String,
    memory: u64,
    memory_map: Vec<MemEntry>,
}

impl MachinePlan {
    /// The plan for `config`.
    pub fn new(config: &VmConfig) -> Result<Self, Error> {
        Self::for_devices(
            config.cpus(),
            config.disks().len(),
            config.console(),
            config.cmdline(),
            config.memory(),
        )
    }

    /// The plan for `cpus` vCPUs, `disks` disks and `console`, with the
    /// command line `cmdline` and `memory` bytes of RAM.
    pub fn for_devices(
        cpus: u8,
        disks: usize,
        console: ConsoleKind,
        cmdline: &str,
        memory: u64,
    ) -> Result<Self, Error> {
        let mut kinds: Vec<DeviceKind> =
            (0..disks).map(|disk| DeviceKind::Block { disk }).collect();
        if console == ConsoleKind::Virtio {
            kinds.push(DeviceKind::Console);
        }
        if kinds.len() > MAX_VIRTIO_DEVICES {
            return Err(Error::TooManyDevices(kinds.len()));
        }
        let slots: Vec<DeviceSlot> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| DeviceSlot::new(i, kind))
            .collect();
        let mut full = cmdline.to_string();
        for slot in &slots {
            full.push(' ');
            full.push_str(&slot.cmdline_entry());
        }
        let full = full.trim_start().to_string();
        linux_loader::cmdline::Cmdline::try_from(&full, CMDLINE_MAX_SIZE)
            .map_err(Error::Cmdline)?;
        Ok(MachinePlan {
            topology: Topology::new(cpus),
            slots,
            cmdline: full,
            memory,
            memory_map: memory_map(memory),
        })
    }

    /// The vCPU and IOAPIC topology.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Every virtio-mmio device, in slot (creation) order.
    pub fn slots(&self) -> &[DeviceSlot] {
        &self.slots
    }

    /// The kernel command line the guest gets.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Guest RAM in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// The guest memory map.
    pub fn memory_map(&self) -> &[MemEntry] {
        &self.memory_map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{IOAPIC_ADDR, IOAPIC_NUM_PINS, MMIO_GAP_END};

    #[test]
    fn slots_and_their_cmdline_entries() {
        let p = MachinePlan::for_devices(1, 2, ConsoleKind::Virtio, "quiet", 128 << 20).unwrap();
        assert_eq!(
            p.cmdline(),
            "quiet virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
             virtio_mmio.device=4K@0xd0002000:7"
        );
        let kinds: Vec<DeviceKind> = p.slots().iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                DeviceKind::Block { disk: 0 },
                DeviceKind::Block { disk: 1 },
                DeviceKind::Console
            ]
        );
        let alone = MachinePlan::for_devices(1, 0, ConsoleKind::Virtio, "", 128 << 20).unwrap();
        assert_eq!(alone.cmdline(), "virtio_mmio.device=4K@0xd0000000:5");
        let last = DeviceSlot::new(MAX_VIRTIO_DEVICES - 1, DeviceKind::Console);
        assert_eq!(last.irq, u32::from(IOAPIC_NUM_PINS) - 1);
        assert!(last.addr + VIRTIO_MMIO_SIZE <= MMIO_GAP_END);
        assert!(last.addr + VIRTIO_MMIO_SIZE <= u64::from(IOAPIC_ADDR));
        assert!(matches!(
            MachinePlan::for_devices(1, MAX_VIRTIO_DEVICES, ConsoleKind::Virtio, "", 128 << 20),
            Err(Error::TooManyDevices(_))
        ));
        let long = "x".repeat(CMDLINE_MAX_SIZE - 10);
        assert!(matches!(
            MachinePlan::for_devices(1, 1, ConsoleKind::Serial, &long, 128 << 20),
            Err(Error::Cmdline(_))
        ));
    }

    #[test]
    fn topology() {
        let t = Topology::new(4);
        assert_eq!(
            (0..4).map(|i| t.apic_id(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(t.ioapic_id(), 4);
    }
}
