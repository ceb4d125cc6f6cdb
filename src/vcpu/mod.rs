//! vCPUs: creation and per-vCPU setup (CPUID, MSRs, FPU, LAPIC, entry
//! registers), one thread each running `KVM_RUN` in `run_loop`. The run
//! state, the kick and pausing are in [`control`].

pub mod control;
pub mod cpuid;
pub mod exit;
pub mod gdt;
pub mod lapic;
pub mod msrs;
pub mod paging;
pub mod regs;

use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};

use crate::boot::EntryPoint;
use crate::event_loop::{ExitEvent, StopReason};
use crate::timeline::{Phase, Timeline};
pub use control::{install_kick_handler, kick_signal, RunState, VcpuControl};
use exit::{handle_exit, Buses, Emulation};

/// vCPU errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {0}")]
    Create(u8, #[source] kvm_ioctls::Error),
    /// KVM_SET_CPUID2 failed.
    #[error("cannot set CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    /// The CPUID table could not be built.
    #[error("cannot build the CPUID table")]
    CpuidAlloc,
    /// Building the MSR list failed.
    #[error("cannot build the MSR list")]
    MsrsAlloc,
    /// KVM_SET_MSRS failed.
    #[error("cannot set MSRs")]
    Msrs(#[source] kvm_ioctls::Error),
    /// KVM_SET_FPU failed.
    #[error("cannot set FPU state")]
    Fpu(#[source] kvm_ioctls::Error),
    /// LAPIC get/set failed.
    #[error("cannot program the local APIC")]
    Lapic(#[source] kvm_ioctls::Error),
    /// Get/set sregs failed.
    #[error("cannot set segment and control registers")]
    Sregs(#[source] kvm_ioctls::Error),
    /// Set regs failed.
    #[error("cannot set general registers")]
    Regs(#[source] kvm_ioctls::Error),
    /// Writing the GDT, IDT or page tables failed.
    #[error("cannot write boot descriptor or page tables")]
    BootTables(#[source] vm_memory::GuestMemoryError),
    /// Mapping kvm_run for the kicker failed.
    #[error("cannot map kvm_run of vCPU {0}")]
    MapRun(u8, #[source] std::io::Error),
    /// Spawning the thread failed.
    #[error("cannot spawn the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
    /// Registering the kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// A configured vCPU, not yet running.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    control: Arc<VcpuControl>,
}

/// Creates vCPU `index` of `count` and configures it. Only the boot vCPU
/// (index 0) gets entry registers; the others wait for INIT/SIPI in KVM.
pub fn create(
    vm: &VmFd,
    supported_cpuid: &CpuId,
    mmap_size: usize,
    index: u8,
    count: u8,
    entry: &EntryPoint,
) -> Result<Vcpu, Error> {
    let fd = vm
        .create_vcpu(u64::from(index))
        .map_err(|e| Error::Create(index, e))?;
    let cpuid = cpuid::vcpu_cpuid(supported_cpuid, index, count)?;
    fd.set_cpuid2(&cpuid).map_err(Error::Cpuid)?;
    msrs::setup_msrs(&fd)?;
    regs::setup_fpu(&fd)?;
    lapic::setup_lapic(&fd)?;
    if index == 0 {
        regs::setup_boot_vcpu(&fd, entry)?;
    }
    let control = VcpuControl::new(index, &fd, mmap_size).map_err(|e| Error::MapRun(index, e))?;
    Ok(Vcpu {
        fd,
        index,
        control: Arc::new(control),
    })
}

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    control: Arc<VcpuControl>,
    thread: JoinHandle<()>,
}

impl Vcpu {
    /// Starts the vCPU's thread.
    /// The thread marks [`Phase::FirstVcpuEntry`] on `timeline` just before its
    /// first `KVM_RUN`.
    pub fn start(
        self,
        buses: Arc<Buses>,
        exit: ExitEvent,
        timeline: Timeline,
    ) -> Result<VcpuHandle, Error> {
        let Vcpu { fd, index, control } = self;
        let thread_control = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                thread_control.set_thread();
                timeline.mark(Phase::FirstVcpuEntry);
                run_loop(fd, &thread_control, &buses, &exit)
            })
            .map_err(|e| Error::Spawn(index, e))?;
        Ok(VcpuHandle { control, thread })
    }
}

impl VcpuHandle {
    /// The controls shared with the thread (kick, stop, pause).
    pub fn control(&self) -> &Arc<VcpuControl> {
        &self.control
    }

    /// Asks the vCPU to stop and kicks it out of `KVM_RUN`.
    pub fn kick_stop(&self) {
        self.control.kick_stop();
    }

    /// Waits for the thread to finish.
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("vCPU {} thread panicked", self.control.index());
        }
    }
}

/// Reports a panic of the vCPU thread on the exit event.
struct PanicGuard<'a> {
    exit: &'a ExitEvent,
    index: u8,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.exit.signal(StopReason::VcpuPanic { vcpu: self.index });
        }
    }
}

/// The vCPU thread: `KVM_RUN`, handle the exit, repeat, until the run
/// state says stop (parked meanwhile while paused).
fn run_loop(mut fd: VcpuFd, control: &VcpuControl, buses: &Buses, exit: &ExitEvent) {
    let index = control.index();
    let _guard = PanicGuard { exit, index };
    while control.keep_running() {
        match fd.run() {
            Ok(vcpu_exit) => match handle_exit(vcpu_exit, buses, index) {
                // A device stopped the VM (exit-status port, i8042 reset):
                // do not run the guest past that write.
                Emulation::Continue if exit.is_signalled() => break,
                Emulation::Continue => {}
                Emulation::Stop(mut reason) => {
                    if let StopReason::InternalError { suberror, rip, .. } = &mut reason {
                        // SAFETY: reading the `internal` union member is valid
                        // after a KVM_EXIT_INTERNAL_ERROR exit.
                        *suberror = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                        *rip = fd.get_regs().map_or(0, |r| r.rip);
                    }
                    if matches!(reason, StopReason::TripleFault) {
                        log_shutdown_state(&fd, index);
                    }
                    log::debug!("vCPU {index}: {reason}");
                    exit.signal(reason);
                    break;
                }
            },
            Err(e) => match e.errno() {
                libc::EINTR => fd.set_kvm_immediate_exit(0),
                libc::EAGAIN => {}
                errno => {
                    exit.signal(StopReason::RunFailed { vcpu: index, errno });
                    break;
                }
            },
        }
    }
    control.set_stopped();
}

/// Logs (info) where vCPU `index` was when the guest triple-faulted: a
/// guest that reboots with `reboot=t` does it on purpose, but one that
/// crashes leaves no other trace. KVM on AMD resets the vCPU before it
/// reports the shutdown, so there the registers say nothing: said as such.
fn log_shutdown_state(fd: &VcpuFd, index: u8) {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) if r.rip == 0xfff0 && s.cs.selector == 0xf000 => log::info!(
            "vCPU {index} triple fault (its registers are already the reset state: KVM on AMD resets the vCPU first)"
        ),
        (Ok(r), Ok(s)) => log::info!(
            "vCPU {index} triple fault: rip {:#x} rsp {:#x} rflags {:#x} cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x}",
            r.rip, r.rsp, r.rflags, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector
        ),
        (Err(e), _) | (_, Err(e)) => {
            log::info!("vCPU {index} triple fault: cannot read its registers: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_guard_reports() {
        let exit = ExitEvent::new().unwrap();
        let e2 = exit.clone();
        let r = std::thread::spawn(move || {
            let _g = PanicGuard {
                exit: &e2,
                index: 7,
            };
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(exit.reason(), Some(StopReason::VcpuPanic { vcpu: 7 }));
    }
}
