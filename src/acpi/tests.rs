//! Tier (a) tests of the ACPI tables on plain memory: checksums, lengths,
//! the pointer chain from the RSDP, and the MADT / DSDT entries for 1, 2,
//! 16 and 254 vCPUs and 0, 1, 8 and 19 virtio devices. `tests/acpi_iasl.rs`
//! runs the ACPICA disassembler on the same tables.

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::boot::mptable;
use crate::boot::params::{memory_map, E820_RESERVED};
use crate::devices::acpi_pm::{RESET_VALUE, S5_SLEEP_TYPE};
use crate::layout::{
    ACPI_RESET_PORT, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, APIC_ADDR, BIOS_END,
    IOAPIC_ADDR, MAX_VCPUS, MAX_VIRTIO_DEVICES, MPTABLE_START, VIRTIO_MMIO_SIZE,
};
use crate::plan::{DeviceKind, DeviceSlot, Topology};

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn slots(n: usize) -> Vec<DeviceSlot> {
    (0..n)
        .map(|i| DeviceSlot::new(i, DeviceKind::Block { disk: i }))
        .collect()
}

fn tables(cpus: u8, devices: usize) -> Tables {
    build(&Platform {
        topology: Topology::new(cpus),
        virtio: &slots(devices),
    })
    .unwrap()
}

/// Header checks shared by every table except the RSDP.
fn check_header(t: &Table) {
    let b = &t.bytes;
    assert_eq!(&b[0..4], t.name.as_bytes(), "signature");
    assert_eq!(u32_at(b, 4) as usize, b.len(), "{} length", t.name);
    assert_eq!(sum(b), 0, "{} checksum", t.name);
    assert_eq!(&b[10..16], &OEM_ID, "{} OEM ID", t.name);
    assert_eq!(u32_at(b, 24), OEM_REVISION);
}

#[test]
fn checksums_lengths_and_pointers() {
    for (cpus, devices) in [(1, 0), (2, 1), (16, 8), (MAX_VCPUS, MAX_VIRTIO_DEVICES)] {
        let t = tables(cpus, devices);
        // RSDP (ACPI 6.5 §5.2.5.3): both checksums, revision 2, length 36,
        // no RSDT, the XSDT's address.
        let r = &t.rsdp.bytes;
        assert_eq!(t.rsdp.addr, ACPI_RSDP_ADDR);
        assert_eq!(
            t.rsdp.addr % 16,
            0,
            "the BIOS-area scan looks at 16-byte boundaries"
        );
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(r.len(), 36);
        assert_eq!(sum(&r[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(r), 0, "extended checksum");
        assert_eq!(r[15], 2, "revision");
        assert_eq!(u32_at(r, 16), 0, "no RSDT");
        assert_eq!(u32_at(r, 20), 36);
        assert_eq!(u64_at(r, 24), t.xsdt.addr);

        for table in [&t.xsdt, &t.fadt, &t.madt, &t.dsdt] {
            check_header(table);
        }
        // XSDT: exactly the FADT and the MADT.
        let x = &t.xsdt.bytes;
        assert_eq!(x.len(), 36 + 2 * 8);
        assert_eq!(u64_at(x, 36), t.fadt.addr);
        assert_eq!(u64_at(x, 44), t.madt.addr);
        // FADT → DSDT (64-bit pointer only).
        assert_eq!(u64_at(&t.fadt.bytes, fadt::X_DSDT_OFFSET), t.dsdt.addr);
        assert_eq!(u32_at(&t.fadt.bytes, 40), 0);

        // All inside the ACPI area, in order, without overlap.
        let mut spans: Vec<(u64, u64)> = t
            .all()
            .iter()
            .map(|t| (t.addr, t.addr + t.bytes.len() as u64))
            .collect();
        spans.sort();
        assert!(spans[0].0 >= crate::layout::BIOS_START);
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlap: {spans:x?}");
        }
        assert!(spans[4].1 <= MPTABLE_START, "{spans:x?} reach the MP table");
    }
}

#[test]
fn guest_finds_every_table_from_the_rsdp() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let platform = Platform {
        topology: Topology::new(4),
        virtio: &slots(2),
    };
    assert_eq!(write(&mem, &platform).unwrap(), ACPI_RSDP_ADDR);
    mptable::write(&mem, Topology::new(4)).unwrap();
    // As Linux without acpi_rsdp_addr would: scan 0xe0000-0xfffff on
    // 16-byte boundaries for a signature with a valid checksum.
    let mut found = None;
    for addr in (crate::layout::BIOS_START..BIOS_END).step_by(16) {
        let mut head = [0u8; 20];
        mem.read_slice(&mut head, GuestAddress(addr)).unwrap();
        if &head[..8] == b"RSD PTR " && sum(&head) == 0 {
            found = Some(addr);
            break;
        }
    }
    assert_eq!(found, Some(ACPI_RSDP_ADDR));
    let read = |addr: u64| {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut b = vec![0u8; len as usize];
        mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        assert_eq!(sum(&b), 0);
        b
    };
    let xsdt_addr: u64 = mem.read_obj(GuestAddress(ACPI_RSDP_ADDR + 24)).unwrap();
    let xsdt = read(xsdt_addr);
    assert_eq!(&xsdt[..4], b"XSDT");
    let sigs: Vec<Vec<u8>> = (36..xsdt.len())
        .step_by(8)
        .map(|at| read(u64_at(&xsdt, at))[..4].to_vec())
        .collect();
    assert_eq!(sigs, [b"FACP".to_vec(), b"APIC".to_vec()]);
    let fadt = read(u64_at(&xsdt, 36));
    let dsdt = read(u64_at(&fadt, fadt::X_DSDT_OFFSET));
    assert_eq!(&dsdt[..4], b"DSDT");
    // The MP table is still intact after the ACPI tables.
    let mut mp = [0u8; 4];
    mem.read_slice(&mut mp, GuestAddress(MPTABLE_START))
        .unwrap();
    assert_eq!(&mp, b"_MP_");
}

#[test]
fn e820_reserves_the_tables() {
    let t = tables(MAX_VCPUS, MAX_VIRTIO_DEVICES);
    for table in t.all() {
        let (start, end) = (table.addr, table.addr + table.bytes.len() as u64);
        let covered = memory_map(128 << 20)
            .iter()
            .any(|e| e.kind == E820_RESERVED && e.addr <= start && end <= e.addr + e.size);
        assert!(covered, "{} at {start:#x} is not reserved", table.name);
    }
}

fn gas(b: &[u8], at: usize) -> (u8, u8, u8, u8, u64) {
    (b[at], b[at + 1], b[at + 2], b[at + 3], u64_at(b, at + 4))
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
    let f = tables(1, 0).fadt.bytes;
    assert_eq!(f.len(), 276, "FADT 6.x length");
    assert_eq!(f[8], 6, "major revision");
    let flags = u32_at(&f, fadt::FLAGS_OFFSET);
    for bit in [20, 10, 4, 5] {
        // HW_REDUCED_ACPI, RESET_REG_SUP, PWR_BUTTON, SLP_BUTTON.
        assert_ne!(flags & (1 << bit), 0, "flag bit {bit}: {flags:#x}");
    }
    assert_eq!(u16_at(&f, fadt::IAPC_BOOT_ARCH_OFFSET), 0b10_1111);
    // SystemIO, 8 bits, offset 0, byte access, port.
    let io = |port: u16| (1, 8, 0, 1, u64::from(port));
    assert_eq!(gas(&f, fadt::RESET_REG_OFFSET), io(ACPI_RESET_PORT));
    assert_eq!(f[fadt::RESET_VALUE_OFFSET], RESET_VALUE);
    assert_eq!(
        gas(&f, fadt::SLEEP_CONTROL_REG_OFFSET),
        io(ACPI_SLEEP_CONTROL_PORT)
    );
    assert_eq!(
        gas(&f, fadt::SLEEP_STATUS_REG_OFFSET),
        io(ACPI_SLEEP_STATUS_PORT)
    );
    // No FACS, no SCI, no PM1 or GPE blocks.
    assert_eq!(u32_at(&f, 36), 0);
    assert_eq!(u64_at(&f, 132), 0);
    assert_eq!(u16_at(&f, 46), 0);
    assert!(f[56..88].iter().all(|&b| b == 0));
    assert_eq!(&f[268..276], b"EMBERVMM");
}

/// MADT entries after the header as (type, bytes).
fn madt_entries(m: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = madt::HEADER_SIZE;
    while at < m.len() {
        let len = usize::from(m[at + 1]);
        assert!(len >= 2 && at + len <= m.len(), "bad entry at {at}");
        out.push((m[at], &m[at..at + len]));
        at += len;
    }
    out
}

#[test]
fn madt_has_one_local_apic_per_vcpu_and_the_ioapic() {
    for cpus in [1u8, 2, 16, MAX_VCPUS] {
        let m = tables(cpus, 0).madt.bytes;
        assert_eq!(u32_at(&m, 36), APIC_ADDR);
        assert_eq!(u32_at(&m, 40), 0, "flags");
        assert_eq!(m.len(), 44 + 8 * usize::from(cpus) + 12 + 6);
        let entries = madt_entries(&m);
        let lapics: Vec<&[u8]> = entries
            .iter()
            .filter(|(t, _)| *t == madt::TYPE_LOCAL_APIC)
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(lapics.len(), usize::from(cpus));
        for (i, e) in lapics.iter().enumerate() {
            // length, UID = APIC ID = index, enabled.
            assert_eq!((e[1], e[2], e[3]), (8, i as u8, i as u8));
            assert_eq!(u32_at(e, 4), 1);
        }
        let ioapics: Vec<&[u8]> = entries
            .iter()
            .filter(|(t, _)| *t == madt::TYPE_IOAPIC)
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(ioapics.len(), 1);
        let io = ioapics[0];
        assert_eq!(
            io[2],
            Topology::new(cpus).ioapic_id(),
            "the plan's IOAPIC ID"
        );
        assert_eq!(u32_at(io, 4), IOAPIC_ADDR);
        assert_eq!(u32_at(io, 8), 0, "GSI base");
        let nmis: Vec<&[u8]> = entries
            .iter()
            .filter(|(t, _)| *t == madt::TYPE_LOCAL_APIC_NMI)
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(nmis, [&[4u8, 6, 0xff, 0, 0, 1][..]]);
        assert_eq!(entries.len(), usize::from(cpus) + 2, "no overrides");
    }
}

/// Decodes an AML PkgLength at `at`: (length, bytes used).
fn pkg_length(b: &[u8], at: usize) -> (usize, usize) {
    let lead = b[at];
    let follow = usize::from(lead >> 6);
    if follow == 0 {
        return (usize::from(lead & 0x3f), 1);
    }
    let mut len = usize::from(lead & 0x0f);
    for i in 0..follow {
        len |= usize::from(b[at + 1 + i]) << (4 + 8 * i);
    }
    (len, 1 + follow)
}

/// Every `Device (NAME)` in the AML: name and its body bytes.
fn devices(aml: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    for at in 0..aml.len().saturating_sub(1) {
        if aml[at] == 0x5b && aml[at + 1] == 0x82 {
            let (len, used) = pkg_length(aml, at + 2);
            let name_at = at + 2 + used;
            let end = at + 2 + len;
            let name = String::from_utf8_lossy(&aml[name_at..name_at + 4]).into_owned();
            out.push((name, &aml[name_at + 4..end]));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Extended Interrupt descriptor: consumer, edge, active-high, exclusive.
fn edge_irq(gsi: u32) -> Vec<u8> {
    let mut d = vec![0x89, 6, 0, 0b0011, 1];
    d.extend_from_slice(&gsi.to_le_bytes());
    d
}

#[test]
fn dsdt_describes_com1_i8042_and_each_virtio_device() {
    for n in [0usize, 1, 8, MAX_VIRTIO_DEVICES] {
        let t = tables(1, n);
        let aml = &t.dsdt.bytes[36..];
        assert_eq!(t.dsdt.bytes[8], dsdt::REVISION);
        let devs = devices(aml);
        let names: Vec<&str> = devs.iter().map(|(n, _)| n.as_str()).collect();
        let mut expect = vec!["COM1".to_string(), "PS2K".to_string()];
        expect.extend((0..n).map(|i| format!("VR{i:02}")));
        assert_eq!(names, expect);

        // COM1: _HID EisaId ("PNP0501"), IO 0x3f8 x8, IRQ 4.
        let com1 = devs[0].1;
        assert!(contains(com1, b"_HID\x0c\x41\xd0\x05\x01"));
        assert!(contains(com1, &[0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]));
        assert!(contains(com1, &edge_irq(4)));
        // i8042: _HID EisaId ("PNP0303"), ports 0x60 and 0x64, IRQ 1.
        let kbd = devs[1].1;
        assert!(contains(kbd, b"_HID\x0c\x41\xd0\x03\x03"));
        assert!(contains(kbd, &[0x47, 1, 0x60, 0, 0x60, 0, 1, 1]));
        assert!(contains(kbd, &[0x47, 1, 0x64, 0, 0x64, 0, 1, 1]));
        assert!(contains(kbd, &edge_irq(1)));

        for (i, slot) in slots(n).iter().enumerate() {
            let body = devs[2 + i].1;
            assert!(contains(body, b"_HID\x0dLNRO0005\0"), "VR{i:02} _HID");
            // Memory32Fixed (ReadWrite, base, 4 KiB).
            let mut window = vec![0x86, 9, 0, 1];
            window.extend_from_slice(&(slot.addr as u32).to_le_bytes());
            window.extend_from_slice(&(VIRTIO_MMIO_SIZE as u32).to_le_bytes());
            assert!(contains(body, &window), "VR{i:02} window");
            assert!(contains(body, &edge_irq(slot.irq)), "VR{i:02} IRQ");
            assert_eq!(slot.irq, crate::layout::VIRTIO_IRQ_BASE + i as u32);
        }
        assert_eq!(
            aml.windows(8).filter(|w| w == b"LNRO0005").count(),
            n,
            "one LNRO0005 per device"
        );
        // Name (_S5_, Package (4) { 5, 5, 0, 0 }).
        let s5 = [
            0x08,
            b'_',
            b'S',
            b'5',
            b'_',
            0x12,
            8,
            4,
            0x0a,
            S5_SLEEP_TYPE,
            0x0a,
            S5_SLEEP_TYPE,
            0,
            0,
        ];
        assert!(aml.ends_with(&s5), "no _S5_ package at the end");
    }
}

#[test]
fn window_above_4g_is_an_error_not_a_panic() {
    let slot = DeviceSlot {
        addr: 1 << 32,
        ..DeviceSlot::new(0, DeviceKind::Console)
    };
    let err = build(&Platform {
        topology: Topology::new(1),
        virtio: &[slot],
    })
    .unwrap_err();
    assert!(matches!(err, Error::WindowAbove4G(0x1_0000_0000)), "{err}");
}
