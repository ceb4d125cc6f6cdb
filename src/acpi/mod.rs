//! ACPI tables for a hardware-reduced x86 platform (ACPI 6.5 chapter 5),
//! built with the rust-vmm `acpi_tables` crate and placed in the BIOS area
//! below the MP table.
//!
//! [`build`] lays the tables out from [`ACPI_TABLES_START`]: the DSDT
//! ([`dsdt`]: virtio-mmio devices, COM1, i8042, `_S5_`), the FADT
//! ([`fadt`]: hardware-reduced flags, sleep and reset registers, DSDT
//! pointer), the MADT ([`madt`]: one local APIC per vCPU, the IOAPIC),
//! then the XSDT (FADT, MADT); the RSDP (revision 2, XSDT pointer) sits at
//! [`ACPI_RSDP_ADDR`], where the BIOS-area scan finds it. [`write()`] copies
//! them into guest memory; `boot::load` also passes the RSDP address in the
//! zero page (`acpi_rsdp_addr`) or the PVH start info (`rsdp_paddr`).
//! `--no-acpi` skips all of this; the MP table is written either way.

pub mod dsdt;
pub mod fadt;
pub mod madt;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{ACPI_RSDP_ADDR, ACPI_TABLES_END, ACPI_TABLES_START};
use crate::memory::GuestMemoryMmap;
use crate::plan::{DeviceSlot, Topology};

/// OEM ID in every table header and in the RSDP.
pub const OEM_ID: [u8; 6] = *b"EMBER ";
/// OEM revision of every table.
pub const OEM_REVISION: u32 = 1;
/// Alignment of each table after the RSDP.
const TABLE_ALIGN: u64 = 16;

/// ACPI table errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tables do not fit between the RSDP and the MP table.
    #[error("ACPI tables for {cpus} vCPUs and {devices} virtio devices end at {end:#x}, past {limit:#x}")]
    TooLarge {
        /// vCPU count.
        cpus: u8,
        /// virtio-mmio device count.
        devices: usize,
        /// Where the last table would end.
        end: u64,
        /// [`ACPI_TABLES_END`].
        limit: u64,
    },
    /// A virtio-mmio window cannot be described by `Memory32Fixed`.
    #[error("virtio-mmio window at {0:#x} is not below 4 GiB")]
    WindowAbove4G(u64),
    /// Copying a table into guest memory failed.
    #[error("cannot write the ACPI {0} table into guest memory")]
    Write(&'static str, #[source] vm_memory::GuestMemoryError),
}

/// What the tables describe.
#[derive(Debug, Clone, Copy)]
pub struct Platform<'a> {
    /// vCPUs and the IOAPIC (their APIC IDs).
    pub topology: Topology,
    /// The virtio-mmio devices, in slot order.
    pub virtio: &'a [DeviceSlot],
}

/// One table: its guest-physical address and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Signature ("RSD PTR " for the RSDP, else the 4-byte table signature).
    pub name: &'static str,
    /// Guest-physical address.
    pub addr: u64,
    /// Contents, checksums included.
    pub bytes: Vec<u8>,
}

/// The complete set of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Root System Description Pointer (revision 2) at [`ACPI_RSDP_ADDR`].
    pub rsdp: Table,
    /// Extended System Description Table: FADT and MADT addresses.
    pub xsdt: Table,
    /// Fixed ACPI Description Table.
    pub fadt: Table,
    /// Multiple APIC Description Table.
    pub madt: Table,
    /// Differentiated System Description Table (AML).
    pub dsdt: Table,
}

impl Tables {
    /// Every table, the RSDP first.
    pub fn all(&self) -> [&Table; 5] {
        [&self.rsdp, &self.xsdt, &self.fadt, &self.madt, &self.dsdt]
    }
}

/// The bytes of an `acpi_tables` object.
pub(crate) fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// Hands out table addresses from [`ACPI_TABLES_START`].
struct Placer {
    next: u64,
}

impl Placer {
    fn place(&mut self, name: &'static str, bytes: Vec<u8>) -> Table {
        let addr = self.next;
        self.next = (addr + bytes.len() as u64).next_multiple_of(TABLE_ALIGN);
        Table { name, addr, bytes }
    }
}

/// Builds every table for `platform`, with its final address.
pub fn build(platform: &Platform) -> Result<Tables, Error> {
    let mut placer = Placer {
        next: ACPI_TABLES_START,
    };
    let dsdt = placer.place("DSDT", dsdt::build(platform.virtio)?);
    let fadt = placer.place("FACP", fadt::build(dsdt.addr));
    let madt = placer.place("APIC", madt::build(platform.topology));
    let mut xsdt = XSDT::new(OEM_ID, *b"EMBRXSDT", OEM_REVISION);
    xsdt.add_entry(fadt.addr);
    xsdt.add_entry(madt.addr);
    let xsdt = placer.place("XSDT", to_bytes(&xsdt));
    let end = xsdt.addr + xsdt.bytes.len() as u64;
    if end > ACPI_TABLES_END {
        return Err(Error::TooLarge {
            cpus: platform.topology.cpus(),
            devices: platform.virtio.len(),
            end,
            limit: ACPI_TABLES_END,
        });
    }
    let rsdp = Table {
        name: "RSD PTR ",
        addr: ACPI_RSDP_ADDR,
        bytes: to_bytes(&Rsdp::new(OEM_ID, xsdt.addr)),
    };
    Ok(Tables {
        rsdp,
        xsdt,
        fadt,
        madt,
        dsdt,
    })
}

/// Builds the tables and writes them into guest memory; returns the RSDP
/// address for the boot protocol.
pub fn write(mem: &GuestMemoryMmap, platform: &Platform) -> Result<u64, Error> {
    let tables = build(platform)?;
    for table in tables.all() {
        mem.write_slice(&table.bytes, GuestAddress(table.addr))
            .map_err(|e| Error::Write(table.name, e))?;
    }
    log::debug!(
        "ACPI tables for {} vCPUs and {} virtio devices at {:#x}..{:#x}",
        platform.topology.cpus(),
        platform.virtio.len(),
        ACPI_RSDP_ADDR,
        tables.xsdt.addr + tables.xsdt.bytes.len() as u64
    );
    Ok(tables.rsdp.addr)
}

#[cfg(test)]
mod tests;
