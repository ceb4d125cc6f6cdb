//! virtio-block (virtio 1.2 §5.2): a disk image file as `/dev/vdX`.
//!
//! [`Block`] is the device: features, configuration space, one request
//! queue. Its queue work ([`Block::process_requests`]) runs on the disk's
//! own thread ([`super::worker`]), woken by the queue's ioeventfd; the
//! requests themselves (parsing, bounds, file I/O) are in [`request`].
//!
//! Offered features: `VERSION_1`, `SEG_MAX`, `BLK_SIZE` (512), `FLUSH`,
//! `RING_EVENT_IDX`, and `RO` for a read-only disk. A guest that breaks the
//! queue itself (an available index running ahead of the ring, a used ring
//! that cannot be written) puts the device into `DEVICE_NEEDS_RESET`; a bad
//! request only fails that request.

pub mod request;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_ID_BYTES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::{read_config_bytes, CoreError, DeviceCore, Interrupt, Served, VirtioDevice};
use crate::memory::GuestMemoryMmap;
pub use request::Disk;

/// Sector size of the virtio-block protocol.
pub const SECTOR_SIZE: u64 = crate::config::SECTOR_SIZE;
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

/// Block device errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device's queue or eventfd cannot be created.
    #[error(transparent)]
    Core(#[from] CoreError),
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
    core: DeviceCore,
    disk: Disk,
    config: [u8; CONFIG_LEN],
}

impl Block {
    /// A device for `file` of `size` bytes (a multiple of 512).
    pub fn new(
        file: Arc<File>,
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
        // Kicked at activation: serve anything queued before the driver
        // finished.
        let core = DeviceCore::new(features, &[QUEUE_SIZE], 0, mem, interrupt)?;
        Ok(Block {
            core,
            disk: Disk::new(file, sectors, readonly, serial),
            config,
        })
    }

    /// Serves the available requests, at most `budget` (see
    /// [`super::serve_queue`]).
    pub fn process_requests(&mut self, budget: usize) -> Served {
        let disk = &mut self.disk;
        self.core.serve(0, budget, "virtio-block", |mem, chain| {
            disk.execute(mem, chain)
        })
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
    fn core(&self) -> &DeviceCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut DeviceCore {
        &mut self.core
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn process_queue(&mut self, _index: usize, budget: usize) -> Served {
        self.process_requests(budget)
    }
}

#[cfg(test)]
mod tests;
