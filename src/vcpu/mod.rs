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

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};

use crate::boot::EntryPoint;
use crate::devices::output::Output;
use crate::exit::{ExitEvent, StopReason};
use crate::plan::Topology;
use crate::timeline::{Phase, Timeline};
pub use control::{
    install_kick_handler, kick_signal, pause_all, resume_all, RunState, VcpuControl,
};
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
    /// Registers were asked for while the vCPU was running.
    #[error("vCPU {0} is not paused")]
    NotPaused(u8),
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

/// Creates vCPU `index` of `topology` and configures it. Only the boot vCPU
/// (index 0) gets entry registers; the others wait for INIT/SIPI in KVM.
pub fn create(
    vm: &VmFd,
    supported_cpuid: &CpuId,
    mmap_size: usize,
    index: u8,
    topology: Topology,
    entry: &EntryPoint,
) -> Result<Vcpu, Error> {
    let fd = vm
        .create_vcpu(u64::from(index))
        .map_err(|e| Error::Create(index, e))?;
    let cpuid = cpuid::vcpu_cpuid(supported_cpuid, topology, index)?;
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
    /// Held by the thread while it runs the guest; free while it is
    /// parked (paused) or after it stopped.
    fd: Arc<Mutex<VcpuFd>>,
    thread: JoinHandle<()>,
}

impl Vcpu {
    /// Starts the vCPU's thread.
    /// The thread marks [`Phase::FirstVcpuEntry`] on `timeline` just before its
    /// first `KVM_RUN`.
    /// `output` is the console output whose back-pressure the thread
    /// obeys after each exit, with no device lock held.
    pub fn start(
        self,
        buses: Arc<Buses>,
        exit: ExitEvent,
        timeline: Timeline,
        output: Output,
    ) -> Result<VcpuHandle, Error> {
        let Vcpu { fd, index, control } = self;
        let fd = Arc::new(Mutex::new(fd));
        let (thread_control, thread_fd) = (control.clone(), fd.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                thread_control.set_thread();
                timeline.mark(Phase::FirstVcpuEntry);
                run_loop(&thread_fd, &thread_control, &buses, &exit, &output)
            })
            .map_err(|e| Error::Spawn(index, e))?;
        Ok(VcpuHandle {
            control,
            fd,
            thread,
        })
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

    /// The vCPU's general registers; only while it is paused or stopped
    /// (else `Err(NotPaused)`: a running vCPU's fd is held by its thread).
    pub fn regs(&self) -> Result<kvm_bindings::kvm_regs, Error> {
        if !matches!(self.control.state(), RunState::Paused | RunState::Stopped) {
            return Err(Error::NotPaused(self.control.index()));
        }
        let fd = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        fd.get_regs().map_err(Error::Regs)
    }

    /// Waits for the thread to finish, at most until `deadline`;
    /// `Err(index)` if it did not (the thread is then left detached).
    pub fn join(self, deadline: Instant) -> Result<(), u8> {
        let index = self.control.index();
        if !self.control.wait_done(deadline) {
            return Err(index);
        }
        if self.thread.join().is_err() {
            log::error!("vCPU {index} thread panicked");
        }
        Ok(())
    }
}

/// Reports a panic of the vCPU thread on the exit event, and marks the
/// thread stopped however it leaves.
struct ExitGuard<'a> {
    exit: &'a ExitEvent,
    control: &'a VcpuControl,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.exit.signal(StopReason::VcpuPanic {
                vcpu: self.control.index(),
            });
        }
        self.control.set_stopped();
    }
}

/// The vCPU thread: `KVM_RUN`, handle the exit, repeat, until the run
/// state says stop; while paused it parks with its fd released.
fn run_loop(
    fd: &Mutex<VcpuFd>,
    control: &VcpuControl,
    buses: &Buses,
    exit: &ExitEvent,
    output: &Output,
) {
    let index = control.index();
    let _guard = ExitGuard { exit, control };
    let mut vcpu = fd.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match control.state() {
            RunState::Running => {}
            RunState::PauseRequested | RunState::Paused => {
                drop(vcpu);
                control.park_while_paused();
                vcpu = fd.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            RunState::Stopping | RunState::Stopped => break,
        }
        match vcpu.run() {
            Ok(vcpu_exit) => match handle_exit(vcpu_exit, buses, index) {
                // A device stopped the VM (exit-status port, i8042 reset):
                // do not run the guest past that write.
                Emulation::Continue if exit.is_signalled() => break,
                // A stdout that is not read slows the guest down here,
                // outside the UART's lock; a stop ends the wait.
                Emulation::Continue => output.wait_for_room(),
                Emulation::Stop(mut reason) => {
                    if let StopReason::InternalError { suberror, rip, .. } = &mut reason {
                        // SAFETY: reading the `internal` union member is valid
                        // after a KVM_EXIT_INTERNAL_ERROR exit.
                        *suberror =
                            unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                        *rip = vcpu.get_regs().map_or(0, |r| r.rip);
                    }
                    if matches!(reason, StopReason::TripleFault) {
                        log_shutdown_state(&vcpu, index);
                    }
                    log::debug!("vCPU {index}: {reason}");
                    exit.signal(reason);
                    break;
                }
            },
            Err(e) => match e.errno() {
                libc::EINTR => control.after_kick(&mut vcpu),
                libc::EAGAIN => {}
                errno => {
                    exit.signal(StopReason::RunFailed { vcpu: index, errno });
                    break;
                }
            },
        }
    }
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
    fn exit_guard_reports_a_panic_and_marks_stopped() {
        let exit = ExitEvent::new().unwrap();
        let e2 = exit.clone();
        let control = Arc::new(VcpuControl::for_test(7));
        let c2 = control.clone();
        let r = std::thread::spawn(move || {
            let _g = ExitGuard {
                exit: &e2,
                control: &c2,
            };
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(exit.reason(), Some(StopReason::VcpuPanic { vcpu: 7 }));
        assert_eq!(control.state(), RunState::Stopped);
        assert!(control.wait_done(Instant::now()));
    }
}
