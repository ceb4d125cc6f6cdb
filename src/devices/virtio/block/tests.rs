//! virtio-block driven through virtio-queue's `MockSplitQueue`: normal
//! requests against a temporary file, and hostile chains.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::config::{open_disk, DiskError};
use crate::devices::virtio::test_utils::{chain, used, used_idx};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

const MEM_SIZE: usize = 16 << 20;
const QSIZE: u16 = 16;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const DATA2: u64 = 0x30_0000;
const STATUS: u64 = 0x40_0000;
const DISK_SECTORS: u64 = 64;
const POISON: u8 = 0xee;

/// A temporary disk image filled with `byte(i) = i * 7 % 251`.
struct TempDisk(PathBuf);

impl TempDisk {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ember-blk-test-{}-{}.img",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let data: Vec<u8> = (0..DISK_SECTORS * 512)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, data).unwrap();
        TempDisk(path)
    }
    fn contents(&self) -> Vec<u8> {
        let mut v = Vec::new();
        File::open(&self.0).unwrap().read_to_end(&mut v).unwrap();
        v
    }
}

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Setup {
    mem: Arc<GuestMemoryMmap>,
    disk: TempDisk,
}

impl Setup {
    fn new() -> Self {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap());
        // Poison the buffers so that untouched bytes are recognisable.
        for addr in [DATA, DATA2, STATUS] {
            mem.write_slice(&[POISON; 0x2000], GuestAddress(addr))
                .unwrap();
        }
        Setup {
            mem,
            disk: TempDisk::new(),
        }
    }

    fn block(&self, readonly: bool, mock: &MockSplitQueue<GuestMemoryMmap>) -> Block {
        let (file, size) = open_disk(&self.disk.0, readonly).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut b = Block::new(
            Arc::new(file),
            size,
            readonly,
            "test-disk-id",
            self.mem.clone(),
            Arc::new(Interrupt::new(irq)),
        )
        .unwrap();
        b.queues_mut()[0] = mock.create_queue().unwrap();
        b.set_acked_features(b.avail_features());
        b.activate().unwrap();
        b
    }

    fn header(&self, kind: u32, sector: u64) {
        let h = request::Header {
            kind: kind.to_le(),
            reserved: 0,
            sector: sector.to_le(),
        };
        self.mem.write_obj(h, GuestAddress(HDR)).unwrap();
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn expected(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i * 7 % 251) as u8)
        .collect()
}

#[test]
fn config_space_and_features() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let b = s.block(true, &mock);
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS);
    let mut w = [0u8; 4];
    b.read_config(12, &mut w);
    assert_eq!(u32::from_le_bytes(w), SEG_MAX);
    b.read_config(20, &mut w);
    assert_eq!(u32::from_le_bytes(w), 512);
    b.read_config(0x200, &mut w);
    assert_eq!(w, [0; 4]);
    let f = b.avail_features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_BLK_F_RO,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_SEG_MAX,
    ] {
        assert!(f & (1 << bit) != 0, "feature {bit} missing");
    }
    assert_eq!(b.device_type(), 2);
    let rw = s.block(false, &mock);
    assert_eq!(rw.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);
}

#[test]
fn out_then_in_round_trip() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i % 13) as u8 + 1).collect();
    s.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    s.header(VIRTIO_BLK_T_OUT, 2);
    // Two data segments: 512 + 512.
    chain(
        &mock,
        0,
        &[
            (HDR, 16, false),
            (DATA, 512, false),
            (DATA + 512, 512, false),
            (STATUS, 1, true),
        ],
    );
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 1);
    assert_eq!(used(&mock, 0), (0, 1));
    assert_eq!(s.status(), VIRTIO_BLK_S_OK as u8);
    let file = s.disk.contents();
    assert_eq!(&file[1024..2048], &pattern[..]);
    assert_eq!(&file[..1024], &expected(0, 1024)[..]);
    assert_eq!(&file[2048..], &expected(2048, file.len() - 2048)[..]);

    s.header(VIRTIO_BLK_T_IN, 2);
    chain(
        &mock,
        4,
        &[(HDR, 16, false), (DATA2, 1024, true), (STATUS, 1, true)],
    );
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 2);
    assert_eq!(used(&mock, 1), (4, 1025));
    assert_eq!(s.status(), VIRTIO_BLK_S_OK as u8);
    assert_eq!(s.bytes(DATA2, 1024), pattern);
    assert_eq!(s.bytes(DATA2 + 1024, 1), [POISON]);
    // The driver was interrupted.
    assert_eq!(b.core().interrupt().status() & 1, 1);
}

#[test]
fn read_the_last_sector() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(true, &mock);
    s.header(VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
    chain(
        &mock,
        0,
        &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
    );
    b.process_requests(usize::MAX);
    assert_eq!(s.status(), VIRTIO_BLK_S_OK as u8);
    assert_eq!(s.bytes(DATA, 512), expected((DISK_SECTORS - 1) * 512, 512));
}

#[test]
fn flush_and_get_id() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    s.header(VIRTIO_BLK_T_FLUSH, 0);
    chain(&mock, 0, &[(HDR, 16, false), (STATUS, 1, true)]);
    b.process_requests(usize::MAX);
    assert_eq!(used(&mock, 0), (0, 1));
    assert_eq!(s.status(), VIRTIO_BLK_S_OK as u8);

    s.header(VIRTIO_BLK_T_GET_ID, 0);
    chain(
        &mock,
        2,
        &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
    );
    b.process_requests(usize::MAX);
    assert_eq!(used(&mock, 1), (2, 21));
    assert_eq!(s.status(), VIRTIO_BLK_S_OK as u8);
    let mut id = b"test-disk-id".to_vec();
    id.resize(20, 0);
    assert_eq!(s.bytes(DATA, 20), id);
    assert_eq!(s.bytes(DATA + 20, 1), [POISON]);
}

#[test]
fn readonly_disk_refuses_writes() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(true, &mock);
    let before = s.disk.contents();
    s.header(VIRTIO_BLK_T_OUT, 0);
    chain(
        &mock,
        0,
        &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
    );
    b.process_requests(usize::MAX);
    assert_eq!(used(&mock, 0), (0, 1));
    assert_eq!(s.status(), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(s.disk.contents(), before);
    // And the file really is read-only.
    assert!(b.disk().readonly());
    assert!(b.disk.file_is_readonly());
}

/// Runs one request whose chain is `descs` and returns (used len, status
/// byte); checks the disk and the data buffers were not touched.
fn hostile(kind: u32, sector: u64, descs: &[(u64, u32, bool)]) -> (u32, u8) {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    let before = s.disk.contents();
    s.header(kind, sector);
    chain(&mock, 0, descs);
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 1, "request not completed");
    assert!(!b.core().interrupt().needs_reset());
    assert_eq!(s.disk.contents(), before, "disk changed");
    assert_eq!(s.bytes(DATA, 0x2000), vec![POISON; 0x2000], "data written");
    (used(&mock, 0).1, s.status())
}

const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

#[test]
fn data_outside_guest_memory() {
    let beyond = MEM_SIZE as u64 - 256;
    for kind in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        let w = kind == VIRTIO_BLK_T_IN;
        // Straddling the end of memory, after a good segment.
        let r = hostile(
            kind,
            0,
            &[
                (HDR, 16, false),
                (DATA, 512, w),
                (beyond, 512, w),
                (STATUS, 1, true),
            ],
        );
        assert_eq!(r, (1, IOERR));
        let r = hostile(
            kind,
            0,
            &[(HDR, 16, false), (u64::MAX - 10, 512, w), (STATUS, 1, true)],
        );
        assert_eq!(r, (1, IOERR));
    }
    // Header outside memory.
    let r = hostile(
        VIRTIO_BLK_T_IN,
        0,
        &[
            (MEM_SIZE as u64, 16, false),
            (DATA, 512, true),
            (STATUS, 1, true),
        ],
    );
    assert_eq!(r, (1, IOERR));
    // GET_ID buffer outside memory.
    let r = hostile(
        VIRTIO_BLK_T_GET_ID,
        0,
        &[
            (HDR, 16, false),
            (beyond + 250, 20, true),
            (STATUS, 1, true),
        ],
    );
    assert_eq!(r, (1, IOERR));
}

#[test]
fn wrong_directions() {
    // IN into device-readable data.
    let r = hostile(
        VIRTIO_BLK_T_IN,
        0,
        &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, IOERR));
    // OUT from device-writable data.
    let r = hostile(
        VIRTIO_BLK_T_OUT,
        0,
        &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, IOERR));
    // Device-writable header.
    let r = hostile(
        VIRTIO_BLK_T_IN,
        0,
        &[(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, IOERR));
    // GET_ID into a device-readable buffer.
    let r = hostile(
        VIRTIO_BLK_T_GET_ID,
        0,
        &[(HDR, 16, false), (DATA, 20, false), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, IOERR));
}

#[test]
fn short_header_or_status() {
    let r = hostile(
        VIRTIO_BLK_T_IN,
        0,
        &[(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, IOERR));
    // Status descriptor of length 0, or device-readable: nothing written.
    for status in [(STATUS, 0, true), (STATUS, 1, false)] {
        let r = hostile(
            VIRTIO_BLK_T_IN,
            0,
            &[(HDR, 16, false), (DATA, 512, true), status],
        );
        assert_eq!(r, (0, POISON));
    }
    // Status outside guest memory.
    let r = hostile(
        VIRTIO_BLK_T_IN,
        0,
        &[
            (HDR, 16, false),
            (DATA, 512, true),
            (MEM_SIZE as u64, 1, true),
        ],
    );
    assert_eq!(r.0, 0);
    // A lone status descriptor, no header.
    let r = hostile(VIRTIO_BLK_T_IN, 0, &[(STATUS, 1, true)]);
    assert_eq!(r, (1, IOERR));
}

#[test]
fn sectors_beyond_the_end() {
    let io = |sector, len| {
        hostile(
            VIRTIO_BLK_T_IN,
            sector,
            &[(HDR, 16, false), (DATA, len, true), (STATUS, 1, true)],
        )
    };
    assert_eq!(io(DISK_SECTORS, 512), (1, IOERR));
    assert_eq!(io(DISK_SECTORS - 1, 1024), (1, IOERR));
    assert_eq!(io(u64::MAX, 512), (1, IOERR));
    assert_eq!(io(u64::MAX / 512 + 1, 512), (1, IOERR));
    // Not a whole number of sectors.
    assert_eq!(io(0, 100), (1, IOERR));
    let r = hostile(
        VIRTIO_BLK_T_OUT,
        DISK_SECTORS,
        &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, IOERR));
}

#[test]
fn unknown_request_type() {
    let r = hostile(
        VIRTIO_BLK_T_DISCARD,
        0,
        &[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)],
    );
    assert_eq!(r, (1, VIRTIO_BLK_S_UNSUPP as u8));
}

#[test]
fn loop_in_chain_terminates() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    let before = s.disk.contents();
    s.header(VIRTIO_BLK_T_IN, 0);
    // 0 -> 1 -> 2 -> 1 -> 2 ...
    let next = (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16;
    let raw = [
        RawDescriptor::from(SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDescriptor::new(DATA, 512, next, 2)),
        RawDescriptor::from(SplitDescriptor::new(STATUS, 1, next, 1)),
    ];
    mock.add_desc_chains(&raw, 0).unwrap();
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 1);
    assert!(!b.core().interrupt().needs_reset());
    assert_eq!(s.disk.contents(), before);
    // Self-loop on the head.
    let raw = [RawDescriptor::from(SplitDescriptor::new(
        HDR,
        16,
        VRING_DESC_F_NEXT as u16,
        3,
    ))];
    mock.add_desc_chains(&raw, 3).unwrap();
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 2);
    assert_eq!(used(&mock, 1), (3, 0));
}

#[test]
fn runaway_avail_index_needs_reset() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    // The driver claims more chains than the ring holds.
    mock.avail().idx().store(QSIZE + 1);
    b.process_requests(usize::MAX);
    assert!(b.core().interrupt().needs_reset());
    assert_eq!(b.core().interrupt().status() & 2, 2, "no config interrupt");
    assert_eq!(used_idx(&mock), 0);
    // Stopped: nothing more is served.
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 0);
}

#[test]
fn head_index_beyond_queue_needs_reset() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    mock.avail().ring().ref_at(0).unwrap().store(QSIZE + 3);
    mock.avail().idx().store(1);
    b.process_requests(usize::MAX);
    assert!(b.core().interrupt().needs_reset());
}

#[test]
fn invalid_queue_refuses_activation() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    b.reset();
    assert!(!b.is_activated());
    // Not ready.
    assert!(b.activate().is_err());
    // Rings outside guest memory.
    let q = &mut b.queues_mut()[0];
    q.set_ready(true);
    q.set_used_ring_address(Some(0xffff_f000), Some(0xf));
    assert!(b.activate().is_err());
}

#[test]
fn event_idx_suppresses_interrupts() {
    let s = Setup::new();
    let mock = MockSplitQueue::new(s.mem.as_ref(), QSIZE);
    let mut b = s.block(false, &mock);
    assert!(b.queues()[0].event_idx_enabled());
    // used_event (after the avail ring) = 5: no interrupt for the first one.
    let used_event = mock.avail_addr().0 + 4 + 2 * u64::from(QSIZE);
    s.mem.write_obj(5u16, GuestAddress(used_event)).unwrap();
    s.header(VIRTIO_BLK_T_FLUSH, 0);
    chain(&mock, 0, &[(HDR, 16, false), (STATUS, 1, true)]);
    b.process_requests(usize::MAX);
    assert_eq!(used_idx(&mock), 1);
    assert_eq!(b.core().interrupt().status(), 0);
}

#[test]
fn open_errors() {
    let missing = std::env::temp_dir().join("ember-no-such-disk.img");
    assert!(matches!(
        open_disk(&missing, true),
        Err(DiskError::Open(..))
    ));
    let d = TempDisk::new();
    let mut f = std::fs::OpenOptions::new().append(true).open(&d.0).unwrap();
    f.write_all(&[1, 2, 3]).unwrap();
    assert!(
        matches!(open_disk(&d.0, false), Err(DiskError::Size(_, n)) if n == DISK_SECTORS * 512 + 3)
    );
    f.seek(SeekFrom::Start(0)).unwrap();
}
