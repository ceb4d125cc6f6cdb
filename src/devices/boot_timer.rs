//! The boot timer: a guest writes [`BOOT_TIMER_MAGIC`] (123) to mark "init
//! reached" on the [`Timeline`]. It sits at MMIO
//! [`crate::layout::BOOT_TIMER_MMIO_ADDR`] (Firecracker's current address)
//! and at port [`crate::layout::BOOT_TIMER_PORT`] (its old one), so a guest
//! written for either works. Reads return zero.

use super::bus::BusDevice;
use crate::layout::BOOT_TIMER_MAGIC;
use crate::timeline::{Phase, Timeline};

/// The boot-timer device.
#[derive(Debug)]
pub struct BootTimer {
    timeline: Timeline,
}

impl BootTimer {
    /// A boot timer that marks [`Phase::InitReached`] on `timeline`.
    pub fn new(timeline: Timeline) -> Self {
        BootTimer { timeline }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_TIMER_MAGIC) {
            self.timeline.mark(Phase::InitReached);
            if let Some(t) = self.timeline.get(Phase::InitReached) {
                log::info!("guest boot timer: init reached {} us after start", t / 1000);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_123_at_offset_0_marks() {
        let t = Timeline::start();
        let mut dev = BootTimer::new(t.clone());
        dev.write(0, &[122]);
        dev.write(1, &[123]);
        assert!(!t.is_marked(Phase::InitReached));
        dev.write(0, &[123, 0, 0, 0]);
        assert!(t.is_marked(Phase::InitReached));
        let mut d = [0xff; 4];
        dev.read(0, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
