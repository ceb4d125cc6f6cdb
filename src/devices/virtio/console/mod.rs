//! virtio-console (virtio 1.2 §5.3): one port, the guest's `hvc0`.
//!
//! [`Console`] is the device: queue 0 is port 0's receiveq (host to guest),
//! queue 1 its transmitq (guest to host); no `MULTIPORT`, so no control
//! queues. Output: [`Console::process_transmit`] runs on the console's own
//! thread ([`super::worker`]), woken by the transmitq's ioeventfd, and
//! writes each buffer to the console sink (ember's stdout, through the
//! bounded [`crate::devices::output::Output`]). Input:
//! [`Console::receive`] puts bytes into the buffers the driver posted on
//! the receiveq; the stdin forwarder (`crate::stdin`) calls it and keeps
//! what does not fit, woken again by the receiveq's ioeventfd (the driver
//! posting buffers).
//!
//! Input waits for the driver's first output after activation. Without
//! `MULTIPORT` the device is not told when the guest's port is ready, and
//! Linux's driver drops input that arrives before its console port is
//! hooked up (`in_intr` finds no port); it cannot print before that point
//! either, so its first output is the earliest safe moment.
//!
//! Offered features: `VERSION_1` and `RING_EVENT_IDX`. Not offered:
//! `SIZE` (Linux reads the size only on a configuration-change interrupt,
//! which races with its port setup), `MULTIPORT`, `EMERG_WRITE`. The
//! configuration space reads as zeros.
//!
//! Hostile chains: a chain is checked whole before any byte moves (every
//! descriptor in the right direction and inside guest memory); a bad one
//! is returned with length 0, and no data moves. Loops end because the
//! chain iterator stops after `queue size` descriptors. A broken queue
//! (available index more than a ring ahead, a head index beyond the
//! queue, an unwritable used ring) sets `DEVICE_NEEDS_RESET`.

use std::io::Write;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::{read_config_bytes, CoreError, DeviceCore, Interrupt, Served, VirtioDevice};
use crate::memory::GuestMemoryMmap;

/// Size of each queue. Linux fills the receiveq with one page per
/// descriptor, so this is also how much input the guest can take at once
/// (128 pages).
pub const QUEUE_SIZE: u16 = 128;
/// Queue index of port 0's receiveq (host to guest).
pub const RX_QUEUE: usize = 0;
/// Queue index of port 0's transmitq (guest to host).
pub const TX_QUEUE: usize = 1;
/// Length of the configuration space (`struct virtio_console_config`:
/// cols, rows, max_nr_ports, emerg_wr), all zero: no feature uses it.
pub const CONFIG_LEN: usize = 12;
/// Bytes copied from guest memory to the sink at a time.
const CHUNK: usize = 4096;

/// Console device errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device's queues or eventfds cannot be created.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The receiveq's eventfd cannot be duplicated.
    #[error("cannot duplicate an eventfd")]
    EventFd(#[source] std::io::Error),
}

/// The virtio-console device.
pub struct Console {
    core: DeviceCore,
    out: Box<dyn Write + Send>,
    /// The driver has sent output since activation: input may flow.
    output_seen: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("core", &self.core)
            .field("output_seen", &self.output_seen)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console whose output goes to `out`.
    pub fn new(
        mem: Arc<GuestMemoryMmap>,
        interrupt: Arc<Interrupt>,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, Error> {
        let features = (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX);
        // The transmit queue is kicked at activation: output queued before
        // DRIVER_OK is served (input waits for output).
        let core = DeviceCore::new(features, &[QUEUE_SIZE; 2], TX_QUEUE, mem, interrupt)?;
        Ok(Console {
            core,
            out,
            output_seen: false,
        })
    }

    /// A second handle on the receiveq's notification eventfd: it fires
    /// when the driver posts receive buffers and at the driver's first
    /// output, so the stdin forwarder knows when to call
    /// [`Console::receive`] again.
    pub fn rx_ready(&self) -> Result<EventFd, Error> {
        self.core
            .queue_event(RX_QUEUE)
            .try_clone()
            .map_err(Error::EventFd)
    }

    /// Writes the available transmit buffers to the sink (at most
    /// `budget`, see [`super::serve_queue`]) and returns the chains with
    /// length 0 (the device writes nothing into them). The first output
    /// after activation lets input flow (see the module docs).
    pub fn process_transmit(&mut self, budget: usize) -> Served {
        let out = &mut self.out;
        let mut used = false;
        let served = self
            .core
            .serve(TX_QUEUE, budget, "virtio-console", |mem, chain| {
                transmit(mem, chain, out);
                used = true;
                0
            });
        if used && !self.output_seen {
            self.output_seen = true;
            // Wake the stdin forwarder for input that waited.
            if let Err(e) = self.core.queue_event(RX_QUEUE).write(1) {
                log::error!("virtio-console: cannot wake the input: {e}");
            }
        }
        served
    }

    /// Puts as much of `input` as fits into the receive buffers the driver
    /// has posted, in order; returns how many bytes it took. When buffers
    /// run out first, notifications are re-enabled so that the driver's
    /// next buffer wakes [`Console::rx_ready`]. Takes nothing before the
    /// driver's first output after activation, or after the device broke.
    pub fn receive(&mut self, input: &[u8]) -> usize {
        if input.is_empty() || !self.core.running() || !self.output_seen {
            return 0;
        }
        let (mem, queue, interrupt) = self.core.memory_and_queue(RX_QUEUE);
        let mut taken = 0;
        let mut used = false;
        let result = (|| -> Result<(), virtio_queue::Error> {
            loop {
                while taken < input.len() {
                    let Some(chain) = queue.iter(mem)?.next() else {
                        break;
                    };
                    let head = chain.head_index();
                    let n = fill(mem, chain, &input[taken..]);
                    queue.add_used(mem, head, n)?;
                    taken += n as usize;
                    used = true;
                }
                // Done, or out of buffers: ask for a notification when the
                // driver adds some, and look once more in case it just did.
                if taken == input.len() || !queue.enable_notification(mem)? {
                    return Ok(());
                }
            }
        })();
        let notify = used && queue.needs_notification(mem).unwrap_or(true);
        if let Err(e) = result {
            log::warn!("virtio-console: broken receiveq ({e}); device needs reset");
            interrupt.set_needs_reset();
        } else if notify {
            interrupt.signal_used_queue();
        }
        taken
    }
}

/// The descriptors of `chain` if every one of them lies in guest memory
/// and is device-writable (`to_guest`) or device-readable (`!to_guest`).
fn checked(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    to_guest: bool,
) -> Option<Vec<Descriptor>> {
    let descs: Vec<Descriptor> = chain.collect();
    let ok = descs.iter().all(|d| {
        d.is_write_only() == to_guest
            && GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize)
    });
    if !ok {
        log::debug!("virtio-console: chain in the wrong direction or outside guest memory");
    }
    ok.then_some(descs)
}

/// Copies a transmit chain to `out`, a chunk at a time. A failing sink
/// (stdout closed) drops the output; the guest is not told.
fn transmit(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    out: &mut Box<dyn Write + Send>,
) {
    let Some(descs) = checked(mem, chain, false) else {
        return;
    };
    let mut buf = [0u8; CHUNK];
    for d in descs {
        let mut done = 0usize;
        let len = d.len() as usize;
        while done < len {
            let n = (len - done).min(CHUNK);
            let Some(addr) = d.addr().0.checked_add(done as u64) else {
                return;
            };
            if mem
                .read_slice(&mut buf[..n], vm_memory::GuestAddress(addr))
                .is_err()
            {
                return;
            }
            if let Err(e) = out.write_all(&buf[..n]) {
                log::debug!("virtio-console: output dropped: {e}");
                return;
            }
            done += n;
        }
    }
}

/// Writes the start of `input` into a receive chain; returns the bytes
/// written (0 for a bad chain, which gets nothing).
fn fill(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>, input: &[u8]) -> u32 {
    let Some(descs) = checked(mem, chain, true) else {
        return 0;
    };
    let mut written = 0usize;
    for d in descs {
        if written == input.len() {
            break;
        }
        let n = (d.len() as usize).min(input.len() - written);
        if mem
            .write_slice(&input[written..written + n], d.addr())
            .is_err()
        {
            break;
        }
        written += n;
    }
    // At most one chain's worth, which the iterator caps below 2^32.
    u32::try_from(written).unwrap_or(u32::MAX)
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }
    fn core(&self) -> &DeviceCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&[0u8; CONFIG_LEN], offset, data);
    }
    fn process_queue(&mut self, index: usize, budget: usize) -> Served {
        match index {
            TX_QUEUE => self.process_transmit(budget),
            // The receiveq's notifications go to the stdin forwarder.
            _ => Served::Done,
        }
    }
    fn worker_queues(&self) -> Vec<usize> {
        vec![TX_QUEUE]
    }
    fn on_reset(&mut self) {
        self.output_seen = false;
    }
}

#[cfg(test)]
mod tests;
