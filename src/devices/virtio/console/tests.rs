//! virtio-console driven through virtio-queue's `MockSplitQueue`: output
//! and input round trips, input without buffers, and hostile chains on both
//! queues.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::test_utils::{chain, used, used_idx};

const MEM_SIZE: usize = 16 << 20;
const QSIZE: u16 = 16;
const RX_RING: u64 = 0;
const TX_RING: u64 = 0x1_0000;
const BUF: u64 = 0x10_0000;
const BUF2: u64 = 0x20_0000;
const POISON: u8 = 0xee;

/// What the console wrote to its sink.
type Sink = crate::devices::TestSink;

struct Setup {
    mem: Arc<GuestMemoryMmap>,
    sink: Sink,
}

impl Setup {
    fn new() -> Self {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap());
        for addr in [BUF, BUF2] {
            mem.write_slice(&[POISON; 0x2000], GuestAddress(addr))
                .unwrap();
        }
        Setup {
            mem,
            sink: Sink::default(),
        }
    }

    fn rx(&self) -> MockSplitQueue<'_, GuestMemoryMmap> {
        MockSplitQueue::create(self.mem.as_ref(), GuestAddress(RX_RING), QSIZE)
    }

    fn tx(&self) -> MockSplitQueue<'_, GuestMemoryMmap> {
        MockSplitQueue::create(self.mem.as_ref(), GuestAddress(TX_RING), QSIZE)
    }

    /// An activated console on the two mock queues, all features acked.
    fn console(
        &self,
        rx: &MockSplitQueue<GuestMemoryMmap>,
        tx: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Console {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut c = Console::new(
            self.mem.clone(),
            Arc::new(Interrupt::new(irq)),
            Box::new(self.sink.clone()),
        )
        .unwrap();
        c.queues_mut()[RX_QUEUE] = rx.create_queue().unwrap();
        c.queues_mut()[TX_QUEUE] = tx.create_queue().unwrap();
        c.set_acked_features(c.avail_features());
        c.activate().unwrap();
        c
    }

    fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// Lets input flow: the driver's first output (one byte from table index
/// `QSIZE - 1` of the transmitq, which the tests leave free).
fn first_output(s: &Setup, c: &mut Console, tx: &MockSplitQueue<GuestMemoryMmap>) {
    s.write(BUF2 + 0x1800, b">");
    chain(tx, QSIZE - 1, &[(BUF2 + 0x1800, 1, false)]);
    c.process_transmit(usize::MAX);
    assert_eq!(s.sink.take(), b">");
}

#[test]
fn features_and_config_space() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let c = s.console(&rx, &tx);
    assert_eq!(c.device_type(), 3);
    assert_eq!(
        c.avail_features(),
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    );
    assert_eq!(c.queues().len(), 2);
    assert_eq!(c.queue_events().len(), 2);
    let mut w = [0xffu8; 4];
    for offset in [0, 4, 8, 0x100] {
        c.read_config(offset, &mut w);
        assert_eq!(w, [0; 4], "config at {offset:#x}");
    }
}

#[test]
fn transmit_writes_every_buffer_in_order() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    s.write(BUF, b"hello, ");
    s.write(BUF2, b"world\n");
    chain(&tx, 0, &[(BUF, 7, false), (BUF2, 6, false)]);
    s.write(BUF + 0x1000, b"second");
    chain(&tx, 2, &[(BUF + 0x1000, 6, false)]);
    c.process_transmit(usize::MAX);
    assert_eq!(s.sink.take(), b"hello, world\nsecond");
    assert_eq!(used_idx(&tx), 2);
    assert_eq!(used(&tx, 0), (0, 0));
    assert_eq!(used(&tx, 1), (2, 0));
    assert_eq!(
        c.core().interrupt().status() & 1,
        1,
        "no used-buffer interrupt"
    );
    // Nothing new: nothing written.
    c.process_transmit(usize::MAX);
    assert!(s.sink.take().is_empty());
}

#[test]
fn transmit_larger_than_a_chunk() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.write(BUF, &data);
    chain(&tx, 0, &[(BUF, data.len() as u32, false)]);
    c.process_transmit(usize::MAX);
    assert_eq!(s.sink.take(), data);
}

/// Runs one transmit chain and checks that it was returned with length 0
/// and that nothing was written.
fn hostile_transmit(descs: &[(u64, u32, bool)]) {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    s.write(BUF, b"must not appear");
    chain(&tx, 0, descs);
    c.process_transmit(usize::MAX);
    assert_eq!(used_idx(&tx), 1, "chain not returned: {descs:?}");
    assert_eq!(used(&tx, 0), (0, 0));
    assert!(s.sink.take().is_empty(), "output written for {descs:?}");
    assert!(!c.core().interrupt().needs_reset());
}

#[test]
fn hostile_transmit_chains() {
    let end = MEM_SIZE as u64;
    // A device-writable buffer, alone or after a good one.
    hostile_transmit(&[(BUF, 15, true)]);
    hostile_transmit(&[(BUF, 15, false), (BUF2, 4, true)]);
    // Outside guest memory, straddling its end, at the top of the
    // address space.
    hostile_transmit(&[(end, 16, false)]);
    hostile_transmit(&[(BUF, 15, false), (end - 8, 16, false)]);
    hostile_transmit(&[(u64::MAX - 10, 64, false)]);
}

#[test]
fn loops_in_chains_terminate() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    s.write(BUF, b"x");
    // 0 -> 1 -> 0 -> 1 ... on the transmitq: the iterator stops after
    // QSIZE descriptors; the output is bounded.
    let next = VRING_DESC_F_NEXT as u16;
    let raw = [
        RawDescriptor::from(SplitDescriptor::new(BUF, 1, next, 1)),
        RawDescriptor::from(SplitDescriptor::new(BUF, 1, next, 0)),
    ];
    tx.add_desc_chains(&raw, 0).unwrap();
    c.process_transmit(usize::MAX);
    assert_eq!(used_idx(&tx), 1);
    assert!(s.sink.take().len() <= usize::from(QSIZE));
    // A self-loop on the receiveq.
    let raw = [RawDescriptor::from(SplitDescriptor::new(
        BUF2,
        4,
        next | VRING_DESC_F_WRITE as u16,
        0,
    ))];
    rx.add_desc_chains(&raw, 0).unwrap();
    assert!(c.receive(b"abcdefgh") <= 4 * usize::from(QSIZE));
    assert_eq!(used_idx(&rx), 1);
    assert!(!c.core().interrupt().needs_reset());
}

#[test]
fn receive_fills_posted_buffers_in_order() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    first_output(&s, &mut c, &tx);
    chain(&rx, 0, &[(BUF, 4, true)]);
    chain(&rx, 1, &[(BUF2, 3, true), (BUF2 + 0x100, 8, true)]);
    // Fits: the first chain full, the second partly.
    assert_eq!(c.receive(b"abcdefgh"), 8);
    assert_eq!(s.bytes(BUF, 5), b"abcd\xee");
    assert_eq!(s.bytes(BUF2, 4), b"efg\xee");
    assert_eq!(s.bytes(BUF2 + 0x100, 2), b"h\xee");
    assert_eq!(used_idx(&rx), 2);
    assert_eq!(used(&rx, 0), (0, 4));
    assert_eq!(used(&rx, 1), (1, 4));
}

#[test]
fn input_waits_for_the_first_output() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    let ready = c.rx_ready().unwrap();
    chain(&rx, 0, &[(BUF, 8, true)]);
    // Buffers posted, but the driver has not printed yet: Linux would
    // drop input that arrives before its port is hooked up.
    assert_eq!(c.receive(b"early"), 0);
    assert_eq!(used_idx(&rx), 0);
    assert!(ready.read().is_err(), "woken before the first output");
    s.write(BUF2, b"login: ");
    chain(&tx, 0, &[(BUF2, 7, false)]);
    c.process_transmit(usize::MAX);
    // The first output wakes the stdin forwarder, and input flows.
    assert_eq!(ready.read().unwrap(), 1);
    assert_eq!(c.receive(b"early"), 5);
    assert_eq!(s.bytes(BUF, 6), b"early\xee");
    // A reset closes the gate again.
    c.reset();
    assert_eq!(c.receive(b"x"), 0);
}

#[test]
fn receive_without_buffers_takes_what_fits_and_asks_for_a_kick() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    first_output(&s, &mut c, &tx);
    assert_eq!(c.receive(b"early"), 0);
    assert_eq!(used_idx(&rx), 0);
    chain(&rx, 0, &[(BUF, 2, true)]);
    assert_eq!(c.receive(b"early"), 2);
    assert_eq!(s.bytes(BUF, 2), b"ea");
    // (One chain only: the mock's used ring overlaps its avail ring's
    // used_event, so a second used entry would look like a used_event.)
    assert_eq!(
        c.core().interrupt().status() & 1,
        1,
        "no used-buffer interrupt"
    );
    // Out of buffers with input left: the device asks to be notified when
    // the next buffer is posted (EVENT_IDX: avail_event = next avail index,
    // just after the used ring's entries).
    let avail_event = rx.used_addr().0 + 4 + 8 * u64::from(QSIZE);
    let event: u16 = s.mem.read_obj(GuestAddress(avail_event)).unwrap();
    assert_eq!(event, 1);
    // The receiveq's eventfd, which the stdin forwarder watches, is the
    // one the driver's notification (ioeventfd) writes.
    let ready = c.rx_ready().unwrap();
    c.queue_events()[RX_QUEUE].write(1).unwrap();
    assert!(ready.read().unwrap() >= 1);
    chain(&rx, 1, &[(BUF2, 16, true)]);
    assert_eq!(c.receive(b"rly"), 3);
    assert_eq!(s.bytes(BUF2, 4), b"rly\xee");
}

#[test]
fn hostile_receive_chains_get_nothing() {
    let end = MEM_SIZE as u64;
    for descs in [
        // Device-readable, alone or after a good buffer.
        vec![(BUF, 8, false)],
        vec![(BUF, 8, true), (BUF + 0x100, 8, false)],
        // Outside guest memory, straddling its end, at the top.
        vec![(end, 8, true)],
        vec![(BUF, 8, true), (end - 4, 8, true)],
        vec![(u64::MAX - 3, 8, true)],
    ] {
        let s = Setup::new();
        let (rx, tx) = (s.rx(), s.tx());
        let mut c = s.console(&rx, &tx);
        first_output(&s, &mut c, &tx);
        chain(&rx, 0, &descs);
        // A good chain after the bad one gets the input.
        chain(&rx, descs.len() as u16, &[(BUF2, 8, true)]);
        assert_eq!(c.receive(b"input"), 5, "{descs:?}");
        assert_eq!(used_idx(&rx), 2);
        assert_eq!(used(&rx, 0), (0, 0), "{descs:?}");
        assert_eq!(s.bytes(BUF, 0x200), vec![POISON; 0x200], "{descs:?}");
        assert_eq!(s.bytes(BUF2, 6), b"input\xee");
        assert!(!c.core().interrupt().needs_reset());
    }
}

#[test]
fn broken_queues_need_reset() {
    for queue in [RX_QUEUE, TX_QUEUE] {
        for head_beyond_queue in [false, true] {
            let s = Setup::new();
            let (rx, tx) = (s.rx(), s.tx());
            let mut c = s.console(&rx, &tx);
            if queue == RX_QUEUE {
                first_output(&s, &mut c, &tx);
            }
            let mock = if queue == RX_QUEUE { &rx } else { &tx };
            if head_beyond_queue {
                mock.avail().ring().ref_at(0).unwrap().store(QSIZE + 3);
                mock.avail().idx().store(1);
            } else {
                // More chains claimed than the ring holds.
                mock.avail().idx().store(QSIZE + 1);
            }
            if queue == RX_QUEUE {
                assert_eq!(c.receive(b"x"), 0);
            } else {
                c.process_transmit(usize::MAX);
            }
            assert!(c.core().interrupt().needs_reset(), "queue {queue}");
            assert_eq!(c.core().interrupt().status() & 2, 2, "no config interrupt");
            assert_eq!(used_idx(mock), 0);
            // Stopped: neither queue is served any more.
            chain(&tx, 0, &[(BUF, 1, false)]);
            c.process_transmit(usize::MAX);
            assert_eq!(c.receive(b"x"), 0);
            assert!(s.sink.take().is_empty());
        }
    }
}

#[test]
fn nothing_moves_before_activation_or_after_reset() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let mut c = s.console(&rx, &tx);
    c.reset();
    assert!(!c.is_activated());
    assert_eq!(c.acked_features(), 0);
    s.write(BUF, b"out");
    chain(&tx, 0, &[(BUF, 3, false)]);
    c.process_transmit(usize::MAX);
    assert!(s.sink.take().is_empty());
    assert_eq!(c.receive(b"in"), 0);
    // Queues not ready: activation is refused.
    assert!(c.activate().is_err());
}

#[test]
fn activation_kicks_the_transmit_queue() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let c = s.console(&rx, &tx);
    // Output queued before DRIVER_OK is served.
    assert_eq!(c.queue_events()[TX_QUEUE].read().unwrap(), 1);
    assert!(c.rx_ready().unwrap().read().is_err());
}

#[test]
fn its_thread_serves_the_transmit_queue() {
    let s = Setup::new();
    let (rx, tx) = (s.rx(), s.tx());
    let c = Arc::new(Mutex::new(s.console(&rx, &tx)));
    s.write(BUF, b"via the thread");
    chain(&tx, 0, &[(BUF, 14, false)]);
    // activate() already kicked the transmitq.
    let w = crate::devices::virtio::worker::spawn("test-hvc0", c.clone(), None).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while used_idx(&tx) != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(w.join(deadline));
    assert_eq!(s.sink.take(), b"via the thread");
    assert_eq!(used_idx(&tx), 1);
}
