//! Transport register tests against a dummy device.

use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::{DeviceCore, Served};

#[derive(Debug)]
struct Dummy {
    /// Only for the trait's required accessors: the dummy overrides every
    /// provided method it is tested through.
    core: DeviceCore,
    acked: u64,
    queues: Vec<Queue>,
    events: Vec<EventFd>,
    activated: bool,
    resets: Arc<AtomicUsize>,
}

const DUMMY_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << 5) | 1;

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        2
    }
    fn core(&self) -> &DeviceCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }
    fn process_queue(&mut self, _index: usize, _budget: usize) -> Served {
        Served::Done
    }
    fn avail_features(&self) -> u64 {
        DUMMY_FEATURES
    }
    fn acked_features(&self) -> u64 {
        self.acked
    }
    fn set_acked_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn queues(&self) -> &[Queue] {
        &self.queues
    }
    fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.queues
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self) -> Result<(), ActivateError> {
        if !self.queues[0].ready() {
            return Err(ActivateError::BadQueue(0));
        }
        self.activated = true;
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.activated
    }
    fn reset(&mut self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.queues.iter_mut().for_each(Queue::reset);
        self.acked = 0;
        self.activated = false;
    }
}

struct T {
    t: MmioTransport,
    dev: Arc<Mutex<Dummy>>,
    irq: Arc<Interrupt>,
    resets: Arc<AtomicUsize>,
}

impl T {
    fn new() -> Self {
        let resets = Arc::new(AtomicUsize::new(0));
        let mem =
            crate::memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 0x1_0000)])
                .unwrap();
        let unused_irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let core = DeviceCore::new(0, &[], 0, Arc::new(mem), unused_irq).unwrap();
        let dev = Arc::new(Mutex::new(Dummy {
            core,
            acked: 0,
            queues: vec![Queue::new(256).unwrap()],
            events: vec![EventFd::new(libc::EFD_NONBLOCK).unwrap()],
            activated: false,
            resets: resets.clone(),
        }));
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        T {
            t: MmioTransport::new(dev.clone(), irq.clone()),
            dev,
            irq,
            resets,
        }
    }
    fn r(&mut self, off: u64) -> u32 {
        let mut d = [0u8; 4];
        self.t.read(off, &mut d);
        u32::from_le_bytes(d)
    }
    fn w(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }
    /// ACKNOWLEDGE | DRIVER, features written, FEATURES_OK requested.
    fn negotiate(&mut self, features: u64) -> u32 {
        self.w(reg::STATUS, 1);
        self.w(reg::STATUS, 3);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, features as u32);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.w(reg::STATUS, 3 | 8);
        self.r(reg::STATUS)
    }
    fn setup_queue(&mut self, size: u32) {
        self.w(reg::QUEUE_SEL, 0);
        self.w(reg::QUEUE_NUM, size);
        self.w(reg::QUEUE_DESC_LOW, 0x1000);
        self.w(reg::QUEUE_DESC_HIGH, 0);
        self.w(reg::QUEUE_AVAIL_LOW, 0x2000);
        self.w(reg::QUEUE_USED_LOW, 0x3000);
        self.w(reg::QUEUE_READY, 1);
    }
}

#[test]
fn identity_registers() {
    let mut t = T::new();
    assert_eq!(t.r(reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(t.r(reg::VERSION), 2);
    assert_eq!(t.r(reg::DEVICE_ID), 2);
    assert_eq!(t.r(reg::VENDOR_ID), VENDOR_ID);
    assert_eq!(t.r(reg::QUEUE_NUM_MAX), 256);
    assert_eq!(t.r(reg::CONFIG_GENERATION), 0);
    // Narrow or unaligned register reads return zero.
    let mut b = [0xffu8; 2];
    t.t.read(reg::MAGIC_VALUE, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xffu8; 4];
    t.t.read(reg::MAGIC_VALUE + 1, &mut b);
    assert_eq!(b, [0; 4]);
    // Config space passthrough, any width.
    let mut b = [0u8; 2];
    t.t.read(reg::CONFIG + 3, &mut b);
    assert_eq!(b, [4, 5]);
    let mut b = [0xffu8; 4];
    t.t.read(reg::CONFIG + 6, &mut b);
    assert_eq!(b, [7, 8, 0, 0]);
}

#[test]
fn feature_words_by_selector() {
    let mut t = T::new();
    t.w(reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(t.r(reg::DEVICE_FEATURES), DUMMY_FEATURES as u32);
    t.w(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(t.r(reg::DEVICE_FEATURES), 1);
    t.w(reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(t.r(reg::DEVICE_FEATURES), 0);
}

#[test]
fn negotiation_accepts_a_subset_with_version_1() {
    let mut t = T::new();
    let f = (1 << VIRTIO_F_VERSION_1) | (1 << 5);
    assert_eq!(t.negotiate(f), 0xb);
    assert_eq!(t.dev.lock().unwrap().acked, f);
    // Features can no longer change after FEATURES_OK.
    t.w(reg::DRIVER_FEATURES_SEL, 0);
    t.w(reg::DRIVER_FEATURES, 0);
    assert_eq!(t.dev.lock().unwrap().acked, f);
}

#[test]
fn negotiation_refuses_legacy_and_unknown_features() {
    let mut t = T::new();
    assert_eq!(
        t.negotiate(1 << 5),
        3,
        "no VERSION_1: FEATURES_OK must not stick"
    );
    let mut t = T::new();
    assert_eq!(t.negotiate((1 << VIRTIO_F_VERSION_1) | (1 << 7)), 3);
    // FEATURES_OK without ACKNOWLEDGE | DRIVER.
    let mut t = T::new();
    t.w(reg::STATUS, 8);
    assert_eq!(t.r(reg::STATUS), 0);
}

#[test]
fn queue_setup_and_activation() {
    let mut t = T::new();
    // Queue registers are ignored before FEATURES_OK.
    t.w(reg::QUEUE_NUM, 16);
    assert_eq!(t.dev.lock().unwrap().queues[0].size(), 256);
    t.negotiate(1 << VIRTIO_F_VERSION_1);
    t.setup_queue(16);
    {
        let d = t.dev.lock().unwrap();
        let q = &d.queues[0];
        assert_eq!(q.size(), 16);
        assert!(q.ready());
        assert_eq!(q.desc_table(), 0x1000);
        assert_eq!(q.avail_ring(), 0x2000);
        assert_eq!(q.used_ring(), 0x3000);
    }
    assert_eq!(t.r(reg::QUEUE_READY), 1);
    t.w(reg::STATUS, 0xf);
    assert_eq!(t.r(reg::STATUS), 0xf);
    assert!(t.dev.lock().unwrap().activated);
    // No queue 1.
    t.w(reg::QUEUE_SEL, 1);
    assert_eq!(t.r(reg::QUEUE_NUM_MAX), 0);
    // Queue registers are ignored after DRIVER_OK.
    t.w(reg::QUEUE_SEL, 0);
    t.w(reg::QUEUE_NUM, 32);
    assert_eq!(t.dev.lock().unwrap().queues[0].size(), 16);
}

#[test]
fn bad_queue_size_needs_reset() {
    for size in [0, 3, 100, 512, 0x1_0000] {
        let mut t = T::new();
        t.negotiate(1 << VIRTIO_F_VERSION_1);
        t.setup_queue(size);
        t.w(reg::STATUS, 0xf);
        assert!(!t.dev.lock().unwrap().activated, "size {size}");
        assert_eq!(t.r(reg::STATUS) & 0x40, 0x40, "size {size}");
        assert_eq!(t.r(reg::INTERRUPT_STATUS), 2, "config change interrupt");
        assert_eq!(t.irq.irq_fd().read().unwrap(), 1);
    }
}

#[test]
fn driver_ok_needs_features_ok_and_a_ready_queue() {
    let mut t = T::new();
    t.w(reg::STATUS, 3);
    t.w(reg::STATUS, 7);
    assert_eq!(t.r(reg::STATUS), 3);
    assert!(!t.dev.lock().unwrap().activated);
    let mut t = T::new();
    t.negotiate(1 << VIRTIO_F_VERSION_1);
    t.w(reg::STATUS, 0xf);
    assert_eq!(t.r(reg::STATUS) & 0x40, 0x40);
}

#[test]
fn reset_returns_to_power_on() {
    let mut t = T::new();
    t.negotiate(1 << VIRTIO_F_VERSION_1);
    t.setup_queue(3);
    t.w(reg::STATUS, 0xf);
    assert_eq!(t.r(reg::STATUS) & 0x40, 0x40);
    t.w(reg::STATUS, 0);
    assert_eq!(t.resets.load(Ordering::SeqCst), 1);
    assert_eq!(t.r(reg::STATUS), 0);
    assert_eq!(t.r(reg::INTERRUPT_STATUS), 0);
    assert!(!t.irq.needs_reset());
    assert_eq!(t.dev.lock().unwrap().acked, 0);
    assert!(!t.dev.lock().unwrap().queues[0].ready());
    // And the device can be brought up again.
    t.negotiate(1 << VIRTIO_F_VERSION_1);
    t.setup_queue(64);
    t.w(reg::STATUS, 0xf);
    assert_eq!(t.r(reg::STATUS), 0xf);
    assert!(t.dev.lock().unwrap().activated);
    // Clearing bits other than by reset is ignored.
    t.w(reg::STATUS, 0x3);
    assert_eq!(t.r(reg::STATUS), 0xf);
}

#[test]
fn interrupt_status_and_ack() {
    let mut t = T::new();
    t.irq.signal_used_queue();
    t.irq.signal_config_change();
    assert_eq!(t.r(reg::INTERRUPT_STATUS), 3);
    t.w(reg::INTERRUPT_ACK, 1);
    assert_eq!(t.r(reg::INTERRUPT_STATUS), 2);
    t.w(reg::INTERRUPT_ACK, 2);
    assert_eq!(t.r(reg::INTERRUPT_STATUS), 0);
    assert_eq!(t.irq.irq_fd().read().unwrap(), 2);
}

#[test]
fn queue_notify_reaches_the_queue_event() {
    let mut t = T::new();
    t.w(reg::QUEUE_NOTIFY, 0);
    assert_eq!(t.dev.lock().unwrap().events[0].read().unwrap(), 1);
    // A queue that does not exist is ignored.
    t.w(reg::QUEUE_NOTIFY, 7);
    assert!(t.dev.lock().unwrap().events[0].read().is_err());
}
