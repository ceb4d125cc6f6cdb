//! Raw mode for a terminal on stdin, restored on every exit path: normal
//! return and errors (the guard's `Drop`), stop signals (handled by the
//! event loop, which then returns normally), and panics (a panic hook that
//! restores the saved settings before the default hook runs, which also
//! covers `panic = "abort"` builds).
//!
//! When stdin is not a terminal nothing is touched.

use std::os::fd::RawFd;

const STDIN: RawFd = libc::STDIN_FILENO;

/// Terminal errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// tcgetattr/tcsetattr failed.
    #[error("cannot switch the terminal to raw mode")]
    Termios(#[source] std::io::Error),
}

/// True if stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(STDIN) == 1 }
}

/// Restores the saved settings when dropped.
#[derive(Debug)]
pub struct RawMode {
    saved: libc::termios,
}

fn restore(saved: &libc::termios) {
    // SAFETY: `saved` is a termios obtained from tcgetattr on stdin.
    unsafe { libc::tcsetattr(STDIN, libc::TCSANOW, saved) };
}

/// The raw-mode settings derived from `t`: no echo, no line editing, no
/// signal keys (Ctrl-C goes to the guest), no input translation; output
/// processing is kept.
pub fn raw_settings(mut t: libc::termios) -> libc::termios {
    t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    t.c_iflag &= !(libc::ICRNL | libc::IXON | libc::INLCR | libc::IGNCR | libc::BRKINT);
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    t
}

impl RawMode {
    /// Switches stdin to raw mode if it is a terminal.
    pub fn enter() -> Result<Option<Self>, Error> {
        if !stdin_is_tty() {
            return Ok(None);
        }
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(STDIN, &mut saved) } != 0 {
            return Err(Error::Termios(std::io::Error::last_os_error()));
        }
        let raw = raw_settings(saved);
        // SAFETY: `raw` is a valid termios.
        if unsafe { libc::tcsetattr(STDIN, libc::TCSANOW, &raw) } != 0 {
            return Err(Error::Termios(std::io::Error::last_os_error()));
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore(&saved);
            previous(info);
        }));
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore(&self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_flags() {
        // SAFETY: termios is plain data.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_lflag = libc::ICANON | libc::ECHO | libc::ISIG;
        t.c_iflag = libc::ICRNL;
        t.c_oflag = libc::OPOST;
        let r = raw_settings(t);
        assert_eq!(r.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert_eq!(r.c_iflag & libc::ICRNL, 0);
        assert_eq!(r.c_oflag, libc::OPOST);
    }
}
