//! Per-vCPU CPUID: KVM's supported table with this vCPU's APIC ID and the
//! VM's topology (one socket, one thread per core, `count` cores), and the
//! KVM signature leaf. [`add_emulated_features`] first adds what KVM
//! emulates but `KVM_GET_SUPPORTED_CPUID` leaves out: the TSC-deadline
//! timer (leaf 1 `ECX[24]`). With it (and ARAT, leaf 6 `EAX[2]`, which KVM
//! reports) Linux neither calibrates the local APIC timer against the PIT
//! (~100 ms of PIT ticks plus a verification pass) nor needs a PIT at all.
//!
//! Spec: Intel SDM Vol. 2A, CPUID: leaf 1 (`EBX[31:24]` initial APIC ID,
//! `EBX[23:16]` logical processors, `EDX[28]` HTT, `ECX[31]` hypervisor),
//! leaf 4 (`EAX[31:26]` cores - 1, `EAX[25:14]` sharing threads - 1), leaves
//! 0xB / 0x1F (x2APIC topology); KVM: Documentation/virt/kvm/x86/cpuid.rst.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use super::Error;
use crate::plan::Topology;

/// KVM signature leaf.
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// KVM features leaf.
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;
/// Leaf 1 EDX: hyper-threading / multi-core package.
const EDX_HTT: u32 = 1 << 28;
/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: TSC-deadline mode of the local APIC timer.
pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 0 EBX of AMD CPUs ("Auth" of "AuthenticAMD").
const VENDOR_AMD_EBX: u32 = 0x6874_7541;
/// AMD: address sizes and core count (`ECX[7:0]` NC, `ECX[15:12]` ApicIdSize).
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
/// AMD: extended APIC ID, core and node IDs.
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;
/// Topology level types (leaf 0xB/0x1F ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to hold `count` core IDs (x2APIC ID shift).
pub fn id_shift(count: u8) -> u32 {
    let n = u32::from(count.max(1));
    32 - (n - 1).leading_zeros()
}

fn topology_leaf(function: u32, index: u32, apic_id: u8, count: u8) -> kvm_cpuid_entry2 {
    let (eax, ebx, ecx) = match index {
        0 => (0, 1, LEVEL_SMT << 8),
        1 => (id_shift(count), u32::from(count), 1 | (LEVEL_CORE << 8)),
        _ => (0, 0, index),
    };
    kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: u32::from(apic_id),
        ..Default::default()
    }
}

/// Adds to KVM's supported table the features KVM emulates for every
/// guest but does not report there: the TSC-deadline timer, when KVM has
/// `KVM_CAP_TSC_DEADLINE_TIMER` (`tsc_deadline`).
pub fn add_emulated_features(supported: &mut [kvm_cpuid_entry2], tsc_deadline: bool) {
    for e in supported.iter_mut().filter(|e| e.function == 1) {
        if tsc_deadline {
            e.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

/// Adapts KVM's supported CPUID entries for vCPU `index` of `topology`.
pub fn vcpu_entries(
    supported: &[kvm_cpuid_entry2],
    topology: Topology,
    index: u8,
) -> Vec<kvm_cpuid_entry2> {
    let apic_id = topology.apic_id(index);
    let count = topology.cpus();
    let max_basic = supported
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let amd = supported
        .iter()
        .any(|e| e.function == 0 && e.ebx == VENDOR_AMD_EBX);
    let mut out: Vec<kvm_cpuid_entry2> = supported
        .iter()
        .filter(|e| e.function != 0xb && e.function != 0x1f && e.function != KVM_SIGNATURE_LEAF)
        .copied()
        .collect();
    for e in &mut out {
        match e.function {
            1 => {
                e.ebx =
                    (e.ebx & 0x0000_ffff) | (u32::from(apic_id) << 24) | (u32::from(count) << 16);
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
                e.ecx |= ECX_HYPERVISOR;
            }
            4 => {
                let level = (e.eax >> 5) & 0x7;
                let cores = u32::from(count.min(64)) - 1;
                let sharing = if level >= 3 { u32::from(count) - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | (cores << 26) | ((sharing & 0xfff) << 14);
            }
            LEAF_AMD_SIZES if amd => {
                e.ecx = (e.ecx & !0xf0ff) | (id_shift(count) << 12) | (u32::from(count) - 1);
            }
            LEAF_AMD_TOPOLOGY if amd => {
                // One thread per core, one node: the core ID is the APIC ID.
                e.eax = u32::from(apic_id);
                e.ebx = u32::from(apic_id);
                e.ecx = 0;
            }
            _ => {}
        }
    }
    for function in [0xb, 0x1f] {
        if max_basic >= function {
            for index in 0..3 {
                out.push(topology_leaf(function, index, apic_id, count));
            }
        }
    }
    let max_kvm = supported
        .iter()
        .find(|e| e.function == KVM_SIGNATURE_LEAF)
        .map_or(KVM_FEATURES_LEAF, |e| e.eax.max(KVM_FEATURES_LEAF));
    out.push(kvm_cpuid_entry2 {
        function: KVM_SIGNATURE_LEAF,
        eax: max_kvm,
        ebx: KVM_SIGNATURE[0],
        ecx: KVM_SIGNATURE[1],
        edx: KVM_SIGNATURE[2],
        ..Default::default()
    });
    out
}

/// Builds the `CpuId` for vCPU `index` of `topology`.
pub fn vcpu_cpuid(supported: &CpuId, topology: Topology, index: u8) -> Result<CpuId, Error> {
    CpuId::from_entries(&vcpu_entries(supported.as_slice(), topology, index))
        .map_err(|_| Error::CpuidAlloc)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn fake_supported() -> Vec<kvm_cpuid_entry2> {
        vec![
            leaf(0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            leaf(1, 0, 0x906ea, 0xff08_0800, 0x7ffa_3223, 0x0f8b_fbff),
            leaf(4, 0, 0x121, 0, 0, 0),
            leaf(4, 3, 0x163, 0, 0, 0),
            leaf(0xb, 0, 1, 2, 0x100, 7),
            leaf(KVM_SIGNATURE_LEAF, 0, 0x4000_0001, 0, 0, 0),
        ]
    }

    fn find(v: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *v.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn apic_ids_and_topology() {
        let v = vcpu_entries(&fake_supported(), Topology::new(16), 5);
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 5);
        assert_eq!((l1.ebx >> 16) & 0xff, 16);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        let l4 = find(&v, 4, 0);
        assert_eq!(l4.eax >> 26, 15);
        assert_eq!((l4.eax >> 14) & 0xfff, 0);
        assert_eq!(l4.eax & 0x3fff, 0x121);
        let l4_3 = find(&v, 4, 3);
        assert_eq!((l4_3.eax >> 14) & 0xfff, 15);
        for f in [0xb, 0x1f] {
            let smt = find(&v, f, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
            let core = find(&v, f, 1);
            assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (4, 16, 0x201, 5));
            let end = find(&v, f, 2);
            assert_eq!((end.ebx, (end.ecx >> 8) & 0xff, end.edx), (0, 0, 5));
        }
        assert_eq!(v.iter().filter(|e| e.function == 0xb).count(), 3);
        let kvm = find(&v, KVM_SIGNATURE_LEAF, 0);
        assert_eq!([kvm.ebx, kvm.ecx, kvm.edx], KVM_SIGNATURE);
        let sig: Vec<u8> = [kvm.ebx, kvm.ecx, kvm.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
    }

    #[test]
    fn amd_core_count() {
        let mut sup = fake_supported();
        sup[0].ebx = VENDOR_AMD_EBX;
        sup.push(leaf(LEAF_AMD_SIZES, 0, 0x3030, 0, 0x7007, 0));
        sup.push(leaf(LEAF_AMD_TOPOLOGY, 0, 9, 0x100, 0x301, 0));
        let v = vcpu_entries(&sup, Topology::new(4), 3);
        let sizes = find(&v, LEAF_AMD_SIZES, 0);
        assert_eq!(sizes.ecx, 0x2003);
        assert_eq!(sizes.eax, 0x3030);
        let topo = find(&v, LEAF_AMD_TOPOLOGY, 0);
        assert_eq!((topo.eax, topo.ebx, topo.ecx), (3, 3, 0));
        // Intel tables keep leaf 0x80000008 ECX as KVM reported it.
        let mut intel = fake_supported();
        intel.push(leaf(LEAF_AMD_SIZES, 0, 0x3030, 0, 0x7007, 0));
        assert_eq!(
            find(
                &vcpu_entries(&intel, Topology::new(4), 3),
                LEAF_AMD_SIZES,
                0
            )
            .ecx,
            0x7007
        );
    }

    #[test]
    fn tsc_deadline_only_with_the_capability() {
        let mut sup = fake_supported();
        sup[1].ecx &= !ECX_TSC_DEADLINE;
        add_emulated_features(&mut sup, false);
        assert_eq!(find(&sup, 1, 0).ecx & ECX_TSC_DEADLINE, 0);
        add_emulated_features(&mut sup, true);
        let v = vcpu_entries(&sup, Topology::new(2), 1);
        assert_ne!(find(&v, 1, 0).ecx & ECX_TSC_DEADLINE, 0);
        // Nothing else in leaf 1 ECX changes (apart from the hypervisor bit).
        assert_eq!(
            find(&v, 1, 0).ecx & !(ECX_TSC_DEADLINE | ECX_HYPERVISOR),
            0x7ffa_3223 & !(ECX_TSC_DEADLINE | ECX_HYPERVISOR)
        );
    }

    #[test]
    fn single_cpu() {
        let v = vcpu_entries(&fake_supported(), Topology::new(1), 0);
        let l1 = find(&v, 1, 0);
        assert_eq!((l1.ebx >> 16) & 0xff, 1);
        assert_eq!(l1.edx & EDX_HTT, 0);
        assert_eq!(find(&v, 0xb, 1).eax, 0);
    }

    #[test]
    fn shifts() {
        assert_eq!(id_shift(1), 0);
        assert_eq!(id_shift(2), 1);
        assert_eq!(id_shift(3), 2);
        assert_eq!(id_shift(16), 4);
        assert_eq!(id_shift(17), 5);
        assert_eq!(id_shift(254), 8);
    }
}
