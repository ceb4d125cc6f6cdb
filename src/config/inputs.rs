//! The config's inputs as a front end spells them: console and boot-mode
//! names, `--disk PATH[,readonly][,id=NAME]`, `--root`, sizes.

use std::path::PathBuf;

use super::{Error, DEFAULT_CMDLINE, DEFAULT_CMDLINE_VIRTIO};

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
