//! A virtio device's queue thread: waits on the device's queue eventfds
//! (the ioeventfds KVM writes on `QueueNotify`) and serves each notified
//! queue through [`VirtioDevice::process_queue`], so disk I/O and console
//! output never run on the event loop, and a slow `fdatasync` on one disk
//! stalls only that disk.
//!
//! The VM controls the thread through a [`WorkerHandle`] (`stop`, and
//! `join` with a deadline) and its [`WorkerPause`] (`pause` returns once
//! the thread is parked between requests, so the VM's state can be read
//! or guest memory changed; `resume` lets it go on). A queue whose budget ran out
//! ([`Served::More`]) is served again right after the thread has looked
//! at its control eventfd, so a guest that keeps a queue busy forever
//! cannot keep the thread from stopping.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{Served, VirtioDevice};
use crate::devices::output::Output;

/// Epoll data of the control eventfd (queue `i` uses `i`).
const CONTROL: u64 = u64::MAX;

/// Worker errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// epoll, an eventfd or its duplicate could not be created.
    #[error("cannot set up the queue thread of {0}")]
    Setup(String, #[source] std::io::Error),
    /// The thread could not be spawned.
    #[error("cannot spawn the queue thread of {0}")]
    Spawn(String, #[source] std::io::Error),
}

/// What the VM asks of the thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Run,
    Pause,
    Stop,
}

#[derive(Debug)]
struct State {
    ask: Ask,
    /// The thread is parked (paused) between requests.
    parked: bool,
    /// The thread has ended.
    done: bool,
}

#[derive(Debug)]
struct Control {
    state: Mutex<State>,
    changed: Condvar,
    wake: EventFd,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ask(&self, ask: Ask) {
        let mut s = self.lock();
        if s.ask != Ask::Stop {
            s.ask = ask;
        }
        drop(s);
        self.changed.notify_all();
        if let Err(e) = self.wake.write(1) {
            log::error!("cannot wake a device thread: {e}");
        }
    }

    /// Waits until `pred` holds or `deadline` passes; true if it holds.
    fn wait_for(&self, deadline: Instant, pred: impl Fn(&State) -> bool) -> bool {
        let mut s = self.lock();
        while !pred(&s) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// The VM's side of a device's queue thread.
#[derive(Debug)]
pub struct WorkerHandle {
    pause: WorkerPause,
    thread: Option<JoinHandle<()>>,
}

/// Chains (or empty looks) served per queue before the thread looks at its
/// control eventfd again.
pub const BUDGET: usize = 256;

/// Starts the queue thread `name` of `device`, serving the queues
/// [`VirtioDevice::worker_queues`] lists (queues 0..64); a device whose work produces
/// console output passes that `output`, whose back-pressure the thread
/// then obeys between batches.
pub fn spawn<D: VirtioDevice + ?Sized + 'static>(
    name: &str,
    device: Arc<Mutex<D>>,
    output: Option<Output>,
) -> Result<WorkerHandle, Error> {
    let setup = |e| Error::Setup(name.to_string(), e);
    let epoll = Epoll::new().map_err(setup)?;
    let wake = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(setup)?;
    let mut events = Vec::new();
    {
        let dev = device.lock().unwrap_or_else(|p| p.into_inner());
        for i in dev.worker_queues().into_iter().filter(|&i| i < 64) {
            let evt = dev.queue_events()[i].try_clone().map_err(setup)?;
            let ev = EpollEvent::new(EventSet::IN, i as u64);
            epoll
                .ctl(ControlOperation::Add, evt.as_raw_fd(), ev)
                .map_err(setup)?;
            events.push((i, evt));
        }
    }
    epoll
        .ctl(
            ControlOperation::Add,
            wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, CONTROL),
        )
        .map_err(setup)?;
    let control = Arc::new(Control {
        state: Mutex::new(State {
            ask: Ask::Run,
            parked: false,
            done: false,
        }),
        changed: Condvar::new(),
        wake,
    });
    let thread_control = control.clone();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            crate::signal::block_all_on_this_thread();
            run(&epoll, &events, &thread_control, &device, output.as_ref());
            thread_control.lock().done = true;
            thread_control.changed.notify_all();
        })
        .map_err(|e| Error::Spawn(name.to_string(), e))?;
    Ok(WorkerHandle {
        pause: WorkerPause {
            name: name.to_string(),
            control,
        },
        thread: Some(thread),
    })
}

/// The thread's loop.
fn run<D: VirtioDevice + ?Sized>(
    epoll: &Epoll,
    events: &[(usize, EventFd)],
    control: &Control,
    device: &Mutex<D>,
    output: Option<&Output>,
) {
    let mut ready = [EpollEvent::default(); 8];
    // Queues to serve (bit i: queue i), kept from a round whose budget
    // ran out: a bit set, not a list, so a wake-up allocates nothing.
    let mut again: u64 = 0;
    loop {
        // Between requests: obey the VM first.
        {
            let mut s = control.lock();
            loop {
                match s.ask {
                    Ask::Stop => return,
                    Ask::Run => break,
                    Ask::Pause => {
                        s.parked = true;
                        control.changed.notify_all();
                        s = control.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
            s.parked = false;
        }
        let timeout = if again == 0 { -1 } else { 0 };
        let n = match epoll.wait(timeout, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("device thread: epoll failed: {e}");
                return;
            }
        };
        let mut notified = std::mem::take(&mut again);
        for ev in &ready[..n] {
            if ev.data() == CONTROL {
                let _ = control.wake.read();
                continue;
            }
            if let Some((i, evt)) = events.iter().find(|(i, _)| *i as u64 == ev.data()) {
                let _ = evt.read();
                notified |= 1 << i;
            }
        }
        for &(i, _) in events {
            if notified & (1 << i) == 0 {
                continue;
            }
            // Back-pressure from a stdout that is not read, with no lock
            // held (a stop ends the wait: see `Output::close`).
            if let Some(out) = output {
                out.wait_for_room();
            }
            let mut dev = device.lock().unwrap_or_else(|p| p.into_inner());
            if dev.process_queue(i, BUDGET) == Served::More {
                again |= 1 << i;
            }
        }
    }
}

/// A second handle on a queue thread's pause controls, for
/// [`crate::vm::Quiesce`].
#[derive(Debug, Clone)]
pub struct WorkerPause {
    name: String,
    control: Arc<Control>,
}

impl WorkerPause {
    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the thread to park between requests and waits until it has,
    /// at most until `deadline`; false if it did not (it is still asked).
    pub fn pause(&self, deadline: Instant) -> bool {
        self.control.ask(Ask::Pause);
        self.control.wait_for(deadline, |s| s.parked || s.done)
    }

    /// Lets a paused thread go on.
    pub fn resume(&self) {
        self.control.ask(Ask::Run);
    }
}

impl WorkerHandle {
    /// A handle on the pause controls alone.
    pub fn pause_handle(&self) -> WorkerPause {
        self.pause.clone()
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        self.pause.name()
    }

    /// Asks the thread to end after its current request.
    pub fn stop(&self) {
        self.pause.control.ask(Ask::Stop);
    }

    /// Waits for the thread to end, at most until `deadline`; false if it
    /// did not (it is then left detached: blocked in a slow request, say).
    pub fn join(mut self, deadline: Instant) -> bool {
        self.stop();
        if !self.pause.control.wait_for(deadline, |s| s.done) {
            return false;
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("{} thread panicked", self.pause.name);
            }
        }
        true
    }
}
