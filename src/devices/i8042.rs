//! The i8042 keyboard controller, reduced to what guests use on a microVM:
//! the "pulse reset line" command (0xFE written to port 0x64), which stops
//! the VM through the same exit event as a triple fault.
//!
//! There is no keyboard behind it, so the status register reads
//! [`STATUS_NO_CONTROLLER`]: output buffer full, input buffer empty. Linux's
//! i8042 driver then drains 16 bytes, decides "No controller found" and
//! moves on in microseconds; with a status of 0 it would wait 500 ms for a
//! reply to its "read CTR" command that never comes. Linux's reboot path
//! (`reboot=k`) waits for the input buffer to be empty before writing 0xFE,
//! which it is at once.

use vm_superio::I8042Device;

use super::bus::BusDevice;
use crate::exit::{ExitEvent, StopReason};

/// Status register value: OBF (bit 0) set, IBF (bit 1) clear.
pub const STATUS_NO_CONTROLLER: u8 = 0x01;
/// Offset of the status/command port (0x64) from the data port (0x60).
const STATUS_OFFSET: u64 = 4;

/// Trigger that reports a guest reset on the VM's exit event.
#[derive(Debug, Clone)]
pub struct ResetTrigger(pub ExitEvent);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.signal(StopReason::GuestReset);
        Ok(())
    }
}

/// The i8042 on the PIO bus at 0x60..=0x64.
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<ResetTrigger>,
}

impl I8042 {
    /// An i8042 whose reset command signals `exit`.
    pub fn new(exit: ExitEvent) -> Self {
        I8042 {
            inner: I8042Device::new(ResetTrigger(exit)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset == STATUS_OFFSET {
            STATUS_NO_CONTROLLER
        } else {
            self.inner.read(offset as u8)
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(value), Ok(offset)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.inner.write(offset, *value) {
                log::warn!("i8042: cannot signal reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_exit() {
        let exit = ExitEvent::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        dev.write(0, &[0xfe]); // data port: ignored
        dev.write(4, &[0xaa]); // other command: ignored
        assert_eq!(exit.reason(), None);
        dev.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(StopReason::GuestReset));
    }

    #[test]
    fn status_says_no_controller_but_ready_for_commands() {
        let exit = ExitEvent::new().unwrap();
        let mut dev = I8042::new(exit);
        let mut status = [0u8];
        dev.read(4, &mut status);
        assert_eq!(status[0] & 0x01, 0x01, "output buffer full");
        assert_eq!(
            status[0] & 0x02,
            0,
            "input buffer empty: reset can be written"
        );
        let mut data = [0xffu8];
        dev.read(0, &mut data);
        assert_eq!(data[0], 0);
    }
}
