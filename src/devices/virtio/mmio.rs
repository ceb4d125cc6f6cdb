//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): the register
//! window a driver uses to discover a device, negotiate features, set up
//! its queues and read its configuration space.
//!
//! Only modern drivers are accepted: `VIRTIO_F_VERSION_1` must be
//! negotiated or `FEATURES_OK` does not stick. Queue notifications normally
//! go straight to the device's ioeventfd; a `QueueNotify` write that does
//! reach this code (an access KVM did not match) is forwarded to the same
//! eventfd. Registers below 0x100 are 32 bits wide; other widths are
//! ignored (reads return zero).

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueT};

use super::{ActivateError, Interrupt, VirtioDevice};
use crate::devices::bus::BusDevice;

/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// virtio-mmio version 2 (modern).
pub const VERSION: u32 = 2;
/// Vendor ID reported to the driver ("EMBR").
pub const VENDOR_ID: u32 = 0x5242_4d45;

/// Register offsets (virtio 1.2 §4.2.2, table "MMIO Device Register Layout").
pub mod reg {
    /// Magic value, "virt".
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Transport version.
    pub const VERSION: u64 = 0x004;
    /// Device ID.
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor ID.
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features, 32 bits selected by `DEVICE_FEATURES_SEL`.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Selects the device feature word.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, 32 bits selected by `DRIVER_FEATURES_SEL`.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Selects the driver feature word.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Selects the queue the queue registers refer to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// Largest size of the selected queue (0: no such queue).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// Selected queue ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notification: the value is the queue index.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status (ISR).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low 32 bits.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Available ring address, high 32 bits.
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used ring address, low 32 bits.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Used ring address, high 32 bits.
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Shared memory region length, low 32 bits (no regions: all ones).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// Shared memory region length, high 32 bits.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// Configuration generation counter.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<Interrupt>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    bad_queue_size: bool,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .field("queue_sel", &self.queue_sel)
            .finish()
    }
}

impl MmioTransport {
    /// A transport for `device`, sharing `interrupt` with it.
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, interrupt: Arc<Interrupt>) -> Self {
        MmioTransport {
            device,
            interrupt,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            bad_queue_size: false,
        }
    }

    fn device(&self) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status register as the driver reads it.
    pub fn status(&self) -> u32 {
        let needs_reset = if self.interrupt.needs_reset() {
            VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            0
        };
        self.status | needs_reset
    }

    /// Queue registers may change after `FEATURES_OK` and before
    /// `DRIVER_OK` (virtio 1.2 §3.1.1 steps 5-8).
    fn queue_setup_allowed(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED) == 0
    }

    fn with_queue<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> Option<R> {
        let mut dev = self.device();
        let q = dev.queues_mut().get_mut(self.queue_sel as usize)?;
        Some(f(q))
    }

    fn read_queue<R: Default>(&self, f: impl FnOnce(&Queue) -> R) -> R {
        let dev = self.device();
        dev.queues()
            .get(self.queue_sel as usize)
            .map(f)
            .unwrap_or_default()
    }

    fn reset(&mut self) {
        self.device().reset();
        self.interrupt.reset();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.bad_queue_size = false;
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver only ever adds bits (§2.1.2); anything else is ignored.
        if value & self.status != self.status {
            log::warn!(
                "virtio-mmio: driver cleared status bits ({:#x} -> {value:#x}); ignored",
                self.status
            );
            return;
        }
        let new = value & !self.status;
        let mut accepted = value;
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_ok() {
            accepted &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if accepted & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                log::warn!("virtio-mmio: DRIVER_OK before FEATURES_OK; ignored");
                accepted &= !VIRTIO_CONFIG_S_DRIVER_OK;
            } else if let Err(e) = self.activate() {
                log::warn!("virtio-mmio: cannot activate the device: {e}");
                self.interrupt.set_needs_reset();
            }
        }
        self.status = accepted;
    }

    /// `FEATURES_OK` sticks only when the driver needs ACKNOWLEDGE and
    /// DRIVER set, accepted `VIRTIO_F_VERSION_1` and nothing the device
    /// does not offer.
    fn features_ok(&mut self) -> bool {
        let needed = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
        let mut dev = self.device();
        let offered = dev.avail_features();
        let ok = self.status & needed == needed
            && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
            && self.driver_features & !offered == 0;
        if ok {
            dev.set_acked_features(self.driver_features);
        } else {
            log::warn!(
                "virtio-mmio: refusing features {:#x} (offered {offered:#x})",
                self.driver_features
            );
        }
        ok
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        if self.bad_queue_size {
            return Err(ActivateError::BadQueueSize);
        }
        self.device().activate()
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                let negotiating = self.status & VIRTIO_CONFIG_S_DRIVER != 0
                    && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
                if !negotiating {
                    log::warn!("virtio-mmio: driver features written outside negotiation");
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    // Words above 1 hold no feature we know: the driver
                    // must write zero there.
                    _ if v != 0 => self.driver_features |= 1 << 63,
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NOTIFY => {
                let dev = self.device();
                if let Some(evt) = dev.queue_events().get(v as usize) {
                    if let Err(e) = evt.write(1) {
                        log::error!("virtio-mmio: cannot forward a queue notification: {e}");
                    }
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH => self.write_queue_reg(offset, v),
            _ => log::debug!(
                "virtio-mmio: write {v:#x} to read-only or unknown register {offset:#x}"
            ),
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        if !self.queue_setup_allowed() {
            log::warn!(
                "virtio-mmio: queue register {offset:#x} written in status {:#x}; ignored",
                self.status
            );
            return;
        }
        let done = self.with_queue(|q| match offset {
            reg::QUEUE_NUM => {
                // Not a power of two, zero, or above the maximum: the
                // device refuses DRIVER_OK and asks for a reset.
                let size = u16::try_from(v).ok();
                size.and_then(|s| q.try_set_size(s).ok()).is_some()
            }
            reg::QUEUE_READY => {
                q.set_ready(v == 1);
                true
            }
            reg::QUEUE_DESC_LOW => {
                q.set_desc_table_address(Some(v), None);
                true
            }
            reg::QUEUE_DESC_HIGH => {
                q.set_desc_table_address(None, Some(v));
                true
            }
            reg::QUEUE_AVAIL_LOW => {
                q.set_avail_ring_address(Some(v), None);
                true
            }
            reg::QUEUE_AVAIL_HIGH => {
                q.set_avail_ring_address(None, Some(v));
                true
            }
            reg::QUEUE_USED_LOW => {
                q.set_used_ring_address(Some(v), None);
                true
            }
            reg::QUEUE_USED_HIGH => {
                q.set_used_ring_address(None, Some(v));
                true
            }
            _ => true,
        });
        match done {
            Some(true) => {}
            Some(false) => {
                log::warn!("virtio-mmio: invalid queue size {v}");
                self.bad_queue_size = true;
            }
            None => log::warn!("virtio-mmio: queue {} does not exist", self.queue_sel),
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device().device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = self.device().avail_features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self.read_queue(|q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.read_queue(|q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => 0,
            _ => {
                log::debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device().read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::warn!(
                "virtio-mmio: {}-byte read at {offset:#x}; registers are 32-bit",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device().write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!(
                "virtio-mmio: {}-byte write at {offset:#x}; registers are 32-bit",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            log::warn!("virtio-mmio: unaligned write at {offset:#x}");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
