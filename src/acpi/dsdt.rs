//! The DSDT (ACPI 6.5 §5.2.11.1): AML describing the devices a guest
//! cannot probe, and the S5 sleep state.
//!
//! ```text
//! Scope (\_SB) {
//!   Device (COM1) { _HID PNP0501, _UID 1, _CRS: IO 0x3f8-0x3ff, IRQ 4 }
//!   Device (PS2K) { _HID PNP0303, _CRS: IO 0x60, IO 0x64, IRQ 1 }
//!   Device (VRnn) { _HID "LNRO0005", _UID nn, _CCA 1,
//!                   _CRS: Memory32Fixed 4 KiB window, IRQ 5 + nn }  // per slot
//! }
//! Name (_S5, Package { 5, 5, 0, 0 })
//! ```
//!
//! Every interrupt is an Extended Interrupt descriptor (§6.4.3.6):
//! consumer, edge-triggered, active-high, exclusive, the same polarity and
//! trigger the MP table gives each pin (ISA conforming) and irqfd's edge
//! semantics need. `LNRO0005` is the ACPI ID Linux's `virtio_mmio` driver
//! matches. `_S5_` holds [`S5_SLEEP_TYPE`] for `SLP_TYPa` and `SLP_TYPb`;
//! the sleep control register ([`crate::devices::acpi_pm`]) powers off on
//! that value.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO,
    ONE,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{to_bytes, Error, OEM_ID, OEM_REVISION};
use crate::devices::acpi_pm::S5_SLEEP_TYPE;
use crate::layout::{COM1_IRQ, COM1_PORT, COM1_SIZE, I8042_PORT, VIRTIO_MMIO_SIZE};
use crate::plan::DeviceSlot;

/// DSDT revision 2: integers are 64 bits wide.
pub const REVISION: u8 = 2;
/// Size of an ACPI table header.
pub const HEADER_SIZE: u32 = 36;
/// `_HID` of a virtio-mmio device.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// `_HID` of a 16550-compatible UART.
pub const COM_HID: &str = "PNP0501";
/// `_HID` of an i8042 keyboard controller.
pub const I8042_HID: &str = "PNP0303";
/// ISA IRQ of the i8042's keyboard port.
pub const I8042_IRQ: u32 = 1;
/// Offset of the i8042 command/status port from its data port.
const I8042_COMMAND_OFFSET: u16 = 4;

const WINDOW_SIZE: u32 = VIRTIO_MMIO_SIZE as u32;
const _: () = assert!(VIRTIO_MMIO_SIZE <= u32::MAX as u64);

/// An edge-triggered, active-high, exclusive interrupt the device consumes.
fn edge_irq(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

/// A fixed range of `len` ports at `base`.
fn io_ports(base: u16, len: u8) -> IO {
    IO::new(base, base, 1, len)
}

fn com1() -> Vec<u8> {
    let ports = io_ports(COM1_PORT, COM1_SIZE as u8);
    let irq = edge_irq(COM1_IRQ);
    let crs = ResourceTemplate::new(vec![&ports, &irq]);
    to_bytes(&Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new(COM_HID)),
            &Name::new(Path::new("_UID"), &ONE),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    ))
}

fn i8042() -> Vec<u8> {
    let data = io_ports(I8042_PORT, 1);
    let command = io_ports(I8042_PORT + I8042_COMMAND_OFFSET, 1);
    let irq = edge_irq(I8042_IRQ);
    let crs = ResourceTemplate::new(vec![&data, &command, &irq]);
    to_bytes(&Device::new(
        Path::new("PS2K"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new(I8042_HID)),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    ))
}

fn virtio_mmio(slot: &DeviceSlot) -> Result<Vec<u8>, Error> {
    let index = slot.index;
    let base = u32::try_from(slot.addr).map_err(|_| Error::WindowAbove4G(slot.addr))?;
    let window = Memory32Fixed::new(true, base, WINDOW_SIZE);
    let irq = edge_irq(slot.irq);
    let crs = ResourceTemplate::new(vec![&window, &irq]);
    let hid: &'static str = VIRTIO_MMIO_HID;
    Ok(to_bytes(&Device::new(
        Path::new(&format!("VR{:02}", index % 100)),
        vec![
            &Name::new(Path::new("_HID"), &hid),
            &Name::new(Path::new("_UID"), &index),
            &Name::new(Path::new("_CCA"), &ONE),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )))
}

/// The AML body: `\_SB` with the devices, then `_S5_`.
pub fn aml(virtio: &[DeviceSlot]) -> Result<Vec<u8>, Error> {
    let mut devices = vec![com1(), i8042()];
    for slot in virtio {
        devices.push(virtio_mmio(slot)?);
    }
    let raw: Vec<RawAml> = devices.into_iter().map(RawAml).collect();
    let children: Vec<&dyn Aml> = raw.iter().map(|d| d as &dyn Aml).collect();
    let mut body = to_bytes(&Scope::new(Path::new("\\_SB_"), children));
    let s5 = Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]);
    body.extend(to_bytes(&Name::new(Path::new("_S5_"), &s5)));
    Ok(body)
}

/// Already encoded AML, placed as is.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// The DSDT bytes (header, checksum and AML) for these virtio devices.
pub fn build(virtio: &[DeviceSlot]) -> Result<Vec<u8>, Error> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_SIZE,
        REVISION,
        OEM_ID,
        *b"EMBRDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&aml(virtio)?);
    Ok(dsdt.as_slice().to_vec())
}
