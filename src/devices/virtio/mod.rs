//! virtio devices over the virtio-mmio transport (virtio 1.2, §4.2).
//!
//! The transport ([`mmio::MmioTransport`]) sits on the MMIO bus and is
//! driven by vCPU threads; the devices ([`block::Block`],
//! [`console::Console`]) implement [`VirtioDevice`] on a shared
//! [`DeviceCore`] (features, queues, activation, reset) and do their queue
//! work on a thread of their own ([`worker`]), woken by an ioeventfd per
//! queue, through [`serve_queue`] (notification suppression, a bounded
//! budget per call, broken-queue detection). Interrupts leave through an
//! irqfd held by the shared [`Interrupt`].
//!
//! A new device: a file beside `block/` and `console/` with a struct
//! holding a [`DeviceCore`], its `impl VirtioDevice` (type, config space,
//! `process_queue`), and one creation function in
//! [`crate::device_manager`] that gives it a slot of the machine plan.

pub mod block;
pub mod console;
pub mod mmio;
#[cfg(test)]
mod test_utils;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
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

/// What every virtio device shares, kept by [`DeviceCore`] and served by
/// the provided methods of [`VirtioDevice`]: features, queues and their
/// notification eventfds, the interrupt, guest memory, activation.
#[derive(Debug)]
pub struct DeviceCore {
    avail_features: u64,
    acked_features: u64,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    mem: Arc<GuestMemoryMmap>,
    activated: bool,
    /// The queue kicked once at activation, so buffers the driver posted
    /// before `DRIVER_OK` are served.
    kick_queue: usize,
}

impl DeviceCore {
    /// A device offering `avail_features` with one queue of each size in
    /// `queue_sizes`; `kick_queue` is kicked at activation.
    pub fn new(
        avail_features: u64,
        queue_sizes: &[u16],
        kick_queue: usize,
        mem: Arc<GuestMemoryMmap>,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, CoreError> {
        let queues = queue_sizes
            .iter()
            .map(|&n| Queue::new(n).map_err(CoreError::Queue))
            .collect::<Result<Vec<_>, _>>()?;
        let queue_events = queue_sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CoreError::EventFd)?;
        Ok(DeviceCore {
            avail_features,
            acked_features: 0,
            queues,
            queue_events,
            interrupt,
            mem,
            activated: false,
            kick_queue,
        })
    }

    /// True while activated and not broken (`DEVICE_NEEDS_RESET`).
    pub fn running(&self) -> bool {
        self.activated && !self.interrupt.needs_reset()
    }

    /// The driver's accepted features.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// The interrupt shared with the transport.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// Queue `index`'s notification eventfd.
    pub fn queue_event(&self, index: usize) -> &EventFd {
        &self.queue_events[index]
    }

    /// Guest memory and queue `index`, for a device's own queue work.
    pub fn memory_and_queue(&mut self, index: usize) -> (&GuestMemoryMmap, &mut Queue, &Interrupt) {
        (&self.mem, &mut self.queues[index], &self.interrupt)
    }

    /// Serves queue `index` with `handle` through [`serve_queue`], if the
    /// device is running.
    pub fn serve(
        &mut self,
        index: usize,
        budget: usize,
        name: &str,
        handle: impl FnMut(&GuestMemoryMmap, DescriptorChain<&GuestMemoryMmap>) -> u32,
    ) -> Served {
        if !self.running() {
            return Served::Done;
        }
        let (mem, queue, interrupt) = self.memory_and_queue(index);
        serve_queue(queue, mem, interrupt, budget, name, handle)
    }

    fn activate(&mut self, name: &str) -> Result<(), ActivateError> {
        activate_queues(
            &mut self.queues,
            &self.mem,
            self.acked_features,
            &self.queue_events[self.kick_queue],
            name,
        )?;
        self.activated = true;
        Ok(())
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.acked_features = 0;
        self.activated = false;
    }
}

/// Errors creating a [`DeviceCore`].
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A queue's eventfd cannot be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// virtio-queue rejected the queue size (a bug).
    #[error("cannot create the virtio queue")]
    Queue(#[source] virtio_queue::Error),
}

/// What [`serve_queue`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The queue is empty and notifications are on again.
    Done,
    /// The budget ran out with work left: serve again (after looking at
    /// the thread's other events).
    More,
}

/// Serves queue `queue`: with notifications disabled, hands each available
/// chain to `handle` (which returns the used length) and adds it to the
/// used ring; then re-enables notifications and looks again, so a chain
/// added meanwhile is not missed. At most `budget` rounds (a chain, or a
/// look that found nothing) per call: a guest that keeps the queue busy
/// gets [`Served::More`] and the thread a turn at its other events. A
/// broken queue (an available index more than a ring ahead or moving
/// backwards, a head beyond the queue, an unwritable used ring) sets
/// `DEVICE_NEEDS_RESET` and serves nothing more until the driver resets.
/// Interrupts the driver once at the end, if it asked for it.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    budget: usize,
    name: &str,
    mut handle: impl FnMut(&GuestMemoryMmap, DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> Served {
    let mut used = false;
    let mut rounds = 0usize;
    let result = (|| -> Result<Served, QueueBroken> {
        loop {
            queue.disable_notification(mem)?;
            let mut found = false;
            while let Some(chain) = queue.iter(mem)?.next() {
                let head = chain.head_index();
                let len = handle(mem, chain);
                queue.add_used(mem, head, len)?;
                used = true;
                found = true;
                rounds += 1;
                if rounds >= budget {
                    return Ok(Served::More);
                }
            }
            if !queue.enable_notification(mem)? {
                return Ok(Served::Done);
            }
            // The driver's index differed from ours a moment ago, and a
            // driver only moves it forward: finding nothing now means it
            // moved back (a guest whose rings overlap, say).
            if !found && rounds > 0 {
                return Err(QueueBroken::IndexMovedBack);
            }
            rounds += 1;
            if rounds >= budget {
                return Ok(Served::More);
            }
        }
    })();
    let served = match result {
        Ok(s) => s,
        Err(e) => {
            log::warn!("{name}: broken queue ({e}); device needs reset");
            interrupt.set_needs_reset();
            Served::Done
        }
    };
    if used && queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_used_queue();
    }
    served
}

/// Why [`serve_queue`] gave up on a queue.
#[derive(Debug, thiserror::Error)]
enum QueueBroken {
    /// virtio-queue found the rings invalid.
    #[error(transparent)]
    Queue(#[from] virtio_queue::Error),
    /// The available index moved backwards.
    #[error("the available index moved backwards")]
    IndexMovedBack,
}

/// A virtio device as its transport and its queue thread see it.
///
/// A device keeps its shared state in a [`DeviceCore`] and writes only
/// its own logic: its type, its configuration space, and what a queue
/// notification does ([`VirtioDevice::process_queue`]). The transport
/// configures the queues through [`VirtioDevice::queues_mut`] before
/// `DRIVER_OK`, then calls [`VirtioDevice::activate`]; writing 0 to the
/// status register calls [`VirtioDevice::reset`]. The device's queue
/// thread ([`worker`]) calls [`VirtioDevice::process_queue`].
pub trait VirtioDevice: Send {
    /// Device ID (virtio 1.2 §5: 2 is block, 3 console).
    fn device_type(&self) -> u32;
    /// The shared state.
    fn core(&self) -> &DeviceCore;
    /// The shared state, mutably.
    fn core_mut(&mut self) -> &mut DeviceCore;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (default: nothing
    /// is writable).
    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!(
            "virtio device {}: ignoring config write at {offset:#x}",
            self.device_type()
        );
    }
    /// Serves queue `index` after a notification: at most `budget` rounds
    /// (see [`serve_queue`]).
    fn process_queue(&mut self, index: usize, budget: usize) -> Served;
    /// The queues the device's thread serves (default: all).
    fn worker_queues(&self) -> Vec<usize> {
        (0..self.core().queues.len()).collect()
    }
    /// Device-specific state to clear at reset (default: none).
    fn on_reset(&mut self) {}

    /// Features the device offers (bit 32 is `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64 {
        self.core().avail_features
    }
    /// Features the driver accepted.
    fn acked_features(&self) -> u64 {
        self.core().acked_features
    }
    /// Records the features the driver accepted, keeping only offered ones.
    fn set_acked_features(&mut self, features: u64) {
        let core = self.core_mut();
        core.acked_features = features & core.avail_features;
    }
    /// The device's queues.
    fn queues(&self) -> &[Queue] {
        &self.core().queues
    }
    /// The device's queues, for the transport to configure.
    fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.core_mut().queues
    }
    /// One eventfd per queue, written when the driver notifies that queue
    /// (registered as ioeventfds on `QueueNotify`).
    fn queue_events(&self) -> &[EventFd] {
        &self.core().queue_events
    }
    /// Starts the device after `DRIVER_OK`.
    fn activate(&mut self) -> Result<(), ActivateError> {
        let name = format!("virtio device {}", self.device_type());
        self.core_mut().activate(&name)
    }
    /// True between a successful activation and the next reset.
    fn is_activated(&self) -> bool {
        self.core().activated
    }
    /// Returns the device to its power-on state: queues, features,
    /// activation, and its own state.
    fn reset(&mut self) {
        self.core_mut().reset();
        self.on_reset();
    }
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

#[cfg(test)]
mod serve_tests {
    use std::cell::Cell;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    use super::test_utils::{chain, used_idx};
    use super::*;

    fn setup() -> (GuestMemoryMmap, Interrupt) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (mem, irq)
    }

    #[test]
    fn a_queue_kept_busy_forever_yields_after_its_budget() {
        let (mem, irq) = setup();
        let mock = MockSplitQueue::new(&mem, 16);
        chain(&mock, 0, &[(0x8000, 1, true)]);
        let mut q = mock.create_queue().unwrap();
        // Each chain served re-posts one more: a driver that never lets up.
        let posted = Cell::new(1u16);
        let mut repost = |_: &GuestMemoryMmap, _chain: DescriptorChain<&GuestMemoryMmap>| {
            let n = posted.get();
            mock.avail()
                .ring()
                .ref_at(usize::from(n % 16))
                .unwrap()
                .store(0);
            mock.avail().idx().store(n + 1);
            posted.set(n + 1);
            1
        };
        assert_eq!(
            serve_queue(&mut q, &mem, &irq, 5, "t", &mut repost),
            Served::More
        );
        assert_eq!(used_idx(&mock), 5);
        assert_eq!(
            serve_queue(&mut q, &mem, &irq, 5, "t", &mut repost),
            Served::More
        );
        assert_eq!(used_idx(&mock), 10);
        assert!(!irq.needs_reset(), "a busy driver is not a broken one");
    }

    #[test]
    fn an_available_index_that_moves_back_breaks_the_queue() {
        let (mem, irq) = setup();
        let mock = MockSplitQueue::new(&mem, 16);
        chain(&mock, 0, &[(0x8000, 1, true)]);
        let mut q = mock.create_queue().unwrap();
        // As when avail.idx overlaps used.flags: the device's own writes
        // move it back and forth.
        let back = |_: &GuestMemoryMmap, _chain: DescriptorChain<&GuestMemoryMmap>| {
            mock.avail().idx().store(0);
            1
        };
        assert_eq!(
            serve_queue(&mut q, &mem, &irq, 1000, "t", back),
            Served::Done
        );
        assert!(irq.needs_reset());
        assert_eq!(used_idx(&mock), 1);
    }

    #[test]
    fn an_empty_queue_is_done_at_once() {
        let (mem, irq) = setup();
        let mock = MockSplitQueue::new(&mem, 16);
        let mut q = mock.create_queue().unwrap();
        let never = |_: &GuestMemoryMmap, _: DescriptorChain<&GuestMemoryMmap>| -> u32 {
            panic!("no chain was posted")
        };
        assert_eq!(serve_queue(&mut q, &mem, &irq, 1, "t", never), Served::Done);
        assert_eq!(irq.status(), 0, "nothing used, no interrupt");
    }
}
