//! Builds the VM in boot order and runs it until it stops.
//!
//! [`run`]: map guest memory → load the kernel, initrd and boot structures
//! → open KVM → create the VM and register the memory (before the irqchip
//! and vCPUs: cheaper on PVM) → TSS, identity map, irqchip, PIT (`--pit`
//! only) → GDT/IDT and page tables → devices → vCPUs → signals and raw
//! terminal → vCPU threads → event loop → stop and join the vCPUs.

use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::Cap;

use crate::boot::lease::{self, LeaseBreaker, Leases};
use crate::config::{ConsoleKind, VmConfig};
use crate::devices::serial::{ConsoleOut, ConsoleTail};
use crate::event_loop::{Deadline, EventLoop, ExitEvent, SignalFd, StopReason};
use crate::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::stdin::StdinForwarder;
use crate::timeline::{Phase, Timeline};
use crate::{boot, device_manager, devices, event_loop, kvm, memory, terminal, vcpu};

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
    Lease(#[from] lease::Error),
}

/// How a VM run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it stopped. A reset or triple fault after "Kernel panic" on the
    /// console is reported as [`StopReason::GuestPanic`].
    pub reason: StopReason,
    /// The end of the console output.
    pub console: ConsoleTail,
}

/// Boots the VM described by `config` and runs it until it stops (or
/// until `config.timeout` passes), marking each boot phase on `timeline`.
pub fn run(config: &VmConfig, timeline: &Timeline) -> Result<Outcome, Error> {
    // Guest memory and the kernel first: bad input is reported before
    // host problems, and neither needs KVM.
    let mem = Arc::new(memory::create(config.memory)?);
    timeline.mark(Phase::MemoryMapped);
    // Before any thread exists: blocks SIGIO for the file leases.
    let mut leases = Leases::new()?;
    let entry = boot::load(
        &mem,
        &device_manager::virtio_cmdline(config),
        Some(&mut leases),
    )?;
    timeline.mark(Phase::KernelLoaded);
    let kvm = kvm::open(&config.kvm_device)?;
    let vm = kvm.create_vm().map_err(Error::CreateVm)?;
    memory::register(&vm, &mem)?;
    timeline.mark(Phase::VmCreated);
    vm.set_tss_address(KVM_TSS_ADDR as usize)
        .map_err(Error::TssAddr)?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
        .map_err(Error::TssAddr)?;
    vm.create_irq_chip().map_err(Error::Irqchip)?;
    devices::pic::mask_all(&vm)?;
    if config.pit {
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(Error::Pit)?;
    }

    vcpu::regs::write_descriptor_tables(&mem)?;
    vcpu::paging::write(&mem).map_err(vcpu::Error::BootTables)?;

    let exit = ExitEvent::new()?;
    let console = ConsoleTail::default();
    let mut devices = device_manager::create_legacy_devices(&vm, &exit, timeline, console.clone())?;
    let disks = device_manager::create_disks(&vm, &mem, &mut devices.buses.mmio, &config.disks)?;
    let virtio_console = match config.console {
        ConsoleKind::Serial => None,
        ConsoleKind::Virtio => Some(device_manager::create_virtio_console(
            &vm,
            &mem,
            &mut devices.buses.mmio,
            config.disks.len(),
            ConsoleOut {
                timeline: timeline.clone(),
                tail: console.clone(),
            },
        )?),
    };
    timeline.mark(Phase::DevicesCreated);

    let mut supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::KvmQuery)?;
    vcpu::cpuid::add_emulated_features(
        supported.as_mut_slice(),
        kvm.check_extension(Cap::TscDeadlineTimer),
    );
    let mmap_size = kvm.get_vcpu_mmap_size().map_err(Error::KvmQuery)?;
    let vcpus = (0..config.cpus)
        .map(|i| vcpu::create(&vm, &supported, mmap_size, i, config.cpus, &entry))
        .collect::<Result<Vec<_>, _>>()?;
    vcpu::install_kick_handler()?;

    // Block the stop signals before any vCPU thread exists, so that only
    // the event loop's signalfd sees them.
    let signals = SignalFd::new(&event_loop::STOP_SIGNALS)?;
    let mut event_loop = EventLoop::new(exit.clone(), signals)?;
    // stdin goes to one console only: the virtio console if there is one
    // (the UART then gets no input), else the UART.
    let (stdin, virtio_console) = match virtio_console {
        None => (
            StdinForwarder::new(Box::new(devices.serial.clone()), devices.serial_rx_ready),
            None,
        ),
        Some((dev, handler)) => {
            let ready = dev
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rx_ready()
                .map_err(device_manager::Error::from)?;
            event_loop.add(Box::new(handler));
            (StdinForwarder::new(Box::new(dev.clone()), ready), Some(dev))
        }
    };
    event_loop.add(Box::new(stdin));
    for disk in disks {
        event_loop.add(Box::new(disk));
    }
    if let Some(after) = config.timeout {
        event_loop.add(Box::new(Deadline::new(after, exit.clone())?));
    }
    if let Some(after) = config.boot_timeout {
        let booted = devices.booted.clone();
        event_loop.add(Box::new(Deadline::boot(after, exit.clone(), booted)?));
    }
    let _raw = terminal::RawMode::enter()?;

    let buses = Arc::new(devices.buses);
    let mut handles = Vec::with_capacity(vcpus.len());
    let mut start_error = None;
    // Marked before the threads are spawned: the boot vCPU may enter the
    // guest before the last thread exists, and the phases stay in order.
    timeline.mark(Phase::VcpusStarted);
    for v in vcpus {
        match v.start(buses.clone(), exit.clone(), timeline.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                start_error = Some(e);
                break;
            }
        }
    }
    if !leases.is_empty() {
        let controls = handles.iter().map(|h| h.control().clone()).collect();
        event_loop.add(Box::new(LeaseBreaker::new(leases, controls)));
    }
    let result = match start_error {
        Some(e) => Err(Error::Vcpu(e)),
        None => event_loop.run().map_err(Error::EventLoop),
    };
    timeline.mark(Phase::GuestStop);
    for h in &handles {
        h.kick_stop();
    }
    for h in handles {
        h.join();
    }
    // Output the guest queued on the virtio console just before it stopped.
    if let Some(dev) = virtio_console {
        dev.lock()
            .unwrap_or_else(|p| p.into_inner())
            .process_transmit();
    }
    timeline.set_guest_resident_kib(memory::resident_kib(&mem));
    let mut reason = result?;
    if matches!(reason, StopReason::GuestReset | StopReason::TripleFault)
        && console.panic_lines().is_some()
    {
        reason = StopReason::GuestPanic;
    }
    log::info!("VM stopped: {reason}");
    Ok(Outcome { reason, console })
}
