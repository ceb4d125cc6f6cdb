//! How the VMM controls a running vCPU thread: its run state, the kick that
//! gets it out of `KVM_RUN`, pausing (every vCPU parked outside `KVM_RUN`,
//! for [`crate::vm::Vm::pause`]) and a stop with a deadline.
//!
//! Kick protocol: the controller changes the run state, sets
//! `kvm_run.immediate_exit` through its own shared mapping of the vCPU's
//! `kvm_run` page, then sends [`kick_signal`] to the thread. A vCPU about
//! to enter `KVM_RUN` returns at once (immediate_exit); one inside returns
//! `EINTR` (signal). Either way it re-checks the run state, so no kick is
//! lost. A paused vCPU parks its thread until resumed or stopped.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
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
    /// Sets `Stopping` unless the state is already `Stopping` or
    /// `Stopped`, atomically; true if it changed.
    fn stop(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s != RunState::Stopping as u8 && s != RunState::Stopped as u8)
                    .then_some(RunState::Stopping as u8)
            })
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

    /// An anonymous page standing in for `kvm_run`, for tests without KVM.
    #[cfg(test)]
    fn anonymous() -> Self {
        let len = 4096;
        // SAFETY: a fresh private anonymous mapping; checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let ptr = NonNull::new(ptr.cast::<kvm_run>()).expect("mmap returned null");
        RunMapping { ptr, len }
    }

    /// `immediate_exit` as last stored (tests).
    #[cfg(test)]
    fn immediate_exit(&self) -> u8 {
        // SAFETY: as in `set_immediate_exit`.
        unsafe { std::ptr::addr_of!((*self.ptr.as_ptr()).immediate_exit).read_volatile() }
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
    /// Set (and notified) when the thread has left its loop for good.
    done: (Mutex<bool>, Condvar),
}

impl VcpuControl {
    pub(super) fn new(index: u8, fd: &VcpuFd, mmap_size: usize) -> std::io::Result<Self> {
        Ok(VcpuControl {
            index,
            state: SharedRunState::new(),
            run_map: RunMapping::new(fd, mmap_size)?,
            thread: OnceLock::new(),
            done: (Mutex::new(false), Condvar::new()),
        })
    }

    /// A control with no vCPU behind it (plain-memory tests).
    #[cfg(test)]
    pub(super) fn for_test(index: u8) -> Self {
        VcpuControl {
            index,
            state: SharedRunState::new(),
            run_map: RunMapping::anonymous(),
            thread: OnceLock::new(),
            done: (Mutex::new(false), Condvar::new()),
        }
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
    ///
    /// Ordering: the caller changed the run state (SeqCst) before calling
    /// this; the fence orders that store before the `immediate_exit` store.
    /// The vCPU thread clears `immediate_exit` and then fences before it
    /// reads the run state ([`VcpuControl::after_kick`]). So either the
    /// thread reads the new state, or its clear precedes our set in the
    /// single SeqCst order and its next `KVM_RUN` returns at once: the kick
    /// is never lost.
    fn kick(&self) {
        fence(Ordering::SeqCst);
        self.run_map.set_immediate_exit();
        if let Some((pthread, thread)) = self.thread.get() {
            // SAFETY: the thread is joined only after the VM stops and every
            // control is done kicking (vm::Vm::stop); signalling a thread
            // that has exited but is not joined is allowed. The signal has
            // a no-op handler.
            let rc = unsafe { libc::pthread_kill(*pthread, kick_signal()) };
            if rc != 0 && rc != libc::ESRCH {
                log::warn!("cannot kick vCPU {}: error {rc}", self.index);
            }
            thread.unpark();
        }
    }

    /// What the vCPU thread does after `KVM_RUN` returned `EINTR`: clear
    /// `immediate_exit` through `fd`, then fence so the run state it reads
    /// next is not read before the clear (see [`VcpuControl::kick`]).
    pub(super) fn after_kick(&self, fd: &mut VcpuFd) {
        fd.set_kvm_immediate_exit(0);
        fence(Ordering::SeqCst);
    }

    /// Asks the vCPU to stop and kicks it out of `KVM_RUN` (or out of its
    /// pause). A thread that has already stopped stays `Stopped`: the
    /// state changes by compare-and-swap, never by a blind store.
    pub fn kick_stop(&self) {
        if self.state.stop() {
            self.kick();
        }
    }

    /// Asks a running vCPU to pause and kicks it; false if it was not
    /// running (already paused, stopping or stopped).
    pub fn request_pause(&self) -> bool {
        let asked = self.state.swap(RunState::Running, RunState::PauseRequested);
        if asked {
            self.kick();
        }
        asked
    }

    /// Lets a paused (or pausing) vCPU run again; a stopping or stopped
    /// one is left alone.
    pub fn resume(&self) {
        if self.state.swap(RunState::PauseRequested, RunState::Running)
            | self.state.swap(RunState::Paused, RunState::Running)
        {
            if let Some((_, thread)) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// What the vCPU thread does when its state says pause: marks itself
    /// `Paused` (the caller has released the vCPU fd first) and parks
    /// until resumed or stopped.
    pub(super) fn park_while_paused(&self) {
        self.state.swap(RunState::PauseRequested, RunState::Paused);
        while self.state.get() == RunState::Paused {
            std::thread::park();
        }
    }

    /// The thread left its loop: `Stopped`, and wake [`VcpuControl::wait_done`].
    pub(super) fn set_stopped(&self) {
        self.state.set(RunState::Stopped);
        let (lock, cvar) = &self.done;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
    }

    /// Waits until the thread has left its loop, at most until `deadline`;
    /// true if it did.
    pub fn wait_done(&self, deadline: Instant) -> bool {
        let (lock, cvar) = &self.done;
        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            done = cvar
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Pauses every running vCPU of `controls` and returns once none of them
/// is in `KVM_RUN` (stopped ones count as paused), kicking again every
/// 10 ms; `Err(index)` when vCPU `index` did not pause by `deadline`.
/// [`resume_all`] undoes it (also after an error).
pub fn pause_all(controls: &[Arc<VcpuControl>], deadline: Instant) -> Result<(), u8> {
    for c in controls {
        c.request_pause();
    }
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
    Ok(())
}

/// Resumes every paused vCPU of `controls`.
pub fn resume_all(controls: &[Arc<VcpuControl>]) {
    for c in controls {
        c.resume();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn run_state_transitions() {
        let s = SharedRunState::new();
        assert_eq!(s.get(), RunState::Running);
        assert!(s.swap(RunState::Running, RunState::PauseRequested));
        assert!(!s.swap(RunState::Running, RunState::Paused));
        assert_eq!(s.get(), RunState::PauseRequested);
        assert!(s.stop(), "a pausing vCPU can be stopped");
        assert_eq!(s.get(), RunState::Stopping);
        assert!(!s.stop(), "stopping twice changes nothing");
        s.set(RunState::Stopped);
        assert!(!s.stop(), "Stopped is never overwritten");
        assert_eq!(s.get(), RunState::Stopped);
    }

    /// A thread that loops like `run_loop` without a guest: "runs" by
    /// sleeping 100 µs, parks while paused.
    fn spin_thread() -> (Arc<VcpuControl>, std::thread::JoinHandle<u64>) {
        install_kick_handler().unwrap();
        let control = Arc::new(VcpuControl::for_test(0));
        let c = control.clone();
        let handle = std::thread::spawn(move || {
            c.set_thread();
            let mut turns = 0u64;
            loop {
                match c.state() {
                    RunState::Running => {}
                    RunState::PauseRequested | RunState::Paused => {
                        c.park_while_paused();
                        continue;
                    }
                    RunState::Stopping | RunState::Stopped => break,
                }
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

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[test]
    fn pause_parks_and_resume_runs_again() {
        let (control, handle) = spin_thread();
        let controls = [control.clone()];
        pause_all(&controls, soon()).unwrap();
        assert_eq!(control.state(), RunState::Paused);
        assert_eq!(control.run_map.immediate_exit(), 1, "kicked");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(control.state(), RunState::Paused, "still parked");
        resume_all(&controls);
        assert_eq!(control.state(), RunState::Running);
        control.kick_stop();
        assert!(control.wait_done(soon()));
        assert!(handle.join().unwrap() > 0);
        assert_eq!(control.state(), RunState::Stopped);
    }

    #[test]
    fn stop_while_paused_ends_the_thread() {
        let (control, handle) = spin_thread();
        let controls = [control.clone()];
        pause_all(&controls, soon()).unwrap();
        control.kick_stop();
        handle.join().unwrap();
        resume_all(&controls);
        assert_eq!(
            control.state(),
            RunState::Stopped,
            "resume does not revive it"
        );
        control.kick_stop();
        assert_eq!(control.state(), RunState::Stopped, "nor does a late stop");
    }

    #[test]
    fn wait_done_has_a_deadline() {
        let control = VcpuControl::for_test(3);
        let t = Instant::now();
        assert!(!control.wait_done(t + Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        control.set_stopped();
        assert!(control.wait_done(Instant::now()));
    }

    #[test]
    fn pause_times_out_on_a_thread_that_never_parks() {
        let control = Arc::new(VcpuControl::for_test(5));
        let controls = [control.clone()];
        let r = pause_all(&controls, Instant::now() + Duration::from_millis(30));
        assert_eq!(r, Err(5));
        resume_all(&controls);
        assert_eq!(control.state(), RunState::Running);
    }
}
