//! The exit-status device: two ports from
//! [`crate::layout::EXIT_STATUS_PORT`] through which the guest reports its
//! exit status and that it has booted. A write of any width at offset 0
//! stops the VM with [`StopReason::GuestExit`] carrying the low byte; a
//! write at offset 1 sets the [`Booted`] flag (which ends
//! `--boot-timeout`). Reads return 0. Protocol and guest helper:
//! `docs/RUN.md`.

use crate::devices::bus::BusDevice;
pub use crate::exit::Booted;
use crate::exit::{ExitEvent, StopReason};

/// The exit-status ports.
#[derive(Debug)]
pub struct ExitStatus {
    exit: ExitEvent,
    booted: Booted,
}

impl ExitStatus {
    /// A device that stops the VM through `exit` and sets `booted`.
    pub fn new(exit: ExitEvent, booted: Booted) -> Self {
        ExitStatus { exit, booted }
    }
}

impl BusDevice for ExitStatus {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.first()) {
            (0, Some(&status)) => {
                log::info!("guest reported exit status {status}");
                self.exit.signal(StopReason::GuestExit(status));
            }
            (1, Some(_)) => {
                log::info!("guest reported it booted");
                self.booted.set();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_stops_with_the_low_byte() {
        let exit = ExitEvent::new().unwrap();
        let booted = Booted::default();
        let mut dev = ExitStatus::new(exit.clone(), booted.clone());
        let mut buf = [0xffu8; 4];
        dev.read(0, &mut buf);
        assert_eq!(buf, [0; 4]);
        assert_eq!(exit.reason(), None);
        assert!(!booted.get());
        dev.write(1, &[0]);
        assert!(booted.get());
        assert_eq!(exit.reason(), None);
        dev.write(0, &[7, 1, 0, 0]);
        assert_eq!(exit.reason(), Some(StopReason::GuestExit(7)));
        dev.write(0, &[9]);
        assert_eq!(exit.reason(), Some(StopReason::GuestExit(7)));
    }
}
