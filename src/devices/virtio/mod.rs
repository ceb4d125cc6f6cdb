//! virtio devices over the virtio-mmio transport (virtio 1.2, §4.2).
//!
//! The transport ([`mmio::MmioTransport`]) sits on the MMIO bus and is
//! driven by vCPU threads; the devices ([`block::Block`],
//! [`console::Console`]) implement [`VirtioDevice`] and do their queue
//! work on the event loop thread, woken by an ioeventfd per queue.
//! Interrupts leave through an irqfd held by the shared [`Interrupt`].

pub mod block;
pub mod console;
pub mod mmio;
#[cfg(test)]
mod test_utils;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemoryMmap;

/// Why a device refused to start (the transport then sets `NEEDS_RESET`).
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A queue the device needs is not ready, or its rings lie outside
    /// guest memory or are misaligned.
    #[error("virtio queue {0} is not ready or not valid")]
    BadQueue(usize),
    /// The driver wrote a queue size that is zero, not a power of two, or
    /// above the maximum.
    #[error("the driver set an invalid queue size")]
    BadQueueSize,
}

/// The interrupt side shared by a transport and its device: the interrupt
/// status register (ISR), the `NEEDS_RESET` flag and the irqfd.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    irq: EventFd,
}

impl Interrupt {
    /// An interrupt that fires through `irq` (registered as an irqfd).
    pub fn new(irq: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            irq,
        }
    }

    /// The irqfd.
    pub fn irq_fd(&self) -> &EventFd {
        &self.irq
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1) {
            log::error!("virtio: cannot signal the irqfd: {e}");
        }
    }

    /// Signals "used buffer" (ISR bit 0).
    pub fn signal_used_queue(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// Signals "configuration change" (ISR bit 1).
    pub fn signal_config_change(&self) {
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// The device hit an error it cannot recover from: set
    /// `DEVICE_NEEDS_RESET` in the status register and notify the driver
    /// with a configuration change interrupt (virtio 1.2 §2.1.2).
    pub fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            self.signal_config_change();
        }
    }

    /// True once [`Interrupt::set_needs_reset`] was called, until reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// The ISR value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the ISR bits the driver acknowledges.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Back to the power-on state (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

/// A virtio device as its transport sees it.
///
/// The transport configures the queues through [`VirtioDevice::queues_mut`]
/// before `DRIVER_OK`, then calls [`VirtioDevice::activate`]; writing 0 to
/// the status register calls [`VirtioDevice::reset`].
pub trait VirtioDevice: Send {
    /// Device ID (virtio 1.2 §5: 2 is block, 3 console).
    fn device_type(&self) -> u32;
    /// Features the device offers (bit 32 is `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;
    /// Features the driver accepted.
    fn acked_features(&self) -> u64;
    /// Records the features the driver accepted (a subset of
    /// [`VirtioDevice::avail_features`], checked by the transport).
    fn set_acked_features(&mut self, features: u64);
    /// The device's queues.
    fn queues(&self) -> &[Queue];
    /// The device's queues, for the transport to configure.
    fn queues_mut(&mut self) -> &mut [Queue];
    /// One eventfd per queue, written when the driver notifies that queue
    /// (registered as ioeventfds on `QueueNotify`).
    fn queue_events(&self) -> &[EventFd];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device after `DRIVER_OK`.
    fn activate(&mut self) -> Result<(), ActivateError>;
    /// True between a successful activation and the next reset.
    fn is_activated(&self) -> bool;
    /// Returns the device to its power-on state: queues, features,
    /// activation.
    fn reset(&mut self);
}

/// Checks a device's queues at activation (each ready, its rings in guest
/// memory and aligned), sets their `EVENT_IDX` mode from the driver's
/// `acked_features`, then signals `kick` once so that buffers the driver
/// made available before `DRIVER_OK` are served (`device` names it in the
/// log).
pub fn activate_queues(
    queues: &mut [Queue],
    mem: &GuestMemoryMmap,
    acked_features: u64,
    kick: &EventFd,
    device: &str,
) -> Result<(), ActivateError> {
    let event_idx = acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
    for (i, q) in queues.iter_mut().enumerate() {
        if !q.is_valid(mem) {
            return Err(ActivateError::BadQueue(i));
        }
        q.set_event_idx(event_idx);
    }
    if let Err(e) = kick.write(1) {
        log::error!("{device}: cannot kick its queue: {e}");
    }
    Ok(())
}

/// Copies the bytes of `config` at `offset` into `data`; bytes past the
/// end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
