//! vCPUs: creation and per-vCPU setup (CPUID, MSRs, FPU, LAPIC, entry
//! registers), one thread each, an explicit run state, and the kick that
//! gets a vCPU out of `KVM_RUN`.
//!
//! Kick protocol: the stopper sets the run state to `Stopping`, sets
//! `kvm_run.immediate_exit` through its own shared mapping of the vCPU's
//! `kvm_run` page, then sends [`kick_signal`] to the thread. A vCPU about
//! to enter `KVM_RUN` returns at once (immediate_exit); one inside returns
//! `EINTR` (signal). Either way it re-checks the run state, so no kick is
//! lost.

pub mod cpuid;
pub mod exit;
pub mod gdt;
pub mod lapic;
pub mod msrs;
pub mod paging;
pub mod regs;

use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{kvm_run, CpuId};
use kvm_ioctls::{VcpuFd, VmFd};

use crate::boot::EntryPoint;
use crate::event_loop::{ExitEvent, StopReason};
use crate::timeline::{Phase, Timeline};
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

/// The signal that kicks a vCPU thread out of `KVM_RUN` (SIGRTMIN).
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler, without `SA_RESTART`, so `KVM_RUN`
/// returns `EINTR`.
pub fn install_kick_handler() -> Result<(), Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
        .map_err(Error::Signal)
}

/// A vCPU's run state, shared between its thread and the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Created or running guest code.
    Running = 0,
    /// Asked to stop; the thread will leave its loop at the next exit.
    Stopping = 1,
    /// The thread has left its loop.
    Stopped = 2,
}

/// Atomic holder of a [`RunState`].
#[derive(Debug)]
pub struct SharedRunState(AtomicU8);

impl SharedRunState {
    fn new() -> Self {
        SharedRunState(AtomicU8::new(RunState::Running as u8))
    }
    /// Current state.
    pub fn get(&self) -> RunState {
        match self.0.load(Ordering::SeqCst) {
            0 => RunState::Running,
            1 => RunState::Stopping,
            _ => RunState::Stopped,
        }
    }
    fn set(&self, state: RunState) {
        self.0.store(state as u8, Ordering::SeqCst);
    }
}

/// A configured vCPU, not yet running.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
    run_map: RunMapping,
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
    let run_map = RunMapping::new(&fd, mmap_size).map_err(|e| Error::MapRun(index, e))?;
    Ok(Vcpu { fd, index, run_map })
}

/// A second, shared mapping of a vCPU's `kvm_run` page, used only to set
/// `immediate_exit` from another thread.
#[derive(Debug)]
struct RunMapping {
    ptr: NonNull<kvm_run>,
    len: usize,
}

// SAFETY: the mapping is a MAP_SHARED page that outlives every user; the
// only access through it is a volatile byte store to `immediate_exit`,
// which KVM and the vCPU thread tolerate at any time.
unsafe impl Send for RunMapping {}
// SAFETY: as above; concurrent volatile byte stores are benign.
unsafe impl Sync for RunMapping {}

impl RunMapping {
    fn new(fd: &VcpuFd, len: usize) -> std::io::Result<Self> {
        // SAFETY: mapping a vCPU fd at offset 0 with its mmap size is how
        // kvm_run is accessed; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<kvm_run>()).ok_or(std::io::ErrorKind::Other)?;
        Ok(RunMapping { ptr, len })
    }

    fn set_immediate_exit(&self) {
        // SAFETY: `ptr` points at a live kvm_run mapping (see RunMapping's
        // Send/Sync justification); writing one byte field is in bounds.
        unsafe { std::ptr::addr_of_mut!((*self.ptr.as_ptr()).immediate_exit).write_volatile(1) };
    }
}

impl Drop for RunMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    index: u8,
    state: Arc<SharedRunState>,
    run_map: RunMapping,
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
        let state = Arc::new(SharedRunState::new());
        let thread_state = state.clone();
        let index = self.index;
        let Vcpu {
            fd,
            index: _,
            run_map,
        } = self;
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                timeline.mark(Phase::FirstVcpuEntry);
                run_loop(fd, index, &thread_state, &buses, &exit)
            })
            .map_err(|e| Error::Spawn(index, e))?;
        Ok(VcpuHandle {
            index,
            state,
            run_map,
            thread,
        })
    }
}

impl VcpuHandle {
    /// Asks the vCPU to stop and kicks it out of `KVM_RUN`.
    pub fn kick_stop(&self) {
        if self.state.get() == RunState::Stopped {
            return;
        }
        self.state.set(RunState::Stopping);
        self.run_map.set_immediate_exit();
        // SAFETY: the thread has not been joined (we own its JoinHandle),
        // so its pthread_t is valid; the signal has a no-op handler.
        let rc = unsafe { libc::pthread_kill(self.thread.as_pthread_t(), kick_signal()) };
        if rc != 0 && rc != libc::ESRCH {
            log::warn!("cannot kick vCPU {}: error {rc}", self.index);
        }
    }

    /// Waits for the thread to finish.
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("vCPU {} thread panicked", self.index);
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

fn run_loop(mut fd: VcpuFd, index: u8, state: &SharedRunState, buses: &Buses, exit: &ExitEvent) {
    let _guard = PanicGuard { exit, index };
    while state.get() == RunState::Running {
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
    state.set(RunState::Stopped);
}

/// Logs (info) where vCPU `index` was when the guest triple-faulted: a
/// guest that reboots with `reboot=t` does it on purpose, but one that
/// crashes leaves no other trace.
fn log_shutdown_state(fd: &VcpuFd, index: u8) {
    match (fd.get_regs(), fd.get_sregs()) {
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
    fn run_state_transitions() {
        let s = SharedRunState::new();
        assert_eq!(s.get(), RunState::Running);
        s.set(RunState::Stopping);
        assert_eq!(s.get(), RunState::Stopping);
        s.set(RunState::Stopped);
        assert_eq!(s.get(), RunState::Stopped);
    }

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
