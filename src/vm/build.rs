//! [`Vm::build`]: the VM put together in boot order, no guest code run.
//!
//! Stop signals and `SIGIO` blocked (before any thread exists) → guest
//! memory → kernel, initrd and boot structures (bad input is reported
//! before host problems; neither needs KVM) → `/dev/kvm`, the VM, its
//! memory slots (before the irqchip and vCPUs: cheaper on PVM) → TSS,
//! identity map, irqchip, PIT (`--pit` only) → GDT/IDT and page tables →
//! console output, legacy devices, virtio devices (the plan's slots) →
//! vCPUs → event loop, stdin, raw terminal.

use std::io::Write;
use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::Cap;

use super::{Error, Quiesce, Vm, VmState};
use crate::boot::lease::Leases;
use crate::config::{ConsoleKind, VmConfig};
use crate::device_manager::{self, Devices};
use crate::devices::output::{ConsoleOut, ConsoleTail, Output};
use crate::event_loop::{EventLoop, SignalFd, STOP_SIGNALS};
use crate::exit::ExitEvent;
use crate::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::plan::MachinePlan;
use crate::stdin::StdinForwarder;
use crate::timeline::{Phase, Timeline};
use crate::{boot, devices, kvm, memory, terminal, vcpu};

/// How the VM meets the world outside the guest.
pub struct Options {
    /// Marked at each boot phase.
    pub timeline: Timeline,
    /// Where console output goes (ember's stdout on the command line).
    pub sink: Box<dyn Write + Send>,
    /// Forward ember's stdin to the guest's console.
    pub stdin: bool,
    /// Put a terminal stdin into raw mode while the VM runs.
    pub raw_terminal: bool,
    /// Map kernel and initrd pages from their files under a read lease.
    pub file_leases: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("stdin", &self.stdin)
            .field("raw_terminal", &self.raw_terminal)
            .field("file_leases", &self.file_leases)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// What `ember run` uses: stdout, stdin, raw terminal, leases.
    pub fn command_line(timeline: Timeline) -> Self {
        Options {
            timeline,
            sink: Box::new(crate::devices::output::RawStdout),
            stdin: true,
            raw_terminal: true,
            file_leases: true,
        }
    }

    /// For an embedding program or a test: output to `sink`, no stdin, no
    /// terminal, kernel and initrd copied.
    pub fn embedded(sink: Box<dyn Write + Send>) -> Self {
        Options {
            timeline: Timeline::start(),
            sink,
            stdin: false,
            raw_terminal: false,
            file_leases: false,
        }
    }
}

impl Vm {
    /// Builds the VM `plan` describes for `config`, in boot order (see the
    /// module docs); no thread that runs guest code exists yet.
    pub fn build(config: &VmConfig, plan: MachinePlan, options: Options) -> Result<Vm, Error> {
        let timeline = options.timeline;
        // Before any thread exists: only the event loop's signalfd sees the
        // stop signals, only the lease breaker's SIGIO.
        let signals = SignalFd::new(&STOP_SIGNALS).map_err(crate::event_loop::Error::from)?;
        let mut leases = match options.file_leases {
            true => Some(Leases::new()?),
            false => None,
        };
        let mem = Arc::new(memory::create(plan.memory())?);
        timeline.mark(Phase::MemoryMapped);
        let entry = boot::load(&mem, config, &plan, leases.as_mut())?;
        timeline.mark(Phase::KernelLoaded);

        let kvm = kvm::open(config.kvm_device())?;
        let vm_fd = kvm.create_vm().map_err(Error::CreateVm)?;
        memory::register(&vm_fd, &mem)?;
        timeline.mark(Phase::VmCreated);
        vm_fd
            .set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(Error::TssAddr)?;
        vm_fd
            .set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(Error::TssAddr)?;
        vm_fd.create_irq_chip().map_err(Error::Irqchip)?;
        devices::pic::mask_all(&vm_fd)?;
        if config.pit() {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm_fd.create_pit2(pit).map_err(Error::Pit)?;
        }
        vcpu::regs::write_descriptor_tables(&mem)?;
        vcpu::paging::write(&mem).map_err(vcpu::Error::BootTables)?;

        let exit = ExitEvent::new().map_err(crate::event_loop::Error::EventFd)?;
        let output = Output::spawn(options.sink).map_err(Error::Output)?;
        let console = ConsoleTail::default();
        let out = ConsoleOut {
            timeline: timeline.clone(),
            tail: console.clone(),
            output: output.clone(),
        };
        let Devices {
            mut buses,
            serial,
            serial_rx_ready,
            booted,
        } = device_manager::create_legacy_devices(&vm_fd, &exit, &timeline, &out)?;
        let virtio = device_manager::create_virtio_devices(
            &vm_fd,
            &mem,
            &mut buses.mmio,
            &plan,
            config.disks(),
            &out,
        )?;
        timeline.mark(Phase::DevicesCreated);

        let mut supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::KvmQuery)?;
        vcpu::cpuid::add_emulated_features(
            supported.as_mut_slice(),
            kvm.check_extension(Cap::TscDeadlineTimer),
        );
        let mmap_size = kvm.get_vcpu_mmap_size().map_err(Error::KvmQuery)?;
        let topology = plan.topology();
        let vcpus = (0..topology.cpus())
            .map(|i| vcpu::create(&vm_fd, &supported, mmap_size, i, topology, &entry))
            .collect::<Result<Vec<_>, _>>()?;

        let event_loop = EventLoop::new(exit.clone(), signals)?;
        // stdin goes to one console only: the virtio console if there is
        // one (the UART then gets no input), else the UART.
        let stdin = match (options.stdin, config.console(), &virtio.console) {
            (false, _, _) => None,
            (true, ConsoleKind::Virtio, Some(dev)) => {
                let ready = dev
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .rx_ready()
                    .map_err(device_manager::Error::from)?;
                Some(StdinForwarder::new(Box::new(dev.clone()), ready))
            }
            (true, _, _) => Some(StdinForwarder::new(Box::new(serial), serial_rx_ready)),
        };
        let raw_terminal = match options.raw_terminal {
            true => terminal::RawMode::enter()?,
            false => None,
        };
        Ok(Vm {
            state: VmState::Created,
            exit,
            event_loop,
            quiesce: Arc::new(Quiesce::default()),
            vcpu_handles: Vec::new(),
            workers: Vec::new(),
            vcpus,
            virtio,
            buses: Arc::new(buses),
            booted,
            leases,
            output,
            console,
            _raw_terminal: raw_terminal,
            stdin,
            timeouts: (config.timeout(), config.boot_timeout()),
            timeline,
            plan,
            _vm_fd: vm_fd,
            _kvm: kvm,
            mem,
        })
    }
}
