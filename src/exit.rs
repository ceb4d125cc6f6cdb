//! Why a VM stops, and the one event every stop goes through.
//!
//! Every way a VM stops goes through [`ExitEvent::signal`]: the i8042
//! reset, the ACPI sleep and reset registers, the exit-status port,
//! `KVM_EXIT_SHUTDOWN` (triple fault), `KVM_EXIT_SYSTEM_EVENT`, vCPU errors
//! and panics, deadlines and stop signals. The first reason wins. This
//! module sits at the bottom of the layers (see `docs/ARCHITECTURE.md`):
//! devices and vCPUs signal it, the event loop and the [`crate::vm::Vm`]
//! wait on it.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

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
    pub fn new() -> std::io::Result<Self> {
        let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
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

    /// The eventfd, for the event loop to watch.
    pub fn fd(&self) -> RawFd {
        self.0.evt.as_raw_fd()
    }

    /// Clears the eventfd after a wake-up.
    pub fn drain(&self) {
        let _ = self.0.evt.read();
    }
}

/// Set once the guest writes the "booted" port
/// ([`crate::devices::exit_status`]); read by `--boot-timeout`.
#[derive(Debug, Clone, Default)]
pub struct Booted(Arc<AtomicBool>);

impl Booted {
    /// True once the guest said it booted.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The guest said it booted.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
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
        let deadline = StopReason::Deadline(std::time::Duration::from_secs(5));
        assert!(!deadline.is_clean());
    }
}
