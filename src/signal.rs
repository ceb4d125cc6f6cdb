//! Signals read from a signalfd: the stop signals of the event loop and
//! the `SIGIO` of file leases. Blocked on the thread that creates the
//! [`SignalFd`] before any other thread exists, so every later thread
//! inherits the mask and only the signalfd sees them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Signals that stop the VM cleanly.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks every signal on the calling thread: for ember's helper threads
/// (device queues, stdout), so that no process-directed signal is ever
/// delivered to them instead of to the event loop's signalfd.
pub fn block_all_on_this_thread() {
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t owned by this frame.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: a valid mask; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut()) };
    if rc != 0 {
        log::warn!("cannot block signals on a helper thread: error {rc}");
    }
}

/// Blocking signals or opening the signalfd failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up signal handling")]
pub struct Error(#[source] std::io::Error);

/// Blocks a set of signals ([`STOP_SIGNALS`] for the event loop, `SIGIO` for file leases) in
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
            return Err(Error(std::io::Error::from_raw_os_error(rc)));
        }
        // SAFETY: `mask` is valid; -1 asks for a new fd, whose ownership we take.
        let raw = unsafe { libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: restoring the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(Error(err));
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
