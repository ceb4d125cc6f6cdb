//! The ACPI power-management registers of a hardware-reduced platform
//! (ACPI 6.5 §4.8.3.7 "Sleep Control and Status Registers", §4.8.3.6
//! "Reset Register"): three one-byte I/O ports from
//! [`crate::layout::ACPI_PM_PORT`], announced by the FADT
//! ([`crate::acpi`]).
//!
//! * Sleep control (offset 0): writing `SLP_EN` (bit 5) with `SLP_TYP`
//!   (bits 2-4) = [`S5_SLEEP_TYPE`], the value of the DSDT's `_S5_`
//!   package, powers the VM off: [`StopReason::GuestPowerOff`] on the exit
//!   event, the same path as the i8042 reset. Any other sleep type wakes
//!   up at once (`WAK_STS` is set), so a guest waiting for the wake never
//!   spins.
//! * Sleep status (offset 1): reads `WAK_STS` (bit 7); writing it clears it.
//! * Reset (offset 2): writing [`RESET_VALUE`] resets the VM
//!   ([`StopReason::GuestReset`], like the i8042 `0xfe` command).
//!
//! Linux writes these in `acpi_hw_extended_sleep` (power-off) and
//! `acpi_reset` (`reboot=a`, or the first reboot method it tries).

use super::bus::BusDevice;
use crate::exit::{ExitEvent, StopReason};

/// `SLP_TYP` of the S5 (soft-off) state: the `_S5_` package in the DSDT
/// holds this value, and only this value with `SLP_EN` powers off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The FADT `RESET_VALUE`: written to the reset register, it resets the VM.
pub const RESET_VALUE: u8 = 1;
/// Sleep control register: `SLP_EN`.
pub const SLP_EN: u8 = 1 << 5;
/// Sleep control register: position of `SLP_TYP`.
pub const SLP_TYP_SHIFT: u8 = 2;
/// Sleep control register: `SLP_TYP` mask (3 bits).
pub const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
/// Sleep status register: `WAK_STS`.
pub const WAK_STS: u8 = 1 << 7;

/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the reset register.
pub const RESET_OFFSET: u64 = 2;

/// The sleep control value that powers off: `SLP_TYP` = S5 and `SLP_EN`.
pub const fn s5_sleep_control() -> u8 {
    (S5_SLEEP_TYPE << SLP_TYP_SHIFT) | SLP_EN
}

/// The sleep control, sleep status and reset registers.
#[derive(Debug)]
pub struct AcpiPm {
    exit: ExitEvent,
    wake_status: bool,
}

impl AcpiPm {
    /// Registers that stop the VM through `exit`.
    pub fn new(exit: ExitEvent) -> Self {
        AcpiPm {
            exit,
            wake_status: false,
        }
    }

    fn sleep_control(&mut self, value: u8) {
        if value & SLP_EN == 0 {
            return;
        }
        let sleep_type = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if sleep_type == S5_SLEEP_TYPE {
            log::info!("guest powered off (ACPI S5)");
            self.exit.signal(StopReason::GuestPowerOff);
        } else {
            // Only _S5_ is declared; wake at once rather than leave the
            // guest polling WAK_STS forever.
            log::debug!("ACPI sleep type {sleep_type} requested: not supported, waking");
            self.wake_status = true;
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (SLEEP_STATUS_OFFSET, Some(first)) = (offset, data.first_mut()) {
            if self.wake_status {
                *first = WAK_STS;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            SLEEP_CONTROL_OFFSET => self.sleep_control(value),
            SLEEP_STATUS_OFFSET if value & WAK_STS != 0 => self.wake_status = false,
            RESET_OFFSET if value == RESET_VALUE => {
                log::info!("guest reset through the ACPI reset register");
                self.exit.signal(StopReason::GuestReset);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (ExitEvent, AcpiPm) {
        let exit = ExitEvent::new().unwrap();
        (exit.clone(), AcpiPm::new(exit))
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        assert_eq!(s5_sleep_control(), 0x34);
        let (exit, mut dev) = device();
        dev.write(SLEEP_CONTROL_OFFSET, &[s5_sleep_control()]);
        assert_eq!(exit.reason(), Some(StopReason::GuestPowerOff));
        assert!(exit.is_signalled());
    }

    #[test]
    fn other_sleep_control_values_do_not_stop() {
        let (exit, mut dev) = device();
        // S5 type without SLP_EN, SLP_EN alone (type 0), every other type
        // with SLP_EN, and stray bits around a non-S5 type.
        let mut values = vec![S5_SLEEP_TYPE << SLP_TYP_SHIFT, SLP_EN, 0, !SLP_EN];
        values.extend(
            (0..8u8)
                .filter(|&t| t != S5_SLEEP_TYPE)
                .map(|t| (t << SLP_TYP_SHIFT) | SLP_EN),
        );
        values.push((3 << SLP_TYP_SHIFT) | SLP_EN | 0x03 | 0xc0);
        for v in values {
            dev.write(SLEEP_CONTROL_OFFSET, &[v]);
            assert_eq!(exit.reason(), None, "value {v:#x} stopped the VM");
        }
        // The same S5 value at the wrong register does nothing either.
        dev.write(SLEEP_STATUS_OFFSET, &[s5_sleep_control()]);
        dev.write(RESET_OFFSET, &[s5_sleep_control()]);
        dev.write(SLEEP_CONTROL_OFFSET, &[]);
        assert_eq!(exit.reason(), None);
        // Extra bytes of a wider write are ignored: the low byte counts.
        dev.write(SLEEP_CONTROL_OFFSET, &[s5_sleep_control(), 0, 0, 0]);
        assert_eq!(exit.reason(), Some(StopReason::GuestPowerOff));
    }

    #[test]
    fn unsupported_sleep_wakes_at_once() {
        let (exit, mut dev) = device();
        let mut status = [0xffu8];
        dev.read(SLEEP_STATUS_OFFSET, &mut status);
        assert_eq!(status, [0]);
        // Linux: clear WAK_STS, write SLP_TYP|SLP_EN, poll WAK_STS.
        dev.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        dev.write(SLEEP_CONTROL_OFFSET, &[(3 << SLP_TYP_SHIFT) | SLP_EN]);
        dev.read(SLEEP_STATUS_OFFSET, &mut status);
        assert_eq!(status, [WAK_STS]);
        dev.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        dev.read(SLEEP_STATUS_OFFSET, &mut status);
        assert_eq!(status, [0]);
        let mut control = [0xffu8; 2];
        dev.read(SLEEP_CONTROL_OFFSET, &mut control);
        assert_eq!(control, [0, 0]);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn reset_register() {
        let (exit, mut dev) = device();
        for v in [0u8, 2, 0x06, 0xfe, 0xff] {
            dev.write(RESET_OFFSET, &[v]);
        }
        assert_eq!(exit.reason(), None);
        dev.write(RESET_OFFSET, &[RESET_VALUE]);
        assert_eq!(exit.reason(), Some(StopReason::GuestReset));
    }
}
