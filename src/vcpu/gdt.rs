//! The boot GDT shared by both entry protocols, and the conversion of its
//! descriptors to KVM segment registers.
//!
//! Spec: Intel SDM Vol. 3A §3.4.5 (segment descriptors). The Linux 64-bit
//! boot protocol (boot.rst) wants `__BOOT_CS` = 0x10 and `__BOOT_DS` =
//! 0x18, flat; PVH wants a flat 32-bit code segment (any selector).

use kvm_bindings::kvm_segment;

/// Flat 32-bit code segment (PVH entry).
pub const CODE32_SELECTOR: u16 = 0x08;
/// Flat 64-bit code segment (`__BOOT_CS`).
pub const CODE64_SELECTOR: u16 = 0x10;
/// Flat data segment (`__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;
/// Task state segment.
pub const TSS_SELECTOR: u16 = 0x20;

/// Builds a descriptor from flags (access byte in bits 0-7, G/DB/L/AVL
/// in bits 12-15), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, code32, code64, data, TSS.
pub const BOOT_GDT: [u64; 5] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff), // code: G, D, P, S, execute/read, accessed
    gdt_entry(0xa09b, 0, 0xfffff), // code: G, L, P, S, execute/read, accessed
    gdt_entry(0xc093, 0, 0xfffff), // data: G, B, P, S, read/write, accessed
    gdt_entry(0x808b, 0, 0xfffff), // TSS: G, P, busy 64-bit TSS
];

/// Decodes a descriptor into the KVM segment register for `selector`.
pub fn segment(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The segment for a selector of [`BOOT_GDT`].
pub fn boot_segment(selector: u16) -> kvm_segment {
    segment(BOOT_GDT[usize::from(selector >> 3)], selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_entries() {
        assert_eq!(BOOT_GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[4], 0x008f_8b00_0000_ffff);
        assert_eq!(
            gdt_entry(0x809b, 0x1234_5678, 0xabcde),
            0x128a_9b34_5678_bcde
        );
    }

    #[test]
    fn decoded_segments() {
        let cs = boot_segment(CODE64_SELECTOR);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 0x10));
        assert_eq!((cs.type_, cs.present, cs.dpl, cs.s), (0xb, 1, 0, 1));
        assert_eq!((cs.l, cs.db, cs.g, cs.unusable), (1, 0, 1, 0));
        let cs32 = boot_segment(CODE32_SELECTOR);
        assert_eq!((cs32.l, cs32.db, cs32.selector), (0, 1, 8));
        let ds = boot_segment(DATA_SELECTOR);
        assert_eq!((ds.type_, ds.db, ds.l, ds.selector), (3, 1, 0, 0x18));
        let tr = boot_segment(TSS_SELECTOR);
        assert_eq!((tr.type_, tr.s, tr.present), (0xb, 0, 1));
        let null = segment(0, 0);
        assert_eq!((null.present, null.unusable), (0, 1));
        let odd = segment(gdt_entry(0x0093, 0x1234_5678, 0xabcde), 0x28);
        assert_eq!((odd.base, odd.limit, odd.g), (0x1234_5678, 0xabcde, 0));
    }
}
