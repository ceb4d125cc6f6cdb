//! Disk images as the config opens them: once, in their mode, with a size
//! that is a multiple of 512.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Sector size of disks (virtio-block's unit).
pub const SECTOR_SIZE: u64 = 512;

/// Why a disk image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The disk file cannot be opened or inspected.
    #[error("cannot open disk {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// The disk is neither a regular file nor a block device.
    #[error("disk {0} is neither a regular file nor a block device")]
    NotADisk(PathBuf),
    /// The disk's size is not a multiple of 512 bytes.
    #[error("disk {0} is {1} bytes, not a multiple of 512")]
    Size(PathBuf, u64),
}

/// Opens a disk image (read-only or read-write) and returns it with its
/// size in bytes, checking that the size is a multiple of 512.
pub fn open_disk(path: &Path, readonly: bool) -> Result<(File, u64), DiskError> {
    let open_err = |e| DiskError::Open(path.to_path_buf(), e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!readonly)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let size = if meta.file_type().is_file() {
        meta.len()
    } else if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Err(DiskError::NotADisk(path.to_path_buf()));
    } else {
        // Block devices report size 0 in their metadata: seek to the end.
        use std::io::Seek;
        (&file).seek(std::io::SeekFrom::End(0)).map_err(open_err)?
    };
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(DiskError::Size(path.to_path_buf(), size));
    }
    Ok((file, size))
}
