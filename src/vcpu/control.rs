//! How the VMM controls a running vCPU thread: its run state, the kick that
//! gets it out of `KVM_RUN`, and pausing every vCPU for a moment (used when
//! guest memory must change under the guest's feet, see
//! [`crate::boot::lease`]).
//!
//! Kick protocol: the controller changes the run state, sets
//! `kvm_run.immediate_exit` through its own shared mapping of the vCPU's
//! `kvm_run` page, then sends [`kick_signal`] to the thread. A vCPU about
//! to enter `KVM_RUN` returns at once (immediate_exit); one inside returns
//! `EINTR` (signal). Either way it re-checks the run state, so no kick is
//! lost. A paused vCPU parks its thread until resumed or stopped.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;

use super::Error;

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
    /// Asked to pause; the thread will park at the next exit.
    PauseRequested = 3,
    /// Parked outside `KVM_RUN` until resumed or stopped.
    Paused = 4,
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
            3 => RunState::PauseRequested,
            4 => RunState::Paused,
            _ => RunState::Stopped,
        }
    }
    fn set(&self, state: RunState) {
        self.0.store(state as u8, Ordering::SeqCst);
    }
    /// Sets `to` if the state is `from`; true if it did.
    fn swap(&self, from: RunState, to: RunState) -> bool {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
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

/// The VMM's side of one vCPU thread, shared with the thread itself.
#[derive(Debug)]
pub struct VcpuControl {
    index: u8,
    state: SharedRunState,
    run_map: RunMapping,
    /// The thread, once spawned: its pthread for the kick signal and its
    /// handle for unparking.
    thread: OnceLock<(libc::pthread_t, std::thread::Thread)>,
}

impl VcpuControl {
    pub(super) fn new(index: u8, fd: &VcpuFd, mmap_size: usize) -> std::io::Result<Self> {
        Ok(VcpuControl {
            index,
            state: SharedRunState::new(),
            run_map: RunMapping::new(fd, mmap_size)?,
            thread: OnceLock::new(),
        })
    }

    /// Records the vCPU's thread; called once, by the thread itself.
    pub(super) fn set_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let _ = self.thread.set((me, std::thread::current()));
    }

    /// The vCPU index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Current run state.
    pub fn state(&self) -> RunState {
        self.state.get()
    }

    /// Gets the thread out of `KVM_RUN` (or keeps it from entering) and
    /// wakes it if parked, so it re-reads its run state.
    fn kick(&self) {
        self.run_map.set_immediate_exit();
        if let Some((pthread, thread)) = self.thread.get() {
            // SAFETY: the thread is joined only after the VM stops and every
            // control is done kicking (vmm::run); signalling a thread that
            // has exited but is not joined is allowed. The signal has a
            // no-op handler.
            let rc = unsafe { libc::pthread_kill(*pthread, kick_signal()) };
            if rc != 0 && rc != libc::ESRCH {
                log::warn!("cannot kick vCPU {}: error {rc}", self.index);
            }
            thread.unpark();
        }
    }

    /// Asks the vCPU to stop and kicks it out of `KVM_RUN`.
    pub fn kick_stop(&self) {
        if self.state.get() == RunState::Stopped {
            return;
        }
        self.state.set(RunState::Stopping);
        self.kick();
    }

    /// What the vCPU thread does at the top of its loop: false when it
    /// must leave the loop; parks it while paused.
    pub(super) fn keep_running(&self) -> bool {
        loop {
            match self.state.get() {
                RunState::Running => return true,
                RunState::Stopping | RunState::Stopped => return false,
                RunState::PauseRequested => {
                    self.state.swap(RunState::PauseRequested, RunState::Paused);
                }
                RunState::Paused => std::thread::park(),
            }
        }
    }

    /// The thread left its loop.
    pub(super) fn set_stopped(&self) {
        self.state.set(RunState::Stopped);
    }
}

/// How long [`pause`] waits for every vCPU to leave `KVM_RUN`.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pauses every running vCPU of `controls` and returns once none of them
/// is in `KVM_RUN` (stopped ones count as paused); dropping the guard
/// resumes them. Err when a vCPU did not pause within `PAUSE_TIMEOUT`
/// (the guard still resumes the others).
pub fn pause(controls: &[std::sync::Arc<VcpuControl>]) -> Result<PauseGuard<'_>, u8> {
    for c in controls {
        if c.state.swap(RunState::Running, RunState::PauseRequested) {
            c.kick();
        }
    }
    let guard = PauseGuard { controls };
    let deadline = Instant::now() + PAUSE_TIMEOUT;
    for c in controls {
        let mut last_kick = Instant::now();
        while c.state.get() == RunState::PauseRequested {
            if Instant::now() > deadline {
                return Err(c.index);
            }
            if last_kick.elapsed() > Duration::from_millis(10) {
                c.kick();
                last_kick = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(guard)
}

/// Resumes the vCPUs paused by [`pause`] when dropped.
#[derive(Debug)]
pub struct PauseGuard<'a> {
    controls: &'a [std::sync::Arc<VcpuControl>],
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        for c in self.controls {
            if c.state.swap(RunState::PauseRequested, RunState::Running)
                | c.state.swap(RunState::Paused, RunState::Running)
            {
                if let Some((_, thread)) = c.thread.get() {
                    thread.unpark();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn run_state_transitions() {
        let s = SharedRunState::new();
        assert_eq!(s.get(), RunState::Running);
        assert!(s.swap(RunState::Running, RunState::PauseRequested));
        assert!(!s.swap(RunState::Running, RunState::Paused));
        assert_eq!(s.get(), RunState::PauseRequested);
        s.set(RunState::Stopping);
        assert_eq!(s.get(), RunState::Stopping);
        s.set(RunState::Stopped);
        assert_eq!(s.get(), RunState::Stopped);
    }

    /// A control on a real (never run) vCPU of this host's KVM, and a
    /// thread that loops like `run_loop` without entering the guest.
    fn spin_thread() -> (Arc<VcpuControl>, std::thread::JoinHandle<u64>) {
        install_kick_handler().unwrap();
        let kvm = kvm_ioctls::Kvm::new().expect("these tests need /dev/kvm");
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let size = kvm.get_vcpu_mmap_size().unwrap();
        let control = Arc::new(VcpuControl::new(0, &vcpu, size).unwrap());
        let c = control.clone();
        let handle = std::thread::spawn(move || {
            let _keep = (vm, vcpu);
            c.set_thread();
            let mut turns = 0u64;
            while c.keep_running() {
                turns += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            c.set_stopped();
            turns
        });
        while control.thread.get().is_none() {
            std::thread::yield_now();
        }
        (control, handle)
    }

    #[test]
    fn pause_parks_and_resume_runs_again() {
        let (control, handle) = spin_thread();
        let controls = [control.clone()];
        {
            let _paused = pause(&controls).unwrap();
            assert_eq!(control.state(), RunState::Paused);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(control.state(), RunState::Paused, "still parked");
        }
        assert_eq!(control.state(), RunState::Running);
        control.kick_stop();
        assert!(handle.join().unwrap() > 0);
        assert_eq!(control.state(), RunState::Stopped);
    }

    #[test]
    fn stop_while_paused_ends_the_thread() {
        let (control, handle) = spin_thread();
        let controls = [control.clone()];
        let paused = pause(&controls).unwrap();
        control.kick_stop();
        handle.join().unwrap();
        drop(paused);
        assert_eq!(
            control.state(),
            RunState::Stopped,
            "resume does not revive it"
        );
    }
}
