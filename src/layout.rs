//! Every guest-physical address, IRQ and I/O port ember uses, as documented
//! constants.
//!
//! `docs/memory-layout.md` holds the same table; keep the two in sync.
//!
//! Low memory (below 1 MiB) holds the boot structures; the kernel loads at
//! or above [`HIMEM_START`]; RAM stops at [`MMIO_GAP_START`] and resumes at
//! [`HIGH_RAM_START`] (4 GiB) for guests larger than 3 GiB.

/// GDT used for both entry protocols (null, code32, code64, data, TSS).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Empty IDT loaded at entry (limit 0: any exception triple-faults).
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info` structure (PVH ABI, "start of day" state).
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (one entry: the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map (`hvm_memmap_table_entry` array), up to 0x7000.
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// Linux zero page (`struct boot_params`), passed in `rsi`.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU (grows down below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page map for the 64-bit entry.
pub const PML4_ADDR: u64 = 0x9000;
/// Page directory pointer table (maps the first 4 GiB through 4 PDs).
pub const PDPT_ADDR: u64 = 0xa000;
/// First of four page directories with 2 MiB pages (0xb000..0xf000).
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line (NUL terminated).
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line accepted, NUL included (Linux x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area: end of the first RAM range.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the BIOS area reserved in the e820 map (0xE0000-0xFFFFF):
/// the ACPI tables, then the MP table.
pub const BIOS_START: u64 = 0xe0000;
/// ACPI RSDP (ACPI 6.5 §5.2.5.1: OSPM scans 0xE0000-0xFFFFF on 16-byte
/// boundaries); the boot protocols also pass this address directly
/// (`boot_params.acpi_rsdp_addr`, PVH `rsdp_paddr`).
pub const ACPI_RSDP_ADDR: u64 = BIOS_START;
/// The other ACPI tables (XSDT, FADT, MADT, DSDT) follow the RSDP up to
/// [`ACPI_TABLES_END`].
pub const ACPI_TABLES_START: u64 = ACPI_RSDP_ADDR + 0x40;
/// End of the ACPI tables' area: the MP table starts here.
pub const ACPI_TABLES_END: u64 = MPTABLE_START;
/// MP floating pointer and configuration table (MP spec 1.4 §4: the kernel
/// scans the BIOS area 0xF0000-0xFFFFF).
pub const MPTABLE_START: u64 = 0xf0000;
/// End of the BIOS area reserved in the e820 map.
pub const BIOS_END: u64 = 0x10_0000;
/// Start of high memory: kernels load at or above this address.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap: low RAM ends here at the latest.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// RAM above the gap starts here.
pub const HIGH_RAM_START: u64 = MMIO_GAP_END;
/// First address of the MMIO gap handed to virtio-mmio devices: device
/// `i` has the window at `MMIO_DEVICES_START + i * VIRTIO_MMIO_SIZE`.
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio device window (4 KiB: registers up to 0x100,
/// then the device configuration space).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IRQ (IOAPIC pin = GSI) of the first virtio-mmio device; device `i`
/// gets `VIRTIO_IRQ_BASE + i`. IRQs 0-4 are the PIT, keyboard, cascade,
/// COM2 and COM1. The MP table routes every pin as an ISA interrupt
/// (edge-triggered, active high), which matches irqfd's edge semantics.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Most virtio-mmio devices: one per IOAPIC pin from [`VIRTIO_IRQ_BASE`]
/// to 23.
pub const MAX_VIRTIO_DEVICES: usize = (IOAPIC_NUM_PINS as u32 - VIRTIO_IRQ_BASE) as usize;
/// KVM's three-page TSS region (`KVM_SET_TSS_ADDR`), inside the gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// KVM's identity-map page (`KVM_SET_IDENTITY_MAP_ADDR`), just below the TSS.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// Boot timer MMIO window (Firecracker's current boot-timer address, the
/// first page of the MMIO gap): a guest writes [`BOOT_TIMER_MAGIC`] at
/// offset 0 when its init starts.
pub const BOOT_TIMER_MMIO_ADDR: u64 = MMIO_GAP_START;
/// Size of the boot timer MMIO window.
pub const BOOT_TIMER_MMIO_SIZE: u64 = 0x1000;
/// The value a guest writes to the boot timer to mark "init reached".
pub const BOOT_TIMER_MAGIC: u8 = 123;
/// IOAPIC MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const APIC_ADDR: u32 = 0xfee0_0000;

/// Smallest guest memory accepted (64 MiB).
pub const MIN_MEMORY: u64 = 64 << 20;
/// Largest guest memory the layout supports (1 TiB); the host may allow less.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Most vCPUs: APIC IDs 0..=253, the IOAPIC takes the next ID.
pub const MAX_VCPUS: u8 = 254;

/// IOAPIC input pins (GSIs 0..24).
pub const IOAPIC_NUM_PINS: u8 = 24;
/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 port count.
pub const COM1_SIZE: u16 = 8;
/// COM1 IRQ (ISA IRQ 4, IOAPIC pin 4).
pub const COM1_IRQ: u32 = 4;
/// i8042 keyboard controller: data port 0x60 .. command port 0x64.
pub const I8042_PORT: u16 = 0x60;
/// i8042 port count (0x60..=0x64).
pub const I8042_SIZE: u16 = 5;
/// ACPI power-management registers (hardware-reduced ACPI, FADT
/// `SLEEP_CONTROL_REG`, `SLEEP_STATUS_REG`, `RESET_REG`): three one-byte
/// I/O ports from here, see [`ACPI_SLEEP_CONTROL_PORT`].
pub const ACPI_PM_PORT: u16 = 0x600;
/// ACPI sleep control register: `SLP_TYP` (bits 2-4) plus `SLP_EN` (bit 5)
/// with the `_S5_` type powers the VM off.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = ACPI_PM_PORT;
/// ACPI sleep status register: `WAK_STS` (bit 7), write 1 to clear.
pub const ACPI_SLEEP_STATUS_PORT: u16 = ACPI_PM_PORT + 1;
/// ACPI reset register: writing the FADT `RESET_VALUE` resets the VM.
pub const ACPI_RESET_PORT: u16 = ACPI_PM_PORT + 2;
/// ACPI power-management port count.
pub const ACPI_PM_SIZE: u16 = 3;
/// Boot timer port (Firecracker's old boot-timer address), one byte: the
/// same device as [`BOOT_TIMER_MMIO_ADDR`].
pub const BOOT_TIMER_PORT: u16 = 0x3f0;
/// Exit-status port: a guest write of one byte N stops the VM and ember
/// exits with status N; a write to the next port (`0xf5`) says the guest
/// booted (ends `--boot-timeout`). See `docs/RUN.md`; `/sbin/ember-exit`
/// in the default guest writes them through `/dev/port`.
pub const EXIT_STATUS_PORT: u16 = 0xf4;
/// Exit-status ports: status (`0xf4`) and booted (`0xf5`).
pub const EXIT_STATUS_SIZE: u16 = 2;
/// POST diagnostic port, written by kernels as an I/O delay.
pub const POST_PORT: u16 = 0x80;

/// Ports that guests probe and that ember ignores without logging:
/// (base, count). Reads return all ones, writes are dropped.
pub const QUIET_PORTS: &[(u16, u16)] = &[
    (0x20, 2), // 8259 master (covered by the in-kernel PIC)
    (0x40, 4), // 8254 PIT (the in-kernel one with --pit)
    (0x70, 2), // CMOS / RTC
    (POST_PORT, 1),
    (0x87, 1),     // DMA page register
    (0xa0, 2),     // 8259 slave
    (0xed, 1),     // I/O delay port
    (0xf0, 2),     // FPU error
    (0x2e8, 8),    // COM4
    (0x2f8, 8),    // COM2
    (0x3c0, 0x20), // VGA
    (0x3e8, 8),    // COM3
    (0xcf8, 8),    // PCI configuration mechanism #1
];
