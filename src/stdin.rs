//! stdin → the guest's console input: the 16550's receive FIFO
//! (`--console serial`) or the virtio console's receiveq
//! (`--console virtio`), never both.
//!
//! [`StdinForwarder`] runs on the event loop thread. It reads stdin into a
//! pending buffer and hands the guest as much as its [`InputSink`] takes;
//! the sink's "ready" eventfd (the UART's FIFO-empty event, or the
//! receiveq's notification when the driver posts buffers) brings it back
//! for the rest. The pending buffer holds at most [`STDIN_BUFFER_CAP`]
//! bytes: past that, stdin is no longer polled, so a writer into a pipe
//! blocks instead of losing input or growing ember's memory. EOF (or an
//! error) stops polling stdin: nothing spins. A stdin that cannot be
//! polled (a regular file, `/dev/null`) is read once, up to the cap.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::serial::SerialDevice;
use crate::devices::virtio::console::Console;

/// Input bytes buffered before ember stops reading stdin.
pub const STDIN_BUFFER_CAP: usize = 64 * 1024;

const STDIN: RawFd = libc::STDIN_FILENO;

/// A device that takes console input.
pub trait InputSink: Send {
    /// Queues as many of `bytes` as the device takes now; returns how many.
    fn enqueue(&mut self, bytes: &[u8]) -> usize;
}

impl InputSink for Arc<Mutex<SerialDevice>> {
    fn enqueue(&mut self, bytes: &[u8]) -> usize {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .enqueue(bytes)
    }
}

impl InputSink for Arc<Mutex<Console>> {
    fn enqueue(&mut self, bytes: &[u8]) -> usize {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .receive(bytes)
    }
}

/// Forwards stdin bytes to an [`InputSink`] as the guest takes them.
pub struct StdinForwarder {
    sink: Box<dyn InputSink>,
    ready: EventFd,
    pending: VecDeque<u8>,
    watching: bool,
    eof: bool,
}

impl std::fmt::Debug for StdinForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinForwarder")
            .field("pending", &self.pending.len())
            .field("watching", &self.watching)
            .field("eof", &self.eof)
            .finish()
    }
}

impl StdinForwarder {
    /// A forwarder into `sink`; `ready` fires when the sink may take more.
    pub fn new(sink: Box<dyn InputSink>, ready: EventFd) -> Self {
        StdinForwarder {
            sink,
            ready,
            pending: VecDeque::new(),
            watching: false,
            eof: false,
        }
    }

    /// Reads once from stdin; returns false at EOF or on error.
    fn read_stdin(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: reading at most buf.len() bytes into `buf`.
        let n = unsafe { libc::read(STDIN, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n > 0 => {
                self.pending.extend(&buf[..n as usize]);
                true
            }
            0 => false,
            _ => {
                let err = std::io::Error::last_os_error();
                matches!(
                    err.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                )
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.sink.enqueue(self.pending.make_contiguous());
        self.pending.drain(..n);
    }

    fn update_interest(&mut self, ops: &mut EventOps) {
        let want = !self.eof && self.pending.len() < STDIN_BUFFER_CAP;
        if want && !self.watching {
            match ops.add(Events::new_raw(STDIN, EventSet::IN)) {
                Ok(()) => self.watching = true,
                Err(e) => {
                    // Regular files cannot be polled: read them now.
                    log::debug!("stdin is not pollable ({e}); reading it directly");
                    while self.pending.len() < STDIN_BUFFER_CAP && self.read_stdin() {}
                    self.eof = true;
                }
            }
        } else if !want && self.watching {
            let _ = ops.remove(Events::new_raw(STDIN, EventSet::IN));
            self.watching = false;
        }
    }
}

impl MutEventSubscriber for StdinForwarder {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.ready, EventSet::IN)) {
            log::error!("event loop: cannot watch the console's input-ready event: {e}");
        }
        self.update_interest(ops);
        self.flush();
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == STDIN {
            if !self.read_stdin() {
                self.eof = true;
            }
        } else {
            let _ = self.ready.read();
        }
        self.flush();
        self.update_interest(ops);
    }
}
