//! The FADT ("FACP", ACPI 6.5 §5.2.9) of a hardware-reduced platform.
//!
//! `HW_REDUCED_ACPI` (§4.1): no PM1/GPE blocks, no SCI, no FACS; power-off
//! goes through the sleep control/status registers (§4.8.3.7) and reboot
//! through the reset register (§4.8.3.6), all three one-byte I/O ports of
//! [`crate::devices::acpi_pm`]. The power and sleep buttons are not fixed
//! features (`PWR_BUTTON`, `SLP_BUTTON` set: there are none). The IA-PC
//! boot architecture flags (§5.2.9.3) say which legacy devices exist: the
//! ISA ports and the i8042 do; VGA, MSI and the CMOS RTC do not. The DSDT
//! is referenced by its 64-bit address (`X_DSDT`).

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::{to_bytes, OEM_ID, OEM_REVISION};
use crate::devices::acpi_pm::RESET_VALUE;
use crate::layout::{ACPI_RESET_PORT, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT};

/// IA-PC boot architecture flag: legacy (ISA/LPC) devices present (COM1).
pub const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
/// IA-PC boot architecture flag: an 8042 keyboard controller is present.
pub const IAPC_8042: u16 = 1 << 1;
/// IA-PC boot architecture flag: VGA not present (do not probe it).
pub const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IA-PC boot architecture flag: MSI not supported (no PCI).
pub const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
/// IA-PC boot architecture flag: CMOS RTC not present (ports 0x70/0x71
/// only read all ones).
pub const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// The IA-PC boot architecture flags ember sets.
pub const IAPC_BOOT_ARCH: u16 = IAPC_LEGACY_DEVICES
    | IAPC_8042
    | IAPC_VGA_NOT_PRESENT
    | IAPC_MSI_NOT_SUPPORTED
    | IAPC_CMOS_RTC_NOT_PRESENT;
/// `HYPERVISOR_VENDOR_IDENTITY` (FADT 6.0+): "EMBERVMM".
pub const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"EMBERVMM";

/// Offset of `IAPC_BOOT_ARCH` in the FADT.
pub const IAPC_BOOT_ARCH_OFFSET: usize = 109;
/// Offset of `Flags` in the FADT.
pub const FLAGS_OFFSET: usize = 112;
/// Offset of `RESET_REG` (a 12-byte Generic Address Structure).
pub const RESET_REG_OFFSET: usize = 116;
/// Offset of `RESET_VALUE`.
pub const RESET_VALUE_OFFSET: usize = 128;
/// Offset of `X_DSDT`.
pub const X_DSDT_OFFSET: usize = 140;
/// Offset of `SLEEP_CONTROL_REG` (GAS).
pub const SLEEP_CONTROL_REG_OFFSET: usize = 244;
/// Offset of `SLEEP_STATUS_REG` (GAS).
pub const SLEEP_STATUS_REG_OFFSET: usize = 256;

/// A one-byte system I/O register.
fn io_byte(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The FADT bytes, pointing at the DSDT at `dsdt_addr`.
pub fn build(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"EMBRFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = io_byte(ACPI_RESET_PORT);
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = io_byte(ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_byte(ACPI_SLEEP_STATUS_PORT);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    to_bytes(&fadt.finalize())
}
