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

/// Sector size of disks (virtio-block's unit).
pub const SECTOR_SIZE: u64 = 512;

/// Why a disk image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The disk file cannot be opened or inspected.
    #[error("cannot open disk {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// The disk is neither a regular file nor a block device.
    #[error("disk {0} is neither a regular file nor a block device")]
    NotADisk(PathBuf),
    /// The disk's size is not a multiple of 512 bytes.
    #[error("disk {0} is {1} bytes, not a multiple of 512")]
    Size(PathBuf, u64),
}

/// Opens a disk image (read-only or read-write) and returns it with its
/// size in bytes, checking that the size is a multiple of 512.
pub fn open_disk(path: &Path, readonly: bool) -> Result<(File, u64), DiskError> {
    let open_err = |e| DiskError::Open(path.to_path_buf(), e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!readonly)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let size = if meta.file_type().is_file() {
        meta.len()
    } else if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Err(DiskError::NotADisk(path.to_path_buf()));
    } else {
        // Block devices report size 0 in their metadata: seek to the end.
        use std::io::Seek;
        (&file).seek(std::io::SeekFrom::End(0)).map_err(open_err)?
    };
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(DiskError::Size(path.to_path_buf(), size));
    }
    Ok((file, size))
}

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

/// Which device is the guest's console: where stdin goes (`--console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleKind {
    /// The COM1 16550 UART (`ttyS0`): stdin goes to its receive FIFO.
    #[default]
    Serial,
    /// A virtio-console device (`hvc0`) in the virtio-mmio slot after the
    /// disks: stdin goes to its receiveq, and the UART gets no input (its
    /// output still reaches stdout).
    Virtio,
}

impl ConsoleKind {
    /// The default kernel command line for this console.
    pub fn default_cmdline(self) -> &'static str {
        match self {
            ConsoleKind::Serial => DEFAULT_CMDLINE,
            ConsoleKind::Virtio => DEFAULT_CMDLINE_VIRTIO,
        }
    }

    /// virtio-mmio slots the console takes (after the disks).
    pub fn virtio_slots(self) -> usize {
        usize::from(self == ConsoleKind::Virtio)
    }
}

impl std::str::FromStr for ConsoleKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "serial" => Ok(ConsoleKind::Serial),
            "virtio" => Ok(ConsoleKind::Virtio),
            _ => Err(Error::Console(s.to_string())),
        }
    }
}

/// Which entry protocol to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootMode {
    /// PVH when the ELF has a PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    /// Require the PVH entry (ELF with a `XEN_ELFNOTE_PHYS32_ENTRY` note).
    Pvh,
    /// Force the 64-bit Linux boot protocol even if a PVH note exists.
    Linux64,
}

impl std::str::FromStr for BootMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(BootMode::Auto),
            "pvh" => Ok(BootMode::Pvh),
            "linux64" | "linux" => Ok(BootMode::Linux64),
            _ => Err(Error::BootMode(s.to_string())),
        }
    }
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

/// One `--disk PATH[,readonly][,id=NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Disk image file (or block device).
    pub path: PathBuf,
    /// Opened read-only; the guest sees `VIRTIO_BLK_F_RO`.
    pub readonly: bool,
    /// Serial returned by `GET_ID` (at most 20 bytes); `None`: derived from
    /// the file.
    pub id: Option<String>,
}

impl std::str::FromStr for DiskConfig {
    type Err = Error;
    /// Parses `PATH[,readonly][,id=NAME]` (options in any order).
    fn from_str(s: &str) -> Result<Self, Error> {
        let err = || Error::DiskSyntax(s.to_string());
        let mut parts = s.split(',');
        let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(err)?;
        let mut disk = DiskConfig {
            path: PathBuf::from(path),
            readonly: false,
            id: None,
        };
        for opt in parts {
            match opt.split_once('=') {
                None if opt == "readonly" || opt == "ro" => disk.readonly = true,
                Some(("id", id))
                    if !id.is_empty()
                        && id.len() <= 20
                        && id.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    disk.id = Some(id.to_string())
                }
                _ => return Err(err()),
            }
        }
        Ok(disk)
    }
}

/// Where the root file system is, for `--root`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Root {
    /// `root=/dev/vda rw` when there is a disk and the command line has
    /// no `root=` of its own.
    #[default]
    Auto,
    /// `root=DEVICE rw`, e.g. `/dev/vdb`.
    Device(String),
    /// Add nothing (e.g. an initramfs is the root).
    None,
}

impl std::str::FromStr for Root {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "auto" | "" => Root::Auto,
            "none" => Root::None,
            dev => Root::Device(dev.to_string()),
        })
    }
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

/// Parses a size: a plain number is MiB; suffixes K, M, G, T (optionally
/// followed by `iB` or `B`) are binary multiples. Returns bytes.
pub fn parse_size(text: &str) -> Result<u64, Error> {
    let err = || Error::SizeSyntax(text.to_string());
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(err());
    }
    let value: u64 = num.parse().map_err(|_| err())?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 20,
        "K" | "KB" | "KIB" => 10,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(err()),
    };
    value.checked_mul(1u64 << shift).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_file() -> PathBuf {
        // Any readable regular file will do for validation.
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("128").unwrap(), 128 << 20);
        assert_eq!(parse_size("65536K").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("16G").unwrap(), 16 << 30);
        for bad in ["", "M", "12X", "-1", "1.5G", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("18446744073709551615G").is_err());
    }

    fn builder() -> VmConfigBuilder {
        VmConfigBuilder::new(kernel_file())
    }

    #[test]
    fn validation() {
        let ok = |mem, cpus| builder().memory(mem).cpus(cpus).build();
        let c = ok(DEFAULT_MEMORY, 1).unwrap();
        assert_eq!(c.cmdline(), DEFAULT_CMDLINE);
        assert!(c.acpi(), "ACPI tables are on by default");
        assert_eq!(c.cpus(), 1);
        assert!(ok(64 << 20, 254).is_ok());
        assert!(ok(16 << 30, 16).is_ok());
        assert!(matches!(ok(63 << 20, 1), Err(Error::MemoryTooSmall { .. })));
        assert!(matches!(ok(2 << 40, 1), Err(Error::MemoryTooLarge { .. })));
        assert!(matches!(
            ok((64 << 20) + 1, 1),
            Err(Error::MemoryUnaligned(_))
        ));
        assert!(matches!(ok(DEFAULT_MEMORY, 0), Err(Error::Cpus { .. })));
        assert!(matches!(ok(DEFAULT_MEMORY, 255), Err(Error::Cpus { .. })));
        assert!(matches!(
            ok(DEFAULT_MEMORY, 1 << 40),
            Err(Error::Cpus { .. })
        ));
        let virtio = builder().console(ConsoleKind::Virtio).build().unwrap();
        assert_eq!(virtio.cmdline(), DEFAULT_CMDLINE_VIRTIO);
    }

    #[test]
    fn bad_files() {
        let r = VmConfigBuilder::new("/nonexistent/vmlinux").build();
        assert!(matches!(r, Err(Error::Unreadable { what: "kernel", .. })));
        let r = VmConfigBuilder::new("/").build();
        assert!(matches!(r, Err(Error::NotAFile { .. })));
        let r = builder().initrd(Some("/nonexistent/initrd".into())).build();
        assert!(matches!(r, Err(Error::Unreadable { what: "initrd", .. })));
    }

    #[test]
    fn cmdline_checked() {
        let long = "x".repeat(layout::CMDLINE_MAX_SIZE + 1);
        let r = builder().cmdline(Some(long)).build();
        assert!(matches!(r, Err(Error::Cmdline(_))));
        let half = "x".repeat(layout::CMDLINE_MAX_SIZE / 2 + 1);
        let r = builder()
            .cmdline(Some(half.clone()))
            .append(Some(half))
            .build();
        assert!(
            matches!(r, Err(Error::Cmdline(_))),
            "the appended part counts"
        );
    }

    #[test]
    fn boot_modes() {
        assert_eq!("pvh".parse::<BootMode>().unwrap(), BootMode::Pvh);
        assert_eq!("linux64".parse::<BootMode>().unwrap(), BootMode::Linux64);
        assert_eq!("auto".parse::<BootMode>().unwrap(), BootMode::Auto);
        assert!("efi".parse::<BootMode>().is_err());
    }

    #[test]
    fn disk_syntax() {
        let d: DiskConfig = "/a.img".parse().unwrap();
        assert_eq!((d.readonly, d.id), (false, None));
        let d: DiskConfig = "/a.img,readonly,id=disk-1".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/a.img"));
        assert!(d.readonly);
        assert_eq!(d.id.as_deref(), Some("disk-1"));
        let d: DiskConfig = "/a.img,id=x,ro".parse().unwrap();
        assert!(d.readonly);
        for bad in [
            "",
            ",readonly",
            "/a,rw",
            "/a,id=",
            "/a,id=a b",
            "/a,id=123456789012345678901",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad:?} accepted");
        }
        assert_eq!("none".parse::<Root>().unwrap(), Root::None);
        assert_eq!("auto".parse::<Root>().unwrap(), Root::Auto);
        assert_eq!(
            "/dev/vdb".parse::<Root>().unwrap(),
            Root::Device("/dev/vdb".into())
        );
    }

    #[test]
    fn root_on_the_command_line() {
        let img = std::env::temp_dir().join(format!("ember-config-{}.img", std::process::id()));
        std::fs::write(&img, [0u8; 1024]).unwrap();
        let disk = || DiskConfig {
            path: img.clone(),
            readonly: true,
            id: None,
        };
        let base = |cmdline: &str| builder().cmdline(Some(cmdline.into()));
        let c = base("console=ttyS0").disk(disk()).build().unwrap();
        assert_eq!(c.cmdline(), "console=ttyS0 root=/dev/vda rw");
        assert_eq!(c.disks().len(), 1);
        assert_eq!(c.disks()[0].size, 1024);
        let c = base("root=/dev/sda1").disk(disk()).build().unwrap();
        assert_eq!(c.cmdline(), "root=/dev/sda1");
        let c = base("quiet").build().unwrap();
        assert_eq!(c.cmdline(), "quiet");
        let c = base("quiet")
            .disk(disk())
            .disk(disk())
            .root(Root::Device("/dev/vdb".into()))
            .build()
            .unwrap();
        assert_eq!(c.cmdline(), "quiet root=/dev/vdb rw");
        let c = base("quiet").disk(disk()).root(Root::None).build().unwrap();
        assert_eq!(c.cmdline(), "quiet");
        let c = base("quiet")
            .disk(disk())
            .append(Some("ember.cmd=x".into()))
            .build()
            .unwrap();
        assert_eq!(c.cmdline(), "quiet root=/dev/vda rw ember.cmd=x");
        let c = base("root=/dev/sda")
            .disk(disk())
            .root(Root::Device("/dev/vda".into()))
            .build();
        assert!(matches!(c, Err(Error::RootConflict(_))));
        let c = base("").disk(DiskConfig {
            path: "/nonexistent".into(),
            readonly: true,
            id: None,
        });
        assert!(matches!(c.build(), Err(Error::Disk(_))));
        let mut many = base("");
        for _ in 0..=layout::MAX_VIRTIO_DEVICES {
            many = many.disk(disk());
        }
        assert!(matches!(many.build(), Err(Error::TooManyDisks { .. })));
        let _ = std::fs::remove_file(&img);
    }
}
