//! The validated VM configuration every front end produces.
//!
//! A front end fills a [`VmConfigBuilder`]; [`VmConfigBuilder::build`]
//! checks everything that can be checked without KVM (sizes, vCPU count,
//! the command line, that the kernel and initrd are readable files, that
//! the disks open) and returns the [`VmConfig`], whose fields are private:
//! nothing changes it afterwards. Host limits (memory the host can give,
//! `/dev/kvm`) are checked when the VM is built.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::layout;

/// Default guest memory: 128 MiB.
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// Default kernel command line: serial console, reset on panic and reboot
/// through the keyboard controller.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
/// Default kernel command line with `--console virtio`: the same on hvc0.
pub const DEFAULT_CMDLINE_VIRTIO: &str = "console=hvc0 reboot=k panic=-1";

mod disk;
mod inputs;
pub use disk::{open_disk, DiskError, SECTOR_SIZE};
pub use inputs::{parse_size, BootMode, ConsoleKind, DiskConfig, Root};

/// Configuration errors: each names the input that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A size could not be parsed.
    #[error("invalid size {0:?}: expected a number of MiB or a number with a K, M, G or T suffix")]
    SizeSyntax(String),
    /// Memory below the minimum.
    #[error("memory size {got} MiB is too small: ember needs at least {min} MiB")]
    MemoryTooSmall {
        /// Requested MiB.
        got: u64,
        /// Minimum MiB.
        min: u64,
    },
    /// Memory above what the layout supports.
    #[error("memory size {got} MiB is too large: ember supports at most {max} MiB")]
    MemoryTooLarge {
        /// Requested MiB.
        got: u64,
        /// Maximum MiB.
        max: u64,
    },
    /// Memory not a multiple of 4 KiB.
    #[error("memory size {0} bytes is not a multiple of 4 KiB")]
    MemoryUnaligned(u64),
    /// vCPU count out of range.
    #[error("invalid vCPU count {got}: must be between 1 and {max}")]
    Cpus {
        /// Requested count.
        got: u64,
        /// Maximum count.
        max: u8,
    },
    /// The kernel or initrd cannot be opened.
    #[error("cannot read {what} {path}")]
    Unreadable {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel or initrd is not a regular file.
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The command line is too long or has characters the kernel rejects.
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// A `--disk` argument is malformed.
    #[error(
        "invalid --disk {0:?}: expected PATH[,readonly][,id=NAME] (id at most 20 ASCII characters)"
    )]
    DiskSyntax(String),
    /// A disk image cannot be opened (missing, unreadable, or not
    /// writable without `readonly`), or its size is not a multiple of 512.
    #[error(transparent)]
    Disk(DiskError),
    /// More disks than virtio-mmio slots.
    #[error("too many disks: {got} given, ember supports at most {max}")]
    TooManyDisks {
        /// Disks given.
        got: usize,
        /// Slots available.
        max: usize,
    },
    /// `--root` and a `root=` in the command line both given.
    #[error("--root {0} conflicts with the root= already in the kernel command line")]
    RootConflict(String),
    /// Unknown boot mode name.
    #[error("invalid boot mode {0:?}: expected auto, pvh or linux64")]
    BootMode(String),
    /// Unknown console name.
    #[error("invalid console {0:?}: expected serial or virtio")]
    Console(String),
}

/// A validated VM configuration: built only by [`VmConfigBuilder::build`],
/// read through its accessors, never changed afterwards. Every front end
/// (the CLI today, a config file or an API next) fills a builder.
#[derive(Debug, Clone)]
pub struct VmConfig {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: String,
    memory: u64,
    cpus: u8,
    boot_mode: BootMode,
    kvm_device: PathBuf,
    disks: Vec<Disk>,
    console: ConsoleKind,
    timeout: Option<Duration>,
    boot_timeout: Option<Duration>,
    pit: bool,
    acpi: bool,
}

impl VmConfig {
    /// Kernel image: ELF vmlinux (with or without PVH note) or bzImage.
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }
    /// Optional initial ramdisk.
    pub fn initrd(&self) -> Option<&Path> {
        self.initrd.as_deref()
    }
    /// Kernel command line (the `root=` and any appended part included;
    /// the virtio-mmio device entries are the machine plan's).
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
    /// Guest memory in bytes (multiple of 4 KiB).
    pub fn memory(&self) -> u64 {
        self.memory
    }
    /// Number of vCPUs.
    pub fn cpus(&self) -> u8 {
        self.cpus
    }
    /// Entry protocol choice.
    pub fn boot_mode(&self) -> BootMode {
        self.boot_mode
    }
    /// KVM device node (normally `/dev/kvm`).
    pub fn kvm_device(&self) -> &Path {
        &self.kvm_device
    }
    /// virtio-block disks, opened, in guest order (`/dev/vda`, ...).
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }
    /// The guest's console (`--console`).
    pub fn console(&self) -> ConsoleKind {
        self.console
    }
    /// `--timeout`: stop the VM with [`crate::StopReason::Deadline`] after
    /// this long.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// `--boot-timeout`: stop the VM with
    /// [`crate::StopReason::BootDeadline`] if the guest has not written the
    /// "booted" port after this long.
    pub fn boot_timeout(&self) -> Option<Duration> {
        self.boot_timeout
    }
    /// `--pit`: create KVM's in-kernel i8254 PIT. Off by default: with the
    /// TSC-deadline timer and kvmclock Linux never uses it, and tearing it
    /// down costs milliseconds at exit; kernels that calibrate against the
    /// PIT (no kvmclock, no TSC-deadline timer) need it.
    pub fn pit(&self) -> bool {
        self.pit
    }
    /// Write the ACPI tables (RSDP, XSDT, FADT, MADT, DSDT; see
    /// [`crate::acpi`]); `--no-acpi` clears it. The MP table is written
    /// either way.
    pub fn acpi(&self) -> bool {
        self.acpi
    }
}

/// A disk of a validated configuration: opened once, at validation, in its
/// mode; the device uses this same file.
#[derive(Debug, Clone)]
pub struct Disk {
    /// What was asked for.
    pub config: DiskConfig,
    /// The open image.
    pub file: Arc<File>,
    /// Its size in bytes (a multiple of 512).
    pub size: u64,
}

/// The inputs of a [`VmConfig`], set by a front end; [`VmConfigBuilder::build`]
/// validates them all at once.
#[derive(Debug, Clone)]
pub struct VmConfigBuilder {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    append: Option<String>,
    memory: u64,
    cpus: u64,
    boot_mode: BootMode,
    kvm_device: PathBuf,
    disks: Vec<DiskConfig>,
    root: Root,
    console: ConsoleKind,
    timeout: Option<Duration>,
    boot_timeout: Option<Duration>,
    pit: bool,
    acpi: bool,
}

impl VmConfigBuilder {
    /// Defaults for everything but the kernel: 128 MiB, 1 vCPU, the
    /// console's default command line, serial console, ACPI on, no PIT.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfigBuilder {
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            append: None,
            memory: DEFAULT_MEMORY,
            cpus: 1,
            boot_mode: BootMode::Auto,
            kvm_device: PathBuf::from(crate::kvm::KVM_PATH),
            disks: Vec::new(),
            root: Root::Auto,
            console: ConsoleKind::Serial,
            timeout: None,
            boot_timeout: None,
            pit: false,
            acpi: true,
        }
    }
    /// The initial ramdisk.
    pub fn initrd(self, initrd: Option<PathBuf>) -> Self {
        VmConfigBuilder { initrd, ..self }
    }
    /// The kernel command line (default: the console's,
    /// [`ConsoleKind::default_cmdline`]).
    pub fn cmdline(self, cmdline: Option<String>) -> Self {
        VmConfigBuilder { cmdline, ..self }
    }
    /// Words appended to the command line after the `root=` (command
    /// mode's command and share).
    pub fn append(self, append: Option<String>) -> Self {
        VmConfigBuilder { append, ..self }
    }
    /// Guest memory in bytes.
    pub fn memory(self, memory: u64) -> Self {
        VmConfigBuilder { memory, ..self }
    }
    /// vCPU count.
    pub fn cpus(self, cpus: u64) -> Self {
        VmConfigBuilder { cpus, ..self }
    }
    /// Entry protocol.
    pub fn boot_mode(self, boot_mode: BootMode) -> Self {
        VmConfigBuilder { boot_mode, ..self }
    }
    /// KVM device node.
    pub fn kvm_device(self, kvm_device: PathBuf) -> Self {
        VmConfigBuilder { kvm_device, ..self }
    }
    /// Adds a disk (after those already added).
    pub fn disk(mut self, disk: DiskConfig) -> Self {
        self.disks.push(disk);
        self
    }
    /// The root device on the command line: see [`Root`].
    pub fn root(self, root: Root) -> Self {
        VmConfigBuilder { root, ..self }
    }
    /// The console.
    pub fn console(self, console: ConsoleKind) -> Self {
        VmConfigBuilder { console, ..self }
    }
    /// `--timeout`.
    pub fn timeout(self, timeout: Option<Duration>) -> Self {
        VmConfigBuilder { timeout, ..self }
    }
    /// `--boot-timeout`.
    pub fn boot_timeout(self, boot_timeout: Option<Duration>) -> Self {
        VmConfigBuilder {
            boot_timeout,
            ..self
        }
    }
    /// `--pit`.
    pub fn pit(self, pit: bool) -> Self {
        VmConfigBuilder { pit, ..self }
    }
    /// ACPI tables on (default) or off (`--no-acpi`).
    pub fn acpi(self, acpi: bool) -> Self {
        VmConfigBuilder { acpi, ..self }
    }

    /// Disks added so far.
    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    /// Most disks the configuration can take: the virtio-mmio slots the
    /// console does not.
    pub fn max_disks(&self) -> usize {
        layout::MAX_VIRTIO_DEVICES - self.console.virtio_slots()
    }

    /// Checks everything that can be checked without KVM (sizes, vCPU
    /// count, the command line, that the kernel and initrd are readable
    /// files, that each disk opens in its mode with a size that is a
    /// multiple of 512) and builds the configuration. Each disk is opened
    /// here, once.
    pub fn build(self) -> Result<VmConfig, Error> {
        check_file("kernel", &self.kernel)?;
        if let Some(path) = &self.initrd {
            check_file("initrd", path)?;
        }
        let memory = check_memory(self.memory)?;
        let cpus = match u8::try_from(self.cpus) {
            Ok(n) if (1..=layout::MAX_VCPUS).contains(&n) => n,
            _ => {
                return Err(Error::Cpus {
                    got: self.cpus,
                    max: layout::MAX_VCPUS,
                })
            }
        };
        if self.disks.len() > self.max_disks() {
            return Err(Error::TooManyDisks {
                got: self.disks.len(),
                max: self.max_disks(),
            });
        }
        let mut cmdline = self
            .cmdline
            .clone()
            .unwrap_or_else(|| self.console.default_cmdline().to_string());
        check_cmdline(&cmdline)?;
        if let Some(dev) = root_device(&cmdline, &self.root, !self.disks.is_empty())? {
            cmdline = format!("{cmdline} root={dev} rw").trim_start().to_string();
        }
        if let Some(extra) = &self.append {
            cmdline = format!("{cmdline} {extra}").trim().to_string();
        }
        check_cmdline(&cmdline)?;
        let disks = self
            .disks
            .into_iter()
            .map(|config| {
                let (file, size) = open_disk(&config.path, config.readonly).map_err(Error::Disk)?;
                Ok(Disk {
                    config,
                    file: Arc::new(file),
                    size,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline,
            memory,
            cpus,
            boot_mode: self.boot_mode,
            kvm_device: self.kvm_device,
            disks,
            console: self.console,
            timeout: self.timeout,
            boot_timeout: self.boot_timeout,
            pit: self.pit,
            acpi: self.acpi,
        })
    }
}

fn check_cmdline(cmdline: &str) -> Result<(), Error> {
    linux_loader::cmdline::Cmdline::try_from(cmdline, layout::CMDLINE_MAX_SIZE)
        .map(|_| ())
        .map_err(Error::Cmdline)
}

/// The `root=` device to add to `cmdline`, if any: see [`Root`].
fn root_device(cmdline: &str, root: &Root, has_disks: bool) -> Result<Option<String>, Error> {
    let has_root = cmdline.split_whitespace().any(|w| w.starts_with("root="));
    Ok(match root {
        Root::Auto if has_disks && !has_root => Some("/dev/vda".to_string()),
        Root::Device(dev) if has_root => return Err(Error::RootConflict(dev.clone())),
        Root::Device(dev) => Some(dev.clone()),
        Root::Auto | Root::None => None,
    })
}

fn check_memory(bytes: u64) -> Result<u64, Error> {
    const MIB: u64 = 1 << 20;
    if bytes < layout::MIN_MEMORY {
        return Err(Error::MemoryTooSmall {
            got: bytes / MIB,
            min: layout::MIN_MEMORY / MIB,
        });
    }
    if bytes > layout::MAX_MEMORY {
        return Err(Error::MemoryTooLarge {
            got: bytes / MIB,
            max: layout::MAX_MEMORY / MIB,
        });
    }
    if !bytes.is_multiple_of(4096) {
        return Err(Error::MemoryUnaligned(bytes));
    }
    Ok(bytes)
}

fn check_file(what: &'static str, path: &Path) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| Error::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
