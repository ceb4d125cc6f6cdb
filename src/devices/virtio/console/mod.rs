//! virtio-console (virtio 1.2 §5.3): one port, the guest's `hvc0`.
//!
//! [`Console`] is the device: queue 0 is port 0's receiveq (host to guest),
//! queue 1 its transmitq (guest to host); no `MULTIPORT`, so no control
//! queues. Output: [`Console::process_transmit`] runs on the event loop
//! thread through [`ConsoleHandler`], woken by the transmitq's ioeventfd,
//! and writes each buffer to the console sink (ember's stdout). Input:
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
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{activate_queues, read_config_bytes, ActivateError, Interrupt, VirtioDevice};
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
/// Event-manager key of the transmitq's ioeventfd.
pub const TX_EVENT: u32 = 1;
/// Bytes copied from guest memory to the sink at a time.
const CHUNK: usize = 4096;

/// Console device errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A queue's eventfd cannot be created or duplicated.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// virtio-queue rejected the queue size (a bug).
    #[error("cannot create the virtio queue")]
    Queue(#[source] virtio_queue::Error),
}

/// The virtio-console device.
pub struct Console {
    avail_features: u64,
    acked_features: u64,
    queues: [Queue; 2],
    queue_events: [EventFd; 2],
    interrupt: Arc<Interrupt>,
    mem: Arc<GuestMemoryMmap>,
    out: Box<dyn Write + Send>,
    activated: bool,
    /// The driver has sent output since activation: input may flow.
    output_seen: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("acked_features", &self.acked_features)
            .field("activated", &self.activated)
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
        let evt = || EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd);
        let queue = || Queue::new(QUEUE_SIZE).map_err(Error::Queue);
        Ok(Console {
            avail_features: (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX),
            acked_features: 0,
            queues: [queue()?, queue()?],
            queue_events: [evt()?, evt()?],
            interrupt,
            mem,
            out,
            activated: false,
            output_seen: false,
        })
    }

    /// A second handle on the receiveq's notification eventfd: it fires
    /// when the driver posts receive buffers and at the driver's first
    /// output, so the stdin forwarder knows when to call
    /// [`Console::receive`] again.
    pub fn rx_ready(&self) -> Result<EventFd, Error> {
        self.queue_events[RX_QUEUE]
            .try_clone()
            .map_err(Error::EventFd)
    }

    fn running(&self) -> bool {
        self.activated && !self.interrupt.needs_reset()
    }

    fn broken(&self, what: &str, e: virtio_queue::Error) {
        log::warn!("virtio-console: broken {what} ({e}); device needs reset");
        self.interrupt.set_needs_reset();
    }

    /// Writes every available transmit buffer to the sink and returns the
    /// chains (length 0: the device writes nothing into them); disables
    /// notifications meanwhile and looks again after re-enabling them, and
    /// interrupts the driver once if it asked for it. The first output
    /// after activation lets input flow (see the module docs).
    pub fn process_transmit(&mut self) {
        if !self.running() {
            return;
        }
        let mem: &GuestMemoryMmap = &self.mem;
        let queue = &mut self.queues[TX_QUEUE];
        let out = &mut self.out;
        let mut used = false;
        let result = (|| -> Result<(), virtio_queue::Error> {
            loop {
                queue.disable_notification(mem)?;
                while let Some(chain) = queue.iter(mem)?.next() {
                    let head = chain.head_index();
                    transmit(mem, chain, out);
                    queue.add_used(mem, head, 0)?;
                    used = true;
                }
                if !queue.enable_notification(mem)? {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = result {
            self.broken("transmitq", e);
            return;
        }
        if used && queue.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_used_queue();
        }
        if used && !self.output_seen {
            self.output_seen = true;
            // Wake the stdin forwarder for input that waited.
            if let Err(e) = self.queue_events[RX_QUEUE].write(1) {
                log::error!("virtio-console: cannot wake the input: {e}");
            }
        }
    }

    /// Puts as much of `input` as fits into the receive buffers the driver
    /// has posted, in order; returns how many bytes it took. When buffers
    /// run out first, notifications are re-enabled so that the driver's
    /// next buffer wakes [`Console::rx_ready`]. Takes nothing before the
    /// driver's first output after activation, or after the device broke.
    pub fn receive(&mut self, input: &[u8]) -> usize {
        if input.is_empty() || !self.running() || !self.output_seen {
            return 0;
        }
        let mem: &GuestMemoryMmap = &self.mem;
        let queue = &mut self.queues[RX_QUEUE];
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
            self.broken("receiveq", e);
        } else if notify {
            self.interrupt.signal_used_queue();
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
    fn avail_features(&self) -> u64 {
        self.avail_features
    }
    fn acked_features(&self) -> u64 {
        self.acked_features
    }
    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }
    fn queues(&self) -> &[Queue] {
        &self.queues
    }
    fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.queues
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&[0u8; CONFIG_LEN], offset, data);
    }
    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // emerg_wr is writable only with EMERG_WRITE, which is not offered.
        log::debug!("virtio-console: ignoring config write at {offset:#x}");
    }
    fn activate(&mut self) -> Result<(), ActivateError> {
        // The transmit queue is kicked: output queued before DRIVER_OK is
        // served (input waits for output).
        activate_queues(
            &mut self.queues,
            &self.mem,
            self.acked_features,
            &self.queue_events[TX_QUEUE],
            "virtio-console",
        )?;
        self.activated = true;
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.activated
    }
    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.acked_features = 0;
        self.activated = false;
        self.output_seen = false;
    }
}

/// The event-loop side of a [`Console`]: drains the transmitq's ioeventfd
/// and writes the output. (The receiveq's ioeventfd belongs to the stdin
/// forwarder, see [`Console::rx_ready`].)
#[derive(Debug)]
pub struct ConsoleHandler {
    device: Arc<Mutex<Console>>,
}

impl ConsoleHandler {
    /// A handler for `device`.
    pub fn new(device: Arc<Mutex<Console>>) -> Self {
        ConsoleHandler { device }
    }
}

impl MutEventSubscriber for ConsoleHandler {
    fn init(&mut self, ops: &mut EventOps) {
        let dev = self.device.lock().unwrap_or_else(|p| p.into_inner());
        let evt = &dev.queue_events[TX_QUEUE];
        if let Err(e) = ops.add(Events::with_data(evt, TX_EVENT, EventSet::IN)) {
            log::error!("virtio-console: cannot watch the transmit queue: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let mut dev = self.device.lock().unwrap_or_else(|p| p.into_inner());
        match events.data() {
            TX_EVENT => {
                let _ = dev.queue_events[TX_QUEUE].read();
                dev.process_transmit();
            }
            other => log::warn!("virtio-console: unexpected event {other}"),
        }
    }
}

#[cfg(test)]
mod tests;
