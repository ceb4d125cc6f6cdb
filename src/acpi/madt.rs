//! The MADT ("APIC", ACPI 6.5 §5.2.12): the interrupt controllers, the
//! same ones the MP table (`boot/mptable.rs`) describes.
//!
//! * One Processor Local APIC entry (§5.2.12.2) per vCPU: ACPI processor
//!   UID = APIC ID = vCPU index, enabled.
//! * The IOAPIC (§5.2.12.3) at [`IOAPIC_ADDR`] with the MP table's ID
//!   (the plan's [`crate::plan::Topology::ioapic_id`]) and GSI base 0: GSI n is pin n.
//! * One Local APIC NMI entry (§5.2.12.7): LINT1 of every processor is the
//!   NMI, as the MP table's local interrupt entry and `vcpu/lapic.rs` say.
//!
//! No Interrupt Source Override: the MP table maps ISA IRQ n to pin n with
//! bus-default (edge, active-high) polarity, which is also ACPI's default
//! for ISA IRQs without an override, and KVM's in-kernel PIT (`--pit`)
//! raises GSI 0 (pin 0), not pin 2. The header's flags are 0: no PC-AT
//! dual-8259 setup is announced, as a hardware-reduced platform has none
//! to offer.

use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::{Aml, AmlSink};
use zerocopy::{Immutable, IntoBytes};

use super::{to_bytes, OEM_ID, OEM_REVISION};
use crate::layout::{APIC_ADDR, IOAPIC_ADDR};
use crate::plan::Topology;

/// Size of the MADT header (table header, local APIC address, flags).
pub const HEADER_SIZE: usize = 44;
/// Interrupt controller structure type: Processor Local APIC (8 bytes).
pub const TYPE_LOCAL_APIC: u8 = 0;
/// Interrupt controller structure type: I/O APIC (12 bytes).
pub const TYPE_IOAPIC: u8 = 1;
/// Interrupt controller structure type: Local APIC NMI (6 bytes).
pub const TYPE_LOCAL_APIC_NMI: u8 = 4;
/// ACPI processor UID meaning "all processors".
const ALL_PROCESSORS: u8 = 0xff;
/// MPS INTI flags: conforming polarity and trigger mode.
const MPS_INTI_CONFORMING: u16 = 0;
/// The local APIC input the NMI is wired to.
const NMI_LINT: u8 = 1;

/// Local APIC NMI structure (§5.2.12.7), which `acpi_tables` lacks.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
struct LocalApicNmi {
    r#type: u8,
    length: u8,
    processor_uid: u8,
    flags: [u8; 2],
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// The MADT bytes for `topology`: one local APIC per vCPU, the IOAPIC.
pub fn build(topology: Topology) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"EMBRAPIC",
        OEM_REVISION,
        LocalInterruptController::Address(APIC_ADDR),
    );
    for cpu in 0..topology.cpus() {
        let apic_id = topology.apic_id(cpu);
        madt.add_structure(ProcessorLocalApic::new(
            cpu,
            apic_id,
            EnabledStatus::Enabled,
        ));
    }
    madt.add_structure(IoApic::new(topology.ioapic_id(), IOAPIC_ADDR, 0));
    madt.add_structure(LocalApicNmi {
        r#type: TYPE_LOCAL_APIC_NMI,
        length: 6,
        processor_uid: ALL_PROCESSORS,
        flags: MPS_INTI_CONFORMING.to_le_bytes(),
        lint: NMI_LINT,
    });
    to_bytes(&madt)
}
