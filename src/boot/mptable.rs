//! The MP table (Intel MultiProcessor Specification 1.4, chapter 4) that
//! tells the kernel about every vCPU, the IOAPIC and the ISA interrupts.
//!
//! Layout at [`MPTABLE_START`]: the 16-byte floating pointer (§4.1), then
//! the configuration table header (§4.2) and its entries (§4.3): one
//! processor entry per vCPU, the ISA bus, the IOAPIC, one I/O interrupt
//! entry per IOAPIC pin, and the LINT0 (ExtINT) / LINT1 (NMI) local
//! interrupt entries.

use vm_memory::{Bytes, GuestAddress};

use super::Error;
use crate::layout::{APIC_ADDR, BIOS_END, IOAPIC_ADDR, IOAPIC_NUM_PINS, MPTABLE_START};
use crate::memory::GuestMemoryMmap;
use crate::plan::Topology;

/// MP spec revision 1.4.
const SPEC_REV: u8 = 4;
/// Local APIC version reported for each processor (integrated APIC).
const LAPIC_VERSION: u8 = 0x14;
/// IOAPIC version (82093AA-compatible, 24 pins).
const IOAPIC_VERSION: u8 = 0x11;
/// Entry types (§4.3).
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types (§4.3.4, table 4-9).
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Processor flags: enabled, bootstrap processor.
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Processor signature: family 6, model 0x0f... (informational only).
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags: FPU, APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
/// Destination "all local APICs" for local interrupt entries.
const ALL_LAPICS: u8 = 0xff;

/// Size of the floating pointer structure.
pub const FLOATING_POINTER_SIZE: usize = 16;
/// Size of the configuration table header.
pub const HEADER_SIZE: usize = 44;
/// Size of a processor entry.
pub const PROCESSOR_ENTRY_SIZE: usize = 20;
/// Size of every other entry.
pub const SMALL_ENTRY_SIZE: usize = 8;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_sub(*b))
}

/// Builds the whole MP table (floating pointer first) as bytes placed at
/// `base`.
pub fn build(topology: Topology, base: u64) -> Vec<u8> {
    let table_addr = base + FLOATING_POINTER_SIZE as u64;
    let ioapic = topology.ioapic_id();
    let mut entries = Vec::new();
    let mut count: u16 = 0;

    for cpu in 0..topology.cpus() {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        let apic_id = topology.apic_id(cpu);
        entries.extend_from_slice(&[ENTRY_PROCESSOR, apic_id, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_NUM_PINS {
        // type, irq type, flags (conforming polarity/trigger), source bus,
        // source bus IRQ, destination IOAPIC, destination pin.
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, 0, pin, ioapic, pin]);
        count += 1;
    }
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        0,
        0,
        ALL_LAPICS,
        0,
    ]);
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        0,
        0,
        ALL_LAPICS,
        1,
    ]);
    count += 2;

    let table_len = (HEADER_SIZE + entries.len()) as u16;
    let mut table = Vec::with_capacity(usize::from(table_len));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&table_len.to_le_bytes());
    table.push(SPEC_REV);
    table.push(0); // checksum, patched below
    table.extend_from_slice(b"EMBER   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    debug_assert_eq!(table.len(), HEADER_SIZE);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_POINTER_SIZE + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.push(1); // length in 16-byte paragraphs
    out.push(SPEC_REV);
    out.push(0); // checksum, patched below
    out.extend_from_slice(&[0; 5]); // feature bytes: table present, no IMCR
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    out
}

/// Writes the MP table for `topology` at [`MPTABLE_START`].
pub fn write(mem: &GuestMemoryMmap, topology: Topology) -> Result<(), Error> {
    let bytes = build(topology, MPTABLE_START);
    if MPTABLE_START + bytes.len() as u64 > BIOS_END {
        return Err(Error::MpTableTooLarge(topology.cpus()));
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| Error::MpTableWrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn check(cpus: u8) {
        let t = build(Topology::new(cpus), MPTABLE_START);
        // Floating pointer.
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0xf0010);
        assert_eq!(t[8], 1);
        assert_eq!(t[9], 4);
        assert_eq!(sum(&t[0..16]), 0);
        // Header.
        let h = &t[16..];
        assert_eq!(&h[0..4], b"PCMP");
        let len = u16::from_le_bytes([h[4], h[5]]) as usize;
        let pins = IOAPIC_NUM_PINS as usize;
        let expect_len = 44 + 20 * cpus as usize + 8 * (2 + pins + 2);
        assert_eq!(len, expect_len);
        assert_eq!(h.len(), len);
        assert_eq!(sum(&h[..len]), 0);
        assert_eq!(
            u16::from_le_bytes([h[34], h[35]]) as usize,
            cpus as usize + 4 + pins
        );
        assert_eq!(
            u32::from_le_bytes(h[36..40].try_into().unwrap()),
            0xfee0_0000
        );
        // Processor entries: APIC IDs 0..cpus, only the first is the BSP.
        for cpu in 0..cpus as usize {
            let e = &h[44 + 20 * cpu..44 + 20 * (cpu + 1)];
            assert_eq!(e[0], 0);
            assert_eq!(e[1] as usize, cpu);
            assert_eq!(e[3], if cpu == 0 { 3 } else { 1 });
        }
        let rest = &h[44 + 20 * cpus as usize..];
        assert_eq!(&rest[0..8], b"\x01\x00ISA   ");
        assert_eq!(&rest[8..16], &[2, cpus, 0x11, 1, 0, 0, 0xc0, 0xfe]);
        for pin in 0..pins {
            let e = &rest[16 + 8 * pin..24 + 8 * pin];
            assert_eq!(e, &[3, 0, 0, 0, 0, pin as u8, cpus, pin as u8]);
        }
        let lint = &rest[16 + 8 * pins..];
        assert_eq!(
            lint,
            &[4, 3, 0, 0, 0, 0, 0xff, 0, 4, 1, 0, 0, 0, 0, 0xff, 1]
        );
    }

    #[test]
    fn one_cpu() {
        check(1);
    }

    #[test]
    fn two_cpus() {
        check(2);
    }

    #[test]
    fn sixteen_cpus() {
        check(16);
    }

    #[test]
    fn max_cpus_fit_in_bios_area() {
        check(254);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, Topology::new(254)).unwrap();
        let mut magic = [0u8; 4];
        mem.read_slice(&mut magic, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&magic, b"_MP_");
    }
}
