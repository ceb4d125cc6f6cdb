//! One [`Bus`] type for both port I/O and MMIO: devices sit at address
//! ranges and see reads and writes at an offset, so the vCPU loop never
//! sees a port number.
//!
//! Accesses that hit no device are logged at debug level; reads return
//! all ones, like an empty ISA/PCI bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a [`Bus`].
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared bus device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Bus errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The new range overlaps an existing one or is empty.
    #[error("{bus} range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap {
        /// Bus name.
        bus: &'static str,
        /// Base address.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Range {
    len: u64,
    device: SharedDevice,
}

/// An address space of devices.
pub struct Bus {
    name: &'static str,
    ranges: BTreeMap<u64, Range>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<(u64, u64)> = self.ranges.iter().map(|(b, r)| (*b, r.len)).collect();
        f.debug_struct("Bus")
            .field("name", &self.name)
            .field("ranges", &ranges)
            .finish()
    }
}

impl Bus {
    /// An empty bus; `name` appears in logs ("pio", "mmio").
    pub fn new(name: &'static str) -> Self {
        Bus {
            name,
            ranges: BTreeMap::new(),
        }
    }

    /// Inserts `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), Error> {
        let overlap = Error::Overlap {
            bus: self.name,
            base,
            len,
        };
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(overlap);
        };
        if let Some((b, r)) = self.ranges.range(..end).next_back() {
            if b + r.len > base {
                return Err(overlap);
            }
        }
        self.ranges.insert(base, Range { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, len: usize) -> Option<(u64, &SharedDevice)> {
        let (base, range) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset + len as u64 <= range.len).then_some((offset, &range.device))
    }

    /// Dispatches a read; returns false (and fills all ones) if no device
    /// covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .read(offset, data);
                true
            }
            None => {
                log::debug!(
                    "{}: unhandled read of {} bytes at {:#x}",
                    self.name,
                    data.len(),
                    addr
                );
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false if no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .write(offset, data);
                true
            }
            None => {
                log::debug!(
                    "{}: unhandled write {:02x?} at {:#x}",
                    self.name,
                    data,
                    addr
                );
                false
            }
        }
    }
}

/// A device that ignores writes and reads all ones, quietly: for ports
/// guests probe (POST code, CMOS, PCI config, absent UARTs, VGA).
#[derive(Debug, Default)]
pub struct Quiet;

impl BusDevice for Quiet {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_at_offset() {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new("pio");
        bus.insert(0x3f8, 8, rec.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, b"A"));
        assert_eq!(rec.lock().unwrap().writes, vec![(0, b"A".to_vec())]);
        // Outside, and straddling the end.
        let mut w = [0u8; 2];
        assert!(!bus.read(0x3ff, &mut w));
        assert_eq!(w, [0xff, 0xff]);
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b, [0xff]);
        assert!(!bus.write(0x400, b"x"));
    }

    #[test]
    fn overlaps_rejected() {
        let mut bus = Bus::new("mmio");
        let d = || Arc::new(Mutex::new(Quiet)) as SharedDevice;
        bus.insert(0x1000, 0x100, d()).unwrap();
        assert!(bus.insert(0x10ff, 1, d()).is_err());
        assert!(bus.insert(0xf01, 0x100, d()).is_err());
        assert!(bus.insert(0x1000, 0, d()).is_err());
        assert!(bus.insert(u64::MAX, 2, d()).is_err());
        bus.insert(0x1100, 1, d()).unwrap();
        bus.insert(0xf00, 0x100, d()).unwrap();
    }

    #[test]
    fn quiet_reads_ones() {
        let mut q = Quiet;
        let mut d = [0u8; 4];
        q.read(0, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
