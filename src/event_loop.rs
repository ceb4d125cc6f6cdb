//! The VMM thread's event loop (event-manager): it routes events and does
//! no device I/O (virtio devices serve their queues on their own threads,
//! [`crate::devices::virtio::worker`]). It ends when the VM's
//! [`ExitEvent`] has a reason; SIGTERM/SIGINT/SIGHUP arrive on a signalfd
//! and become [`StopReason::Signal`]. Subscribers: [`ExitWatcher`] (exit eventfd + signalfd),
//! [`Deadline`] (`--timeout`, `--boot-timeout`), and, added by `vmm`, the
//! stdin forwarder (`crate::stdin`) and the virtio devices' handlers.

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use std::time::Duration;
use vmm_sys_util::epoll::EventSet;

use vmm_sys_util::timerfd::TimerFd;

pub use crate::exit::{Booted, ExitEvent, StopReason};

pub use crate::signal::{SignalFd, STOP_SIGNALS};

/// Event loop errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// eventfd creation failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// Signal mask or signalfd setup failed.
    #[error(transparent)]
    Signals(#[from] crate::signal::Error),
    /// timerfd creation or arming failed.
    #[error("cannot set up the --timeout timer")]
    Timer(#[source] vmm_sys_util::errno::Error),
    /// event-manager failed.
    #[error("event loop failed")]
    EventManager(#[source] event_manager::Error),
}

/// Watches the exit eventfd and the signalfd.
#[derive(Debug)]
pub struct ExitWatcher {
    exit: ExitEvent,
    signals: SignalFd,
}

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.exit.fd(), self.signals.fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                log::error!("event loop: cannot watch fd {fd}: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.exit.fd() {
            self.exit.drain();
        } else if let Some(sig) = self.signals.read_signal() {
            log::info!("received signal {sig}, stopping the VM");
            self.exit.signal(StopReason::Signal(sig));
        }
    }
}

/// Stops the VM with [`StopReason::Deadline`] when a timerfd fires, or,
/// for a boot deadline, with [`StopReason::BootDeadline`] unless the guest
/// said it booted by then.
#[derive(Debug)]
pub struct Deadline {
    timer: TimerFd,
    after: Duration,
    exit: ExitEvent,
    boot: Option<Booted>,
}

impl Deadline {
    /// A run deadline `after` from now.
    pub fn new(after: Duration, exit: ExitEvent) -> Result<Self, Error> {
        let mut timer = TimerFd::new().map_err(Error::Timer)?;
        timer.reset(after, None).map_err(Error::Timer)?;
        Ok(Deadline {
            timer,
            after,
            exit,
            boot: None,
        })
    }

    /// A boot deadline `after` from now, met once `booted` is set.
    pub fn boot(after: Duration, exit: ExitEvent, booted: Booted) -> Result<Self, Error> {
        Ok(Deadline {
            boot: Some(booted),
            ..Deadline::new(after, exit)?
        })
    }
}

impl MutEventSubscriber for Deadline {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("event loop: cannot watch the deadline timer: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        match &self.boot {
            None => self.exit.signal(StopReason::Deadline(self.after)),
            Some(booted) if !booted.get() => self.exit.signal(StopReason::BootDeadline(self.after)),
            Some(_) => {}
        }
    }
}

/// The VMM thread's loop.
pub struct EventLoop {
    manager: EventManager<Box<dyn MutEventSubscriber + Send>>,
    exit: ExitEvent,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("exit", &self.exit)
            .finish()
    }
}

impl EventLoop {
    /// A loop that ends when `exit` is signalled; watches `signals`.
    pub fn new(exit: ExitEvent, signals: SignalFd) -> Result<Self, Error> {
        let mut manager: EventManager<Box<dyn MutEventSubscriber + Send>> =
            EventManager::new().map_err(Error::EventManager)?;
        manager.add_subscriber(Box::new(ExitWatcher {
            exit: exit.clone(),
            signals,
        }));
        Ok(EventLoop { manager, exit })
    }

    /// Adds a subscriber (the stdin forwarder, virtio device handlers).
    pub fn add(&mut self, subscriber: Box<dyn MutEventSubscriber + Send>) {
        self.manager.add_subscriber(subscriber);
    }

    /// Runs until the exit event has a reason; returns it.
    pub fn run(&mut self) -> Result<StopReason, Error> {
        loop {
            if let Some(reason) = self.exit.reason() {
                return Ok(reason);
            }
            self.manager.run().map_err(Error::EventManager)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_fires() {
        let exit = ExitEvent::new().unwrap();
        let signals = SignalFd::new(&STOP_SIGNALS).unwrap();
        let mut el = EventLoop::new(exit.clone(), signals).unwrap();
        el.add(Box::new(
            Deadline::new(Duration::from_millis(20), exit.clone()).unwrap(),
        ));
        assert_eq!(
            el.run().unwrap(),
            StopReason::Deadline(Duration::from_millis(20))
        );
    }

    #[test]
    fn boot_deadline_only_before_booting() {
        for booted_early in [false, true] {
            let exit = ExitEvent::new().unwrap();
            let signals = SignalFd::new(&STOP_SIGNALS).unwrap();
            let mut el = EventLoop::new(exit.clone(), signals).unwrap();
            let booted = Booted::default();
            if booted_early {
                let mut dev =
                    crate::devices::exit_status::ExitStatus::new(exit.clone(), booted.clone());
                crate::devices::bus::BusDevice::write(&mut dev, 1, &[0]);
            }
            let boot = Deadline::boot(Duration::from_millis(10), exit.clone(), booted).unwrap();
            el.add(Box::new(boot));
            let run = Deadline::new(Duration::from_millis(40), exit.clone()).unwrap();
            el.add(Box::new(run));
            let expected = match booted_early {
                false => StopReason::BootDeadline(Duration::from_millis(10)),
                true => StopReason::Deadline(Duration::from_millis(40)),
            };
            assert_eq!(el.run().unwrap(), expected);
        }
    }
}
