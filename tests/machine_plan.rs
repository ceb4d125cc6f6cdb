//! The machine plan's readers agree with each other.
//!
//! - Over 1..=254 vCPUs (plain memory, no KVM): the MP table, the MADT and
//!   each vCPU's CPUID (leaf 1, leaves 0xB/0x1F, AMD's 0x8000001E) give
//!   every vCPU the same APIC ID, and the MP table and MADT the same
//!   IOAPIC ID.
//! - Over mixes of 0..=19 disks with and without the virtio console
//!   (tier b, this host's KVM: the VM is built, never started): the
//!   command line the guest finds in its memory, the DSDT it finds from
//!   the RSDP, and the devices actually created (the transport answering
//!   on the MMIO bus at each base, the irqfd GSI each was wired to) agree
//!   on every base and IRQ, slot by slot.

mod common;

use std::collections::BTreeSet;

use common::*;
use ember::boot::mptable;
use ember::config::{ConsoleKind, DiskConfig, VmConfigBuilder};
use ember::layout::{ACPI_RSDP_ADDR, CMDLINE_ADDR, MAX_VIRTIO_DEVICES, MPTABLE_START};
use ember::plan::{DeviceKind, MachinePlan, Topology};
use ember::vm::Options;
use ember::Vm;
use kvm_bindings::kvm_cpuid_entry2;
use vm_memory::{Bytes, GuestAddress};

fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

/// A supported-CPUID table like KVM's on Intel (max basic leaf 0x1f) and
/// on AMD (with leaf 0x8000001e).
fn supported(amd: bool) -> Vec<kvm_cpuid_entry2> {
    let mut v = vec![
        leaf(0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        leaf(1, 0, 0x906ea, 0xff08_0800, 0x7ffa_3223, 0x0f8b_fbff),
        leaf(0xb, 0, 1, 2, 0x100, 7),
        leaf(0x4000_0000, 0, 0x4000_0001, 0, 0, 0),
    ];
    if amd {
        v[0].ebx = 0x6874_7541;
        v.push(leaf(0x8000_0000, 0, 0x8000_001e, 0, 0, 0));
        v.push(leaf(0x8000_0008, 0, 0x3030, 0, 0, 0));
        v.push(leaf(0x8000_001e, 0, 0, 0, 0, 0));
    }
    v
}

/// APIC IDs of the processor entries and the IOAPIC entry's ID.
fn mp_table_ids(t: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut at = mptable::FLOATING_POINTER_SIZE + mptable::HEADER_SIZE;
    let (mut cpus, mut ioapics) = (Vec::new(), Vec::new());
    while at < t.len() {
        match t[at] {
            0 => {
                cpus.push(t[at + 1]);
                at += mptable::PROCESSOR_ENTRY_SIZE;
            }
            2 => {
                ioapics.push(t[at + 1]);
                at += mptable::SMALL_ENTRY_SIZE;
            }
            _ => at += mptable::SMALL_ENTRY_SIZE,
        }
    }
    (cpus, ioapics)
}

/// APIC IDs of the local APIC entries and the IOAPIC entries' IDs.
fn madt_ids(m: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let len = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
    let mut at = 44;
    let (mut cpus, mut ioapics) = (Vec::new(), Vec::new());
    while at < len {
        let (kind, n) = (m[at], usize::from(m[at + 1]));
        match kind {
            0 => cpus.push(m[at + 3]),
            1 => ioapics.push(m[at + 2]),
            _ => {}
        }
        at += n;
    }
    (cpus, ioapics)
}

#[test]
fn mp_table_madt_and_cpuid_agree_on_every_apic_id() {
    for cpus in 1..=254u8 {
        let topology = Topology::new(cpus);
        let (mp_cpus, mp_ioapic) = mp_table_ids(&mptable::build(topology, MPTABLE_START));
        let (madt_cpus, madt_ioapic) = madt_ids(&ember::acpi::madt::build(topology));
        assert_eq!(mp_cpus.len(), usize::from(cpus));
        assert_eq!(mp_cpus, madt_cpus, "{cpus} vCPUs: MP table vs MADT");
        assert_eq!(mp_ioapic, madt_ioapic, "{cpus} vCPUs: IOAPIC ID");
        assert_eq!(mp_ioapic, [topology.ioapic_id()]);
        let distinct: BTreeSet<u8> = mp_cpus.iter().copied().chain(mp_ioapic).collect();
        assert_eq!(distinct.len(), usize::from(cpus) + 1, "IDs collide");
        for amd in [false, true] {
            let sup = supported(amd);
            for i in 0..cpus {
                let v = ember::vcpu::cpuid::vcpu_entries(&sup, topology, i);
                let want = mp_cpus[usize::from(i)];
                let get = |f: u32, idx: u32| v.iter().find(|e| e.function == f && e.index == idx);
                assert_eq!(
                    (get(1, 0).unwrap().ebx >> 24) as u8,
                    want,
                    "leaf 1, vCPU {i}"
                );
                for f in [0xb, 0x1f] {
                    for idx in 0..3 {
                        assert_eq!(get(f, idx).unwrap().edx, u32::from(want), "leaf {f:#x}");
                    }
                }
                if amd {
                    assert_eq!(get(0x8000_001e, 0).unwrap().eax, u32::from(want));
                }
            }
        }
    }
}

/// The `virtio_mmio.device=4K@ADDR:IRQ` entries of a command line, in order.
fn cmdline_slots(cmdline: &str) -> Vec<(u64, u32)> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("virtio_mmio.device=4K@0x"))
        .map(|e| {
            let (addr, irq) = e.split_once(':').unwrap();
            (u64::from_str_radix(addr, 16).unwrap(), irq.parse().unwrap())
        })
        .collect()
}

/// The NUL-terminated command line the guest finds in its memory.
fn guest_cmdline(vm: &Vm) -> String {
    let mut buf = vec![0u8; ember::layout::CMDLINE_MAX_SIZE];
    vm.memory()
        .read_slice(&mut buf, GuestAddress(CMDLINE_ADDR))
        .unwrap();
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

fn read_u32(vm: &Vm, addr: u64) -> u32 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

/// The DSDT as the guest finds it: RSDP → XSDT → FADT → X_DSDT.
fn guest_dsdt(vm: &Vm) -> Vec<u8> {
    let xsdt = read_u64(vm, ACPI_RSDP_ADDR + 24);
    let len = u64::from(read_u32(vm, xsdt + 4));
    let fadt = (xsdt + 36..xsdt + len)
        .step_by(8)
        .map(|at| read_u64(vm, at))
        .find(|&t| read_u32(vm, t) == u32::from_le_bytes(*b"FACP"))
        .expect("no FADT in the XSDT");
    let dsdt = read_u64(vm, fadt + 140);
    let len = read_u32(vm, dsdt + 4) as usize;
    let mut bytes = vec![0u8; len];
    vm.memory()
        .read_slice(&mut bytes, GuestAddress(dsdt))
        .unwrap();
    bytes
}

/// `(base, IRQ)` of each `VRnn` device of the DSDT, in order: its
/// Memory32Fixed (0x86) window and Extended Interrupt (0x89) descriptor.
fn dsdt_slots(dsdt: &[u8]) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = dsdt[at..].windows(2).position(|w| w == b"VR") {
        let start = at + i;
        at = start + 2;
        if !dsdt[at..at + 2].iter().all(u8::is_ascii_digit) {
            continue;
        }
        let find = |tag: &[u8]| {
            start
                + dsdt[start..]
                    .windows(tag.len())
                    .position(|w| w == tag)
                    .unwrap()
        };
        let mem = find(&[0x86, 0x09, 0x00]);
        let base = u32::from_le_bytes(dsdt[mem + 4..mem + 8].try_into().unwrap());
        let irq = find(&[0x89, 0x06, 0x00]);
        let gsi = u32::from_le_bytes(dsdt[irq + 5..irq + 9].try_into().unwrap());
        out.push((u64::from(base), gsi));
    }
    out
}

#[test]
fn command_line_dsdt_and_created_devices_agree_on_every_slot() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, false);
    let disk = temp_disk("plan-agree", 4096);
    for disks in [0, 1, 2, 3, 7, MAX_VIRTIO_DEVICES - 1, MAX_VIRTIO_DEVICES] {
        for console in [ConsoleKind::Serial, ConsoleKind::Virtio] {
            if disks + usize::from(console == ConsoleKind::Virtio) > MAX_VIRTIO_DEVICES {
                continue;
            }
            let case = format!("{disks} disks, {console:?} console");
            let mut b = VmConfigBuilder::new(&elf).console(console);
            for _ in 0..disks {
                b = b.disk(DiskConfig {
                    path: disk.clone(),
                    readonly: true,
                    id: None,
                });
            }
            let config = b.build().unwrap();
            let plan = MachinePlan::new(&config).unwrap();
            let vm = Vm::build(&config, plan, Options::embedded(Box::new(std::io::sink())))
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let planned: Vec<(u64, u32)> =
                vm.plan().slots().iter().map(|s| (s.addr, s.irq)).collect();
            assert_eq!(
                planned.len(),
                disks + usize::from(console == ConsoleKind::Virtio)
            );
            assert_eq!(
                cmdline_slots(&guest_cmdline(&vm)),
                planned,
                "{case}: command line"
            );
            assert_eq!(dsdt_slots(&guest_dsdt(&vm)), planned, "{case}: DSDT");
            let created: Vec<(u64, u32)> = vm
                .virtio_devices()
                .iter()
                .map(|s| (s.addr, s.irq))
                .collect();
            assert_eq!(created, planned, "{case}: devices wired");
            for slot in vm.plan().slots() {
                let mut reg = [0u8; 4];
                vm.buses().mmio.read(slot.addr, &mut reg);
                assert_eq!(&reg, b"virt", "{case}: no transport at {:#x}", slot.addr);
                vm.buses().mmio.read(slot.addr + 8, &mut reg);
                let want = match slot.kind {
                    DeviceKind::Block { .. } => 2,
                    DeviceKind::Console => 3,
                };
                assert_eq!(u32::from_le_bytes(reg), want, "{case}: device ID");
            }
        }
    }
}
