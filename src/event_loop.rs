//! The VMM thread's event loop (event-manager) and the VM's single exit
//! event.
//!
//! Every way a VM stops goes through [`ExitEvent::signal`]: the i8042 reset,
//! `KVM_EXIT_SHUTDOWN` (triple fault), `KVM_EXIT_SYSTEM_EVENT`, vCPU errors
//! and panics, and SIGTERM/SIGINT/SIGHUP (read from a signalfd). The first
//! reason wins. Subscribers: [`ExitWatcher`] (exit eventfd + signalfd) and
//! [`StdinForwarder`] (stdin → COM1 receive FIFO).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::serial::SerialDevice;

/// Signals that stop the VM cleanly.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// Input bytes buffered before ember stops reading stdin.
const STDIN_BUFFER_CAP: usize = 64 * 1024;

/// Event loop errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// eventfd creation failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// Signal mask or signalfd setup failed.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
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
        if let Err(e) = self.0.evt.write(1) {
            log::error!("cannot write the exit event: {e}");
        }
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

/// Blocks [`STOP_SIGNALS`] in this thread (and threads it spawns later)
/// and reads them from a signalfd; the old mask is restored on drop.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
    old_mask: libc::sigset_t,
}

impl SignalFd {
    /// Blocks the stop signals and opens the signalfd.
    pub fn new() -> Result<Self, Error> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `mask` is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut mask) };
        for sig in STOP_SIGNALS {
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

    /// Reads one pending signal number, if any.
    fn read_signal(&self) -> Option<libc::c_int> {
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
        for fd in [self.exit.fd(), self.signals.fd.as_raw_fd()] {
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

/// Forwards stdin bytes to the COM1 receive FIFO as the guest drains it.
/// EOF (or an error) stops watching stdin: nothing spins.
pub struct StdinForwarder {
    serial: Arc<Mutex<SerialDevice>>,
    rx_ready: EventFd,
    pending: VecDeque<u8>,
    watching: bool,
    eof: bool,
}

impl std::fmt::Debug for StdinForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinForwarder")
            .field("pending", &self.pending.len())
            .field("watching", &self.watching)
            .field("eof", &self.eof)
            .finish()
    }
}

const STDIN: RawFd = libc::STDIN_FILENO;

impl StdinForwarder {
    /// A forwarder into `serial`; `rx_ready` is the serial's FIFO-empty event.
    pub fn new(serial: Arc<Mutex<SerialDevice>>, rx_ready: EventFd) -> Self {
        StdinForwarder {
            serial,
            rx_ready,
            pending: VecDeque::new(),
            watching: false,
            eof: false,
        }
    }

    /// Reads once from stdin; returns false at EOF or on error.
    fn read_stdin(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: reading at most buf.len() bytes into `buf`.
        let n = unsafe { libc::read(STDIN, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n > 0 => {
                self.pending.extend(&buf[..n as usize]);
                true
            }
            0 => false,
            _ => {
                let err = std::io::Error::last_os_error();
                matches!(
                    err.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                )
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let n = serial.enqueue(self.pending.make_contiguous());
        self.pending.drain(..n);
    }

    fn update_interest(&mut self, ops: &mut EventOps) {
        let want = !self.eof && self.pending.len() < STDIN_BUFFER_CAP;
        if want && !self.watching {
            match ops.add(Events::new_raw(STDIN, EventSet::IN)) {
                Ok(()) => self.watching = true,
                Err(e) => {
                    // Regular files cannot be polled: read them now.
                    log::debug!("stdin is not pollable ({e}); reading it directly");
                    while self.pending.len() < STDIN_BUFFER_CAP && self.read_stdin() {}
                    self.eof = true;
                }
            }
        } else if !want && self.watching {
            let _ = ops.remove(Events::new_raw(STDIN, EventSet::IN));
            self.watching = false;
        }
    }
}

impl MutEventSubscriber for StdinForwarder {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.rx_ready, EventSet::IN)) {
            log::error!("event loop: cannot watch serial rx: {e}");
        }
        self.update_interest(ops);
        self.flush();
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == STDIN {
            if !self.read_stdin() {
                self.eof = true;
            }
        } else {
            let _ = self.rx_ready.read();
        }
        self.flush();
        self.update_interest(ops);
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

    /// Adds a subscriber (stdin forwarder, later virtio devices).
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
        e.signal(StopReason::TripleFault);
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
    }
}
