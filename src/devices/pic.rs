//! The start state of KVM's in-kernel 8259 PIC pair: masked, as firmware
//! leaves it.
//!
//! KVM creates the PICs zeroed: every line unmasked and vector base 0. Its
//! default routing sends GSIs 0-15 to the PIC as well as to the IOAPIC,
//! and the boot vCPU's LINT0 accepts the PIC's output (ExtINT, the PC's
//! virtual-wire mode). A guest that never programs the PIC (Linux on a
//! hardware-reduced ACPI platform uses no legacy PIC at all) would then
//! receive the first device interrupt on IRQ 4 or 5 as vector 4 or 5, an
//! exception vector: an oops or a stray `SIGSEGV` once per boot, wherever
//! CPU 0 happens to be. So ember masks both PICs (IMR 0xff) and gives them
//! the PC's vector bases (0x08 and 0x70) before any vCPU runs; a guest
//! that uses the PIC initialises it (ICW1-4) and unmasks what it wants.
//! `tests/tiny_guest.rs` checks it with a guest that never touches the PIC.

use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use kvm_ioctls::VmFd;

/// Vector base a PC BIOS programs for the master PIC (IRQ 0-7).
pub const MASTER_VECTOR_BASE: u8 = 0x08;
/// Vector base a PC BIOS programs for the slave PIC (IRQ 8-15).
pub const SLAVE_VECTOR_BASE: u8 = 0x70;

/// PIC setup errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM_GET_IRQCHIP or KVM_SET_IRQCHIP failed.
    #[error("cannot set the in-kernel PIC's start state")]
    Irqchip(#[source] kvm_ioctls::Error),
}

/// Masks both in-kernel PICs; call after `KVM_CREATE_IRQCHIP`.
pub fn mask_all(vm: &VmFd) -> Result<(), Error> {
    for (chip_id, base) in [
        (KVM_IRQCHIP_PIC_MASTER, MASTER_VECTOR_BASE),
        (KVM_IRQCHIP_PIC_SLAVE, SLAVE_VECTOR_BASE),
    ] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip).map_err(Error::Irqchip)?;
        // SAFETY: for the PIC chip ids KVM fills (and reads) the `pic`
        // member of the union; every bit pattern is a valid kvm_pic_state.
        let pic = unsafe { &mut chip.chip.pic };
        masked(pic, base);
        vm.set_irqchip(&chip).map_err(Error::Irqchip)?;
    }
    Ok(())
}

/// The masked state: every line masked, `base` as vector base.
fn masked(pic: &mut kvm_bindings::kvm_pic_state, base: u8) {
    pic.imr = 0xff;
    pic.irq_base = base;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_state() {
        let mut pic = kvm_bindings::kvm_pic_state::default();
        masked(&mut pic, MASTER_VECTOR_BASE);
        assert_eq!(pic.imr, 0xff);
        assert_eq!(pic.irq_base, 0x08);
    }
}
