//! The VMM thread's event loop (event-manager) and the VM's single exit
//! event.
//!
//! Every way a VM stops goes through [`ExitEvent::signal`]: the i8042 reset,
//! `KVM_EXIT_SHUTDOWN` (triple fault), `KVM_EXIT_SYSTEM_EVENT`, vCPU errors
//! and panics, and SIGTERM/SIGINT/SIGHUP (read from a signalfd). The first
//! reason wins. Subscribers: [`ExitWatcher`] (exit eventfd + signalfd),
//! [`Deadline`] (`--timeout`, `--boot-timeout`), and, added by `vmm`, the
//! stdin forwarder (`crate::stdin`) and the virtio devices' handlers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use std::time::Duration;
use vmm_sys_util::epoll::EventSet;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::devices::exit_status::Booted;

/// Signals that stop the VM cleanly.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Event loop errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// eventfd creation failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// Signal mask or signalfd setup failed.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    /// timerfd creation or arming failed.
    #[error("cannot set up the --timeout timer")]
    Timer(#[source] vmm_sys_util::errno::Error),
    /// event-manager failed.
    #[error("event loop failed")]
    EventManager(#[source] event_manager::Error),
}

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest asked for a reset (i8042 0xFE, `KVM_SYSTEM_EVENT_RESET`).
    GuestReset,
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// The guest powered off (`KVM_SYSTEM_EVENT_SHUTDOWN`).
    GuestPowerOff,
    /// The guest wrote its exit status to the exit-status port.
    GuestExit(u8),
    /// The guest kernel panicked ("Kernel panic" on the console, then a
    /// reset because of `panic=-1`).
    GuestPanic,
    /// The `--timeout` deadline passed.
    Deadline(std::time::Duration),
    /// The `--boot-timeout` deadline passed before the guest said it booted.
    BootDeadline(std::time::Duration),
    /// ember received a stop signal.
    Signal(libc::c_int),
    /// `KVM_EXIT_INTERNAL_ERROR` (suberror 1 is an emulation failure).
    InternalError {
        /// vCPU index.
        vcpu: u8,
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// Guest RIP at the failure (0 if unknown).
        rip: u64,
    },
    /// `KVM_EXIT_FAIL_ENTRY`.
    FailEntry {
        /// vCPU index.
        vcpu: u8,
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// An exit ember does not handle.
    UnhandledExit {
        /// vCPU index.
        vcpu: u8,
        /// Description.
        what: String,
    },
    /// `KVM_RUN` failed.
    RunFailed {
        /// vCPU index.
        vcpu: u8,
        /// errno.
        errno: i32,
    },
    /// A vCPU thread panicked.
    VcpuPanic {
        /// vCPU index.
        vcpu: u8,
    },
}

impl StopReason {
    /// True for a stop the guest or user asked for (not a failure).
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            StopReason::GuestReset
                | StopReason::TripleFault
                | StopReason::GuestPowerOff
                | StopReason::GuestExit(_)
                | StopReason::Signal(_)
        )
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::GuestReset => write!(f, "guest reset"),
            StopReason::TripleFault => write!(f, "guest triple fault (reset)"),
            StopReason::GuestPowerOff => write!(f, "guest powered off"),
            StopReason::GuestExit(n) => write!(f, "guest reported exit status {n}"),
            StopReason::GuestPanic => write!(f, "guest kernel panic"),
            StopReason::Deadline(d) => write!(
                f,
                "timed out: the guest was still running after --timeout {}s",
                d.as_secs()
            ),
            StopReason::BootDeadline(d) => write!(
                f,
                "boot timed out: the guest had not reported booting after --boot-timeout {}s",
                d.as_secs()
            ),
            StopReason::Signal(s) => write!(f, "stopped by signal {s}"),
            StopReason::InternalError {
                vcpu,
                suberror: 1,
                rip,
            } => write!(
                f,
                "vCPU {vcpu}: KVM emulation failure (internal error, suberror 1) at rip {rip:#x}"
            ),
            StopReason::InternalError {
                vcpu,
                suberror,
                rip,
            } => write!(
                f,
                "vCPU {vcpu}: KVM internal error (suberror {suberror}) at rip {rip:#x}"
            ),
            StopReason::FailEntry { vcpu, reason } => {
                write!(
                    f,
                    "vCPU {vcpu}: KVM failed to enter the guest (reason {reason:#x})"
                )
            }
            StopReason::UnhandledExit { vcpu, what } => {
                write!(f, "vCPU {vcpu}: unhandled KVM exit: {what}")
            }
            StopReason::RunFailed { vcpu, errno } => write!(
                f,
                "vCPU {vcpu}: KVM_RUN failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            StopReason::VcpuPanic { vcpu } => write!(f, "vCPU {vcpu} thread panicked"),
        }
    }
}

struct ExitInner {
    evt: EventFd,
    reason: Mutex<Option<StopReason>>,
    signalled: AtomicBool,
}

/// The VM's one exit event: an eventfd plus the first stop reason.
#[derive(Clone)]
pub struct ExitEvent(Arc<ExitInner>);

impl std::fmt::Debug for ExitEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ExitEvent").field(&self.reason()).finish()
    }
}

impl ExitEvent {
    /// A new, unsignalled exit event.
    pub fn new() -> Result<Self, Error> {
        let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd)?;
        Ok(ExitEvent(Arc::new(ExitInner {
            evt,
            reason: Mutex::new(None),
            signalled: AtomicBool::new(false),
        })))
    }

    /// Records `reason` (unless one is already recorded) and wakes the loop.
    pub fn signal(&self, reason: StopReason) {
        {
            let mut slot = self.0.reason.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        self.0.signalled.store(true, Ordering::SeqCst);
        if let Err(e) = self.0.evt.write(1) {
            log::error!("cannot write the exit event: {e}");
        }
    }

    /// True once a stop reason is recorded: cheap enough for the vCPU loop
    /// to check after every exit, so the vCPU that wrote the exit-status
    /// port or reset the VM never re-enters the guest.
    pub fn is_signalled(&self) -> bool {
        self.0.signalled.load(Ordering::SeqCst)
    }

    /// The recorded stop reason, if any.
    pub fn reason(&self) -> Option<StopReason> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fd(&self) -> RawFd {
        self.0.evt.as_raw_fd()
    }

    fn drain(&self) {
        let _ = self.0.evt.read();
    }
}

/// Blocks a set of signals ([`STOP_SIGNALS`] for the [`ExitWatcher`]) in
/// this thread (and threads it spawns later) and reads them from a
/// signalfd; the old mask is restored on drop.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
    old_mask: libc::sigset_t,
}

impl SignalFd {
    /// Blocks `signals` and opens the signalfd.
    pub fn new(signals: &[libc::c_int]) -> Result<Self, Error> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `mask` is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut mask) };
        for &sig in signals {
            // SAFETY: `mask` is initialised and `sig` a valid signal number.
            unsafe { libc::sigaddset(&mut mask, sig) };
        }
        // SAFETY: both pointers are valid sigset_t values.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, &mut old_mask) };
        if rc != 0 {
            return Err(Error::Signals(std::io::Error::from_raw_os_error(rc)));
        }
        // SAFETY: `mask` is valid; -1 asks for a new fd, whose ownership we take.
        let raw = unsafe { libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: restoring the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(Error::Signals(err));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(SignalFd { fd, old_mask })
    }

    /// The signalfd, for an event loop to watch.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one pending signal number, if any.
    pub fn read_signal(&self) -> Option<libc::c_int> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading at most `size` bytes into `info`, which is that large.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (n == size as isize).then_some(info.ssi_signo as libc::c_int)
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// Watches the exit eventfd and the signalfd.
#[derive(Debug)]
pub struct ExitWatcher {
    exit: ExitEvent,
    signals: SignalFd,
}

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.exit.fd(), self.signals.fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                log::error!("event loop: cannot watch fd {fd}: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.exit.fd() {
            self.exit.drain();
        } else if let Some(sig) = self.signals.read_signal() {
            log::info!("received signal {sig}, stopping the VM");
            self.exit.signal(StopReason::Signal(sig));
        }
    }
}

/// Stops the VM with [`StopReason::Deadline`] when a timerfd fires, or,
/// for a boot deadline, with [`StopReason::BootDeadline`] unless the guest
/// said it booted by then.
#[derive(Debug)]
pub struct Deadline {
    timer: TimerFd,
    after: Duration,
    exit: ExitEvent,
    boot: Option<Booted>,
}

impl Deadline {
    /// A run deadline `after` from now.
    pub fn new(after: Duration, exit: ExitEvent) -> Result<Self, Error> {
        let mut timer = TimerFd::new().map_err(Error::Timer)?;
        timer.reset(after, None).map_err(Error::Timer)?;
        Ok(Deadline {
            timer,
            after,
            exit,
            boot: None,
        })
    }

    /// A boot deadline `after` from now, met once `booted` is set.
    pub fn boot(after: Duration, exit: ExitEvent, booted: Booted) -> Result<Self, Error> {
        Ok(Deadline {
            boot: Some(booted),
            ..Deadline::new(after, exit)?
        })
    }
}

impl MutEventSubscriber for Deadline {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("event loop: cannot watch the deadline timer: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        match &self.boot {
            None => self.exit.signal(StopReason::Deadline(self.after)),
            Some(booted) if !booted.get() => self.exit.signal(StopReason::BootDeadline(self.after)),
            Some(_) => {}
        }
    }
}

/// The VMM thread's loop.
pub struct EventLoop {
    manager: EventManager<Box<dyn MutEventSubscriber + Send>>,
    exit: ExitEvent,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("exit", &self.exit)
            .finish()
    }
}

impl EventLoop {
    /// A loop that ends when `exit` is signalled; watches `signals`.
    pub fn new(exit: ExitEvent, signals: SignalFd) -> Result<Self, Error> {
        let mut manager: EventManager<Box<dyn MutEventSubscriber + Send>> =
            EventManager::new().map_err(Error::EventManager)?;
        manager.add_subscriber(Box::new(ExitWatcher {
            exit: exit.clone(),
            signals,
        }));
        Ok(EventLoop { manager, exit })
    }

    /// Adds a subscriber (the stdin forwarder, virtio device handlers).
    pub fn add(&mut self, subscriber: Box<dyn MutEventSubscriber + Send>) {
        self.manager.add_subscriber(subscriber);
    }

    /// Runs until the exit event has a reason; returns it.
    pub fn run(&mut self) -> Result<StopReason, Error> {
        loop {
            if let Some(reason) = self.exit.reason() {
                return Ok(reason);
            }
            self.manager.run().map_err(Error::EventManager)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let e = ExitEvent::new().unwrap();
        assert_eq!(e.reason(), None);
        assert!(!e.is_signalled());
        e.signal(StopReason::TripleFault);
        assert!(e.is_signalled());
        e.clone().signal(StopReason::GuestReset);
        assert_eq!(e.reason(), Some(StopReason::TripleFault));
        assert!(StopReason::TripleFault.is_clean());
        assert!(!StopReason::VcpuPanic { vcpu: 0 }.is_clean());
        let msg = StopReason::InternalError {
            vcpu: 1,
            suberror: 1,
            rip: 0x10_0000,
        }
        .to_string();
        assert!(msg.contains("emulation failure"), "{msg}");
        assert!(msg.ends_with("at rip 0x100000"), "{msg}");
        assert!(StopReason::GuestExit(3).is_clean());
        assert!(!StopReason::GuestPanic.is_clean());
        assert!(!StopReason::Deadline(Duration::from_secs(5)).is_clean());
    }

    #[test]
    fn deadline_fires() {
        let exit = ExitEvent::new().unwrap();
        let signals = SignalFd::new(&STOP_SIGNALS).unwrap();
        let mut el = EventLoop::new(exit.clone(), signals).unwrap();
        el.add(Box::new(
            Deadline::new(Duration::from_millis(20), exit.clone()).unwrap(),
        ));
        assert_eq!(
            el.run().unwrap(),
            StopReason::Deadline(Duration::from_millis(20))
        );
    }

    #[test]
    fn boot_deadline_only_before_booting() {
        for booted_early in [false, true] {
            let exit = ExitEvent::new().unwrap();
            let signals = SignalFd::new(&STOP_SIGNALS).unwrap();
            let mut el = EventLoop::new(exit.clone(), signals).unwrap();
            let booted = Booted::default();
            if booted_early {
                let mut dev =
                    crate::devices::exit_status::ExitStatus::new(exit.clone(), booted.clone());
                crate::devices::bus::BusDevice::write(&mut dev, 1, &[0]);
            }
            let boot = Deadline::boot(Duration::from_millis(10), exit.clone(), booted).unwrap();
            el.add(Box::new(boot));
            let run = Deadline::new(Duration::from_millis(40), exit.clone()).unwrap();
            el.add(Box::new(run));
            let expected = match booted_early {
                false => StopReason::BootDeadline(Duration::from_millis(10)),
                true => StopReason::Deadline(Duration::from_millis(40)),
            };
            assert_eq!(el.run().unwrap(), expected);
        }
    }
}
