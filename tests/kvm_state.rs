//! Tier (b): state ember leaves in KVM itself, read back through KVM's own
//! ioctls on this host's `/dev/kvm` (unit tests need no KVM; these do).
//!
//! These fail loudly without a usable /dev/kvm unless
//! `EMBER_SKIP_KVM_TESTS=1` is set.

mod common;

use common::kvm_available;
use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};

#[test]
fn both_pics_are_masked_in_kvm() {
    if !kvm_available() {
        return;
    }
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    ember::devices::pic::mask_all(&vm).unwrap();
    for (id, base) in [
        (KVM_IRQCHIP_PIC_MASTER, 0x08),
        (KVM_IRQCHIP_PIC_SLAVE, 0x70),
    ] {
        let mut chip = kvm_irqchip {
            chip_id: id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip).unwrap();
        // SAFETY: `pic` is the union member KVM fills for a PIC chip id.
        let pic = unsafe { chip.chip.pic };
        assert_eq!((pic.imr, pic.irq_base), (0xff, base));
    }
}
