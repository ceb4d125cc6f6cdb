//! Helpers for driving devices through virtio-queue's `MockSplitQueue` in
//! unit tests: build descriptor chains, read the used ring.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;

use crate::memory::GuestMemoryMmap;

/// Descriptors `(addr, len, device-writable)` chained in order from
/// table index `first`, made available.
pub fn chain(mock: &MockSplitQueue<GuestMemoryMmap>, first: u16, descs: &[(u64, u32, bool)]) {
    let raw: Vec<RawDescriptor> = descs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, write))| {
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, first + i as u16 + 1))
        })
        .collect();
    mock.add_desc_chains(&raw, first).unwrap();
}

/// The used ring entry `i`: (head, len).
pub fn used(mock: &MockSplitQueue<GuestMemoryMmap>, i: usize) -> (u32, u32) {
    let e = mock.used().ring().ref_at(i).unwrap().load();
    (e.id(), e.len())
}

/// The used ring's index.
pub fn used_idx(mock: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
    mock.used().idx().load()
}
