//! The pure exit handler: turns one `KVM_RUN` exit into an [`Emulation`]
//! decision. It dispatches I/O to the buses but does no host I/O itself,
//! so every exit kind can be unit-tested without KVM.

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::VcpuExit;

use crate::devices::bus::Bus;
use crate::exit::StopReason;

/// The buses a vCPU dispatches I/O exits to.
#[derive(Debug)]
pub struct Buses {
    /// Port I/O.
    pub pio: Bus,
    /// Memory-mapped I/O.
    pub mmio: Bus,
}

/// What the vCPU loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emulation {
    /// The exit was handled: run the vCPU again.
    Continue,
    /// Stop the VM for this reason.
    Stop(StopReason),
}

/// Handles one exit of vCPU `vcpu`.
pub fn handle_exit(exit: VcpuExit<'_>, buses: &Buses, vcpu: u8) -> Emulation {
    match exit {
        VcpuExit::IoIn(port, data) => {
            buses.pio.read(u64::from(port), data);
            Emulation::Continue
        }
        VcpuExit::IoOut(port, data) => {
            buses.pio.write(u64::from(port), data);
            Emulation::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            buses.mmio.read(addr, data);
            Emulation::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            buses.mmio.write(addr, data);
            Emulation::Continue
        }
        // With the in-kernel LAPIC, HLT is handled by KVM; an exit here is
        // harmless (e.g. a spurious one) and the vCPU simply runs again.
        VcpuExit::Hlt => Emulation::Continue,
        VcpuExit::Shutdown => Emulation::Stop(StopReason::TripleFault),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET => Emulation::Stop(StopReason::GuestReset),
            KVM_SYSTEM_EVENT_SHUTDOWN => Emulation::Stop(StopReason::GuestPowerOff),
            KVM_SYSTEM_EVENT_CRASH => Emulation::Stop(StopReason::UnhandledExit {
                vcpu,
                what: "guest crash system event".into(),
            }),
            other => Emulation::Stop(StopReason::UnhandledExit {
                vcpu,
                what: format!("system event {other}"),
            }),
        },
        // The suberror and RIP are filled in by the caller, which owns the vCPU.
        VcpuExit::InternalError => Emulation::Stop(StopReason::InternalError {
            vcpu,
            suberror: 0,
            rip: 0,
        }),
        VcpuExit::FailEntry(reason, _cpu) => {
            Emulation::Stop(StopReason::FailEntry { vcpu, reason })
        }
        other => Emulation::Stop(StopReason::UnhandledExit {
            vcpu,
            what: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::bus::{BusDevice, Quiet};
    use std::sync::{Arc, Mutex};

    struct Echo(Vec<u8>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0.extend_from_slice(data);
        }
    }

    fn buses() -> (Buses, Arc<Mutex<Echo>>) {
        let echo = Arc::new(Mutex::new(Echo(Vec::new())));
        let mut pio = Bus::new("pio");
        pio.insert(0x3f8, 8, echo.clone()).unwrap();
        pio.insert(0x80, 1, Arc::new(Mutex::new(Quiet))).unwrap();
        let mut mmio = Bus::new("mmio");
        mmio.insert(0xd000_0000, 0x1000, echo.clone()).unwrap();
        (Buses { pio, mmio }, echo)
    }

    #[test]
    fn io_exits_dispatch() {
        let (b, echo) = buses();
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x3f8, b"A"), &b, 0),
            Emulation::Continue
        );
        assert_eq!(echo.lock().unwrap().0, b"A");
        let mut d = [0u8; 1];
        assert_eq!(
            handle_exit(VcpuExit::IoIn(0x3fd, &mut d), &b, 0),
            Emulation::Continue
        );
        assert_eq!(d, [6]);
        let mut d = [0u8; 4];
        handle_exit(VcpuExit::MmioRead(0xd000_0010, &mut d), &b, 0);
        assert_eq!(d, [0x11; 4]);
        // Unknown PIO and MMIO: all ones, and the vCPU continues.
        let mut d = [0u8; 2];
        assert_eq!(
            handle_exit(VcpuExit::IoIn(0x1234, &mut d), &b, 0),
            Emulation::Continue
        );
        assert_eq!(d, [0xff; 2]);
        let mut d = [0u8; 8];
        handle_exit(VcpuExit::MmioRead(0xe000_0000, &mut d), &b, 0);
        assert_eq!(d, [0xff; 8]);
        assert_eq!(
            handle_exit(VcpuExit::MmioWrite(0xe000_0000, &[1]), &b, 0),
            Emulation::Continue
        );
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x80, &[0x42]), &b, 0),
            Emulation::Continue
        );
    }

    #[test]
    fn stop_exits() {
        let (b, _) = buses();
        assert_eq!(
            handle_exit(VcpuExit::Shutdown, &b, 0),
            Emulation::Stop(StopReason::TripleFault)
        );
        assert_eq!(
            handle_exit(VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[]), &b, 0),
            Emulation::Stop(StopReason::GuestReset)
        );
        assert_eq!(
            handle_exit(VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, &[]), &b, 0),
            Emulation::Stop(StopReason::GuestPowerOff)
        );
        assert_eq!(
            handle_exit(VcpuExit::InternalError, &b, 3),
            Emulation::Stop(StopReason::InternalError {
                vcpu: 3,
                suberror: 0,
                rip: 0
            })
        );
        assert_eq!(
            handle_exit(VcpuExit::FailEntry(0x80000021, 0), &b, 1),
            Emulation::Stop(StopReason::FailEntry {
                vcpu: 1,
                reason: 0x80000021
            })
        );
        assert!(matches!(
            handle_exit(VcpuExit::Unknown, &b, 0),
            Emulation::Stop(StopReason::UnhandledExit { .. })
        ));
        assert_eq!(handle_exit(VcpuExit::Hlt, &b, 0), Emulation::Continue);
    }
}
