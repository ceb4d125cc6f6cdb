//! The lease breaker: when someone opens a kernel or initrd file that
//! guest memory is mapped from for writing (see [`crate::boot::lease`]),
//! pause the VM, move the mapped ranges to anonymous memory, resume, and
//! release the lease.

use std::sync::Arc;
use std::time::Instant;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::{Quiesce, PAUSE_DEADLINE};
use crate::boot::lease::Leases;

/// Event-loop subscriber: on `SIGIO` (a lease break), detaches guest
/// memory from the files with the vCPUs paused.
#[derive(Debug)]
pub struct LeaseBreaker {
    leases: Leases,
    quiesce: Arc<Quiesce>,
}

impl LeaseBreaker {
    /// Watches `leases` for the VM that `quiesce` pauses.
    pub fn new(leases: Leases, quiesce: Arc<Quiesce>) -> Self {
        LeaseBreaker { leases, quiesce }
    }

    fn drain_signals(&self) {
        while self.leases.sigio().read_signal().is_some() {}
    }

    /// Pauses the VM (vCPUs and device threads: a disk read could target
    /// a mapped page too) and detaches guest memory from the files.
    pub fn detach(&mut self) {
        if self.leases.is_empty() {
            return;
        }
        let bytes = self.leases.mapped_bytes();
        if let Err(e) = self.quiesce.pause(Instant::now() + PAUSE_DEADLINE) {
            // A thread stuck for seconds: copy anyway rather than leave
            // the writer blocked, and say so.
            log::warn!("{e}; detaching guest memory from the kernel files anyway");
        }
        match self.leases.detach() {
            Ok(()) => log::info!(
                "a kernel or initrd file is being written: {} KiB of guest memory copied from it, lease released",
                bytes / 1024
            ),
            Err(e) => log::error!("cannot detach guest memory from the kernel files: {e}"),
        }
        self.quiesce.resume();
    }
}

impl MutEventSubscriber for LeaseBreaker {
    fn init(&mut self, ops: &mut EventOps) {
        let fd = self.leases.sigio().fd();
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            log::error!("event loop: cannot watch the SIGIO signalfd: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.drain_signals();
        self.detach();
        let _ = ops.remove(events);
    }
}
