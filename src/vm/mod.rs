//! The VM as an object: it owns its parts (guest memory, KVM fds, buses,
//! devices, vCPU and device threads, the event loop) and moves through
//! explicit states.
//!
//! ```text
//!   Vm::build(config, plan) ──> Created ──start──> Running <──pause/resume──> Paused
//!                                                     │ wait (event loop)      │
//!                                                     └──────> Stopped <───────┘
//! ```
//!
//! [`Vm::build`] (`vm/build.rs`) does everything up to the vCPUs, in boot
//! order, without starting a thread that runs guest code; [`Vm::start`]
//! starts the device queue threads and the vCPU threads; [`Vm::pause`]
//! returns once every vCPU is parked outside `KVM_RUN` and every device
//! thread is between requests, so registers can be read ([`Vm::vcpu_regs`])
//! or memory changed; [`Vm::wait`] runs the event loop until a stop reason
//! arrives, then stops every thread within [`STOP_DEADLINE`] and returns
//! the [`Outcome`]. Field order is drop order: threads before the devices
//! they use, devices before the VM fd, the VM fd before guest memory.

mod build;
pub mod lease;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VmFd};

use crate::boot::lease::Leases;
use crate::device_manager::VirtioDevices;
use crate::devices::output::{ConsoleTail, Output};
use crate::devices::virtio::worker::{self, WorkerHandle, WorkerPause};
use crate::event_loop::{Deadline, EventLoop};
use crate::exit::{Booted, ExitEvent, StopReason};
use crate::memory::GuestMemoryMmap;
use crate::plan::{DeviceSlot, MachinePlan};
use crate::stdin::StdinForwarder;
use crate::terminal::RawMode;
use crate::timeline::{Phase, Timeline};
use crate::vcpu::exit::Buses;
use crate::vcpu::{self, Vcpu, VcpuControl, VcpuHandle};
use crate::{boot, device_manager, devices, event_loop, kvm, memory, terminal};

pub use build::Options;

/// How long a stop waits for the vCPU and device threads, and for a
/// stalled stdout to take the last output: a stop signal ends ember
/// within about a second whatever the guest or stdout does.
pub const STOP_DEADLINE: Duration = Duration::from_millis(400);
/// How long a pause waits for every vCPU and device thread.
pub const PAUSE_DEADLINE: Duration = Duration::from_secs(2);

/// Errors building or running the VM, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` unusable.
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// KVM_CREATE_VM failed.
    #[error("cannot create the VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR failed.
    #[error("cannot set the TSS or identity-map address")]
    TssAddr(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("cannot create the in-kernel irqchip")]
    Irqchip(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_PIT2 failed.
    #[error("cannot create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    /// Kernel loading.
    #[error(transparent)]
    Boot(#[from] boot::Error),
    /// KVM_GET_SUPPORTED_CPUID or KVM_GET_VCPU_MMAP_SIZE failed.
    #[error("cannot query KVM for CPUID or the vCPU mapping size")]
    KvmQuery(#[source] kvm_ioctls::Error),
    /// vCPU setup or start.
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    /// Devices.
    #[error(transparent)]
    Devices(#[from] device_manager::Error),
    /// A device queue thread.
    #[error(transparent)]
    Worker(#[from] worker::Error),
    /// Terminal.
    #[error(transparent)]
    Terminal(#[from] terminal::Error),
    /// Event loop.
    #[error(transparent)]
    EventLoop(#[from] event_loop::Error),
    /// Masking the in-kernel PIC failed.
    #[error(transparent)]
    Pic(#[from] devices::pic::Error),
    /// Setting up file leases failed.
    #[error(transparent)]
    Lease(#[from] boot::lease::Error),
    /// The console output thread could not be started.
    #[error("cannot start the console output thread")]
    Output(#[source] std::io::Error),
    /// An operation the VM's state does not allow (a bug in the caller).
    #[error("cannot {op} a VM that is {state:?}")]
    State {
        /// What was asked.
        op: &'static str,
        /// The state it was in.
        state: VmState,
    },
    /// A thread did not pause in time.
    #[error("{0} did not pause within {PAUSE_DEADLINE:?}")]
    PauseTimeout(String),
    /// The machine plan.
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
}

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Built; no guest code has run.
    Created,
    /// vCPU and device threads running.
    Running,
    /// Every vCPU parked outside `KVM_RUN`, every device thread between
    /// requests.
    Paused,
    /// Every thread stopped (or given up on).
    Stopped,
}

/// How a VM run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it stopped. A reset or triple fault after "Kernel panic" on the
    /// console is reported as [`StopReason::GuestPanic`].
    pub reason: StopReason,
    /// The end of the console output.
    pub console: ConsoleTail,
    /// Console output that never reached stdout (it was not being read).
    pub dropped_output: u64,
    /// Threads that did not stop within [`STOP_DEADLINE`] (blocked in a
    /// slow host request, say) and were left behind: ember exits without
    /// them, non-zero.
    pub stuck: Vec<String>,
}

/// Everything that parks for a pause: the vCPUs and the device threads.
/// Shared with the lease breaker, which pauses the VM from the event loop.
#[derive(Debug, Default)]
pub struct Quiesce {
    vcpus: Vec<Arc<VcpuControl>>,
    workers: Vec<WorkerPause>,
}

impl Quiesce {
    /// Parks every vCPU and device thread; on error the others stay
    /// parked until [`Quiesce::resume`].
    pub fn pause(&self, deadline: Instant) -> Result<(), Error> {
        vcpu::pause_all(&self.vcpus, deadline)
            .map_err(|i| Error::PauseTimeout(format!("vCPU {i}")))?;
        for w in &self.workers {
            if !w.pause(deadline) {
                return Err(Error::PauseTimeout(format!("thread {}", w.name())));
            }
        }
        Ok(())
    }

    /// Lets every vCPU and device thread run again.
    pub fn resume(&self) {
        for w in &self.workers {
            w.resume();
        }
        vcpu::resume_all(&self.vcpus);
    }
}

/// A VM: see the module docs.
#[derive(Debug)]
pub struct Vm {
    state: VmState,
    exit: ExitEvent,
    event_loop: EventLoop,
    quiesce: Arc<Quiesce>,
    vcpu_handles: Vec<VcpuHandle>,
    workers: Vec<WorkerHandle>,
    vcpus: Vec<Vcpu>,
    virtio: VirtioDevices,
    buses: Arc<Buses>,
    booted: Booted,
    leases: Option<Leases>,
    output: Output,
    console: ConsoleTail,
    _raw_terminal: Option<RawMode>,
    stdin: Option<StdinForwarder>,
    timeouts: (Option<Duration>, Option<Duration>),
    timeline: Timeline,
    plan: MachinePlan,
    _vm_fd: VmFd,
    _kvm: Kvm,
    mem: Arc<GuestMemoryMmap>,
}

impl Vm {
    /// The VM's state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// The machine plan it was built from.
    pub fn plan(&self) -> &MachinePlan {
        &self.plan
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The buses the vCPUs dispatch to (devices at their addresses).
    pub fn buses(&self) -> &Buses {
        &self.buses
    }

    /// The virtio devices as they were wired (slot, window, IRQ), in
    /// slot order.
    pub fn virtio_devices(&self) -> Vec<DeviceSlot> {
        self.virtio.devices.iter().map(|d| d.slot).collect()
    }

    /// The end of the console output so far.
    pub fn console(&self) -> &ConsoleTail {
        &self.console
    }

    fn check(&self, op: &'static str, allowed: &[VmState]) -> Result<(), Error> {
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(Error::State {
                op,
                state: self.state,
            })
        }
    }

    /// Starts the device queue threads, then the vCPU threads (the boot
    /// vCPU enters the guest at once), and arms `--timeout` and
    /// `--boot-timeout`.
    pub fn start(&mut self) -> Result<(), Error> {
        self.check("start", &[VmState::Created])?;
        vcpu::install_kick_handler()?;
        let mut quiesce = Quiesce::default();
        for entry in &self.virtio.devices {
            let w = worker::spawn(&entry.name, entry.device.clone(), Some(self.output.clone()))?;
            quiesce.workers.push(w.pause_handle());
            self.workers.push(w);
        }
        if let Some(stdin) = self.stdin.take() {
            self.event_loop.add(Box::new(stdin));
        }
        let (timeout, boot_timeout) = self.timeouts;
        if let Some(after) = timeout {
            self.event_loop
                .add(Box::new(Deadline::new(after, self.exit.clone())?));
        }
        if let Some(after) = boot_timeout {
            let booted = self.booted.clone();
            let d = Deadline::boot(after, self.exit.clone(), booted)?;
            self.event_loop.add(Box::new(d));
        }
        // Marked before the threads are spawned: the boot vCPU may enter
        // the guest before the last thread exists, and the phases stay in
        // order.
        self.timeline.mark(Phase::VcpusStarted);
        let buses = self.buses.clone();
        self.state = VmState::Running;
        for v in std::mem::take(&mut self.vcpus) {
            let h = v.start(
                buses.clone(),
                self.exit.clone(),
                self.timeline.clone(),
                self.output.clone(),
            )?;
            quiesce.vcpus.push(h.control().clone());
            self.vcpu_handles.push(h);
        }
        self.quiesce = Arc::new(quiesce);
        if let Some(leases) = self.leases.take().filter(|l| !l.is_empty()) {
            let breaker = lease::LeaseBreaker::new(leases, self.quiesce.clone());
            self.event_loop.add(Box::new(breaker));
        }
        Ok(())
    }

    /// Parks every vCPU outside `KVM_RUN` and every device thread between
    /// requests; the VM's state can then be read.
    pub fn pause(&mut self) -> Result<(), Error> {
        self.check("pause", &[VmState::Running])?;
        if let Err(e) = self.quiesce.pause(Instant::now() + PAUSE_DEADLINE) {
            self.quiesce.resume();
            return Err(e);
        }
        self.state = VmState::Paused;
        Ok(())
    }

    /// Lets a paused VM run again.
    pub fn resume(&mut self) -> Result<(), Error> {
        self.check("resume", &[VmState::Paused])?;
        self.quiesce.resume();
        self.state = VmState::Running;
        Ok(())
    }

    /// vCPU `index`'s general registers, while paused.
    pub fn vcpu_regs(&self, index: usize) -> Result<kvm_bindings::kvm_regs, Error> {
        self.check("read the registers of", &[VmState::Paused])?;
        let h = self.vcpu_handles.get(index).ok_or(Error::State {
            op: "read the registers of a missing vCPU of",
            state: self.state,
        })?;
        Ok(h.regs()?)
    }

    /// Runs the event loop until the VM has a stop reason (resuming it
    /// first if paused), then stops every thread ([`Vm::stop`]).
    pub fn wait(mut self) -> Result<Outcome, Error> {
        if self.state == VmState::Paused {
            self.resume()?;
        }
        self.check("wait for", &[VmState::Running])?;
        let reason = self.event_loop.run();
        self.stop(reason?)
    }

    /// Ends every wait on stdout, asks every vCPU (paused or not) and
    /// device thread to stop, and waits for them until [`STOP_DEADLINE`];
    /// returns the threads that did not end by then (left detached).
    fn end_threads(&mut self) -> Vec<String> {
        let deadline = Instant::now() + STOP_DEADLINE;
        self.output.close();
        for h in &self.vcpu_handles {
            h.kick_stop();
        }
        for w in &self.workers {
            w.stop();
        }
        let mut stuck = Vec::new();
        for h in std::mem::take(&mut self.vcpu_handles) {
            if let Err(i) = h.join(deadline) {
                stuck.push(format!("vCPU {i}"));
            }
        }
        for w in std::mem::take(&mut self.workers) {
            let name = w.name().to_string();
            if !w.join(deadline) {
                stuck.push(format!("thread {name}"));
            }
        }
        stuck
    }

    /// Stops the VM for `reason`: ends every wait on stdout, asks every
    /// vCPU and device thread to stop and waits for them until
    /// [`STOP_DEADLINE`], writes what the virtio console still holds, and
    /// gives stdout the rest of the deadline to take the buffered output.
    pub fn stop(mut self, reason: StopReason) -> Result<Outcome, Error> {
        self.exit.signal(reason);
        let reason = self.exit.reason().unwrap_or(StopReason::GuestReset);
        self.timeline.mark(Phase::GuestStop);
        let stuck = self.end_threads();
        // Output the guest queued on the virtio console just before it
        // stopped: one bounded round, and only if no thread still holds
        // the device.
        if let Some(console) = &self.virtio.console {
            if let Ok(mut c) = console.try_lock() {
                c.process_transmit(worker::BUDGET);
            }
        }
        // stdout may take the buffered output for as long as it keeps
        // taking bytes; a stalled one gets half the deadline.
        let dropped_output = self.output.finish(STOP_DEADLINE / 2);
        self.timeline
            .set_guest_resident_kib(memory::resident_kib(&self.mem));
        self.state = VmState::Stopped;
        let reason = match reason {
            StopReason::GuestReset | StopReason::TripleFault
                if self.console.panic_lines().is_some() =>
            {
                StopReason::GuestPanic
            }
            r => r,
        };
        log::info!("VM stopped: {reason}");
        Ok(Outcome {
            reason,
            console: self.console.clone(),
            dropped_output,
            stuck,
        })
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // A VM dropped without `wait`/`stop` (an error after `start`):
        // its threads must not outlive the memory and fds they use.
        if matches!(self.state, VmState::Running | VmState::Paused) {
            self.end_threads();
        }
    }
}

/// Builds the VM for `config`, starts it and waits for it to stop:
/// [`Vm::build`] → [`Vm::start`] → [`Vm::wait`].
pub fn run(config: &crate::VmConfig, timeline: &Timeline) -> Result<Outcome, Error> {
    let plan = MachinePlan::new(config)?;
    let mut vm = Vm::build(config, plan, Options::command_line(timeline.clone()))?;
    vm.start()?;
    vm.wait()
}
