//! virtio-block (virtio 1.2 §5.2): a disk image file as `/dev/vdX`.
//!
//! [`Block`] is the device: features, configuration space, one request
//! queue. Its queue work ([`Block::process_queue`]) runs on the event loop
//! thread through [`BlockHandler`], woken by the queue's ioeventfd; the
//! requests themselves (parsing, bounds, file I/O) are in [`request`].
//!
//! Offered features: `VERSION_1`, `SEG_MAX`, `BLK_SIZE` (512), `FLUSH`,
//! `RING_EVENT_IDX`, and `RO` for a read-only disk. A guest that breaks the
//! queue itself (an available index running ahead of the ring, a used ring
//! that cannot be written) puts the device into `DEVICE_NEEDS_RESET`; a bad
//! request only fails that request.

pub mod request;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_ID_BYTES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{activate_queues, read_config_bytes, ActivateError, Interrupt, VirtioDevice};
use crate::memory::GuestMemoryMmap;
pub use request::Disk;

/// Sector size of the virtio-block protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the one request queue. 1024 (the most Linux and QEMU use) lets a
/// 1 MiB request of 4 KiB pages travel as one chain (256 data segments plus
/// header and status); with 256 Linux splits it in two.
pub const QUEUE_SIZE: u16 = 1024;
/// Most data segments per request: the queue size minus the header and
/// status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Length of the configuration space we expose (`virtio_blk_config` up to
/// and including `blk_size`).
pub const CONFIG_LEN: usize = 24;
/// Event-manager key of the request queue's ioeventfd.
pub const QUEUE_EVENT: u32 = 0;

/// Block device errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk file cannot be opened or inspected.
    #[error("cannot open disk {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// The disk is neither a regular file nor a block device.
    #[error("disk {0} is neither a regular file nor a block device")]
    NotADisk(PathBuf),
    /// The disk's size is not a multiple of 512 bytes.
    #[error("disk {0} is {1} bytes, not a multiple of 512")]
    Size(PathBuf, u64),
    /// The queue's eventfd cannot be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// virtio-queue rejected the queue size (a bug).
    #[error("cannot create the virtio queue")]
    Queue(#[source] virtio_queue::Error),
}

/// Opens a disk image (read-only or read-write) and returns it with its
/// size in bytes, checking that the size is a multiple of 512.
pub fn open_disk(path: &Path, readonly: bool) -> Result<(File, u64), Error> {
    let open_err = |e| Error::Open(path.to_path_buf(), e);
    let file = OpenOptions::new()
        .read(true)
        .write(!readonly)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let size = if meta.file_type().is_file() {
        meta.len()
    } else if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Err(Error::NotADisk(path.to_path_buf()));
    } else {
        // Block devices report size 0 in their metadata: seek to the end.
        use std::io::Seek;
        (&file).seek(std::io::SeekFrom::End(0)).map_err(open_err)?
    };
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::Size(path.to_path_buf(), size));
    }
    Ok((file, size))
}

/// The default serial number (`GET_ID`) of a disk without `id=`: derived
/// from the file's device and inode numbers, so it is stable across runs.
pub fn default_id(file: &File) -> String {
    match file.metadata() {
        Ok(m) => format!("ember-{:x}-{:x}", m.dev(), m.ino()),
        Err(_) => "ember-disk".to_string(),
    }
}

/// The virtio-block device.
#[derive(Debug)]
pub struct Block {
    disk: Disk,
    avail_features: u64,
    acked_features: u64,
    config: [u8; CONFIG_LEN],
    queues: [Queue; 1],
    queue_events: [EventFd; 1],
    interrupt: Arc<Interrupt>,
    mem: Arc<GuestMemoryMmap>,
    activated: bool,
}

impl Block {
    /// A device for `file` of `size` bytes (a multiple of 512).
    pub fn new(
        file: File,
        size: u64,
        readonly: bool,
        id: &str,
        mem: Arc<GuestMemoryMmap>,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, Error> {
        let sectors = size / SECTOR_SIZE;
        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_RING_F_EVENT_IDX);
        if readonly {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        // struct virtio_blk_config: capacity (le64), size_max (le32),
        // seg_max (le32), geometry (4 bytes), blk_size (le32).
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&sectors.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = id.len().min(serial.len());
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        let queue_event =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(Error::EventFd)?;
        Ok(Block {
            disk: Disk::new(file, sectors, readonly, serial),
            avail_features: features,
            acked_features: 0,
            config,
            queues: [Queue::new(QUEUE_SIZE).map_err(Error::Queue)?],
            queue_events: [queue_event],
            interrupt,
            mem,
            activated: false,
        })
    }

    /// Serves every available request, then re-enables notifications and
    /// looks again (so a request added meanwhile is not missed); interrupts
    /// the driver once if it asked for it. A broken queue sets
    /// `DEVICE_NEEDS_RESET` and stops the device until the driver resets it.
    pub fn process_queue(&mut self) {
        if !self.activated || self.interrupt.needs_reset() {
            return;
        }
        let mem: &GuestMemoryMmap = &self.mem;
        let queue = &mut self.queues[0];
        let mut used = false;
        let result = (|| -> Result<(), virtio_queue::Error> {
            loop {
                queue.disable_notification(mem)?;
                while let Some(chain) = queue.iter(mem)?.next() {
                    let head = chain.head_index();
                    let len = self.disk.execute(mem, chain);
                    queue.add_used(mem, head, len)?;
                    used = true;
                }
                if !queue.enable_notification(mem)? {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = result {
            log::warn!("virtio-block: broken queue ({e}); device needs reset");
            self.interrupt.set_needs_reset();
            return;
        }
        if used && queue.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_used_queue();
        }
    }

    /// The disk behind the device.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
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
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // Nothing in our configuration space is writable (no CONFIG_WCE).
        log::debug!("virtio-block: ignoring config write at {offset:#x}");
    }
    fn activate(&mut self) -> Result<(), ActivateError> {
        // Kicked: serve anything queued before the driver finished.
        activate_queues(
            &mut self.queues,
            &self.mem,
            self.acked_features,
            &self.queue_events[0],
            "virtio-block",
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
    }
}

/// The event-loop side of a [`Block`]: drains the queue's ioeventfd and
/// processes the queue.
#[derive(Debug)]
pub struct BlockHandler {
    device: Arc<Mutex<Block>>,
}

impl BlockHandler {
    /// A handler for `device`.
    pub fn new(device: Arc<Mutex<Block>>) -> Self {
        BlockHandler { device }
    }
}

impl MutEventSubscriber for BlockHandler {
    fn init(&mut self, ops: &mut EventOps) {
        let dev = self.device.lock().unwrap_or_else(|p| p.into_inner());
        let evt = &dev.queue_events[0];
        if let Err(e) = ops.add(Events::with_data(evt, QUEUE_EVENT, EventSet::IN)) {
            log::error!("virtio-block: cannot watch the queue event: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let mut dev = self.device.lock().unwrap_or_else(|p| p.into_inner());
        match events.data() {
            QUEUE_EVENT => {
                let _ = dev.queue_events[0].read();
                dev.process_queue();
            }
            other => log::warn!("virtio-block: unexpected event {other}"),
        }
    }
}

#[cfg(test)]
mod tests;
