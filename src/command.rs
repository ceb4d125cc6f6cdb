//! Running one command in the guest (`ember run ... -- CMD [ARGS...]`):
//! the command's kernel command-line encoding, the default guest's
//! location, and the exit statuses ember reserves for itself.
//!
//! The argv travels as `ember.cmd=F1,F2,...`: each field is one argument
//! in standard base64 (RFC 4648 §4, padded), or `-` for an empty argument,
//! so spaces, quotes, newlines and non-ASCII bytes survive the kernel's
//! command-line parsing. The default guest's init decodes it with busybox
//! `base64 -d` (see `docs/RUN.md`).

use std::path::{Path, PathBuf};

use crate::layout::CMDLINE_MAX_SIZE;

/// Exit status: `--boot-timeout` passed before the guest reported booting.
pub const EXIT_BOOT_DEADLINE: u8 = 121;
/// Exit status: the guest stopped (reset, power-off, triple fault) without
/// reporting a status while a command was running.
pub const EXIT_NO_STATUS: u8 = 122;
/// Exit status: the guest kernel panicked.
pub const EXIT_GUEST_PANIC: u8 = 123;
/// Exit status: `--timeout` passed (the `timeout(1)` convention).
pub const EXIT_DEADLINE: u8 = 124;
/// Exit status in command mode for an ember error or a VM failure (the
/// `timeout(1)` / `docker run` convention for "the wrapper failed").
pub const EXIT_EMBER_FAILED: u8 = 125;

/// Kernel parameters added in command mode when `--cmdline` is not given:
/// `loglevel=3` keeps kernel messages out of the command's output except
/// emergencies, alerts and critical ones (panics, oops headers).
pub const COMMAND_CMDLINE_EXTRA: &str = "loglevel=3";

/// Command errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The encoded command does not fit in the kernel command line.
    #[error(
        "the command is too long for the kernel command line: {need} bytes with the command, \
         at most {max} (put long commands in a script in a --share directory)"
    )]
    TooLong {
        /// Bytes the command line would take (NUL included).
        need: usize,
        /// Limit.
        max: usize,
    },
    /// No `--kernel` and no default guest.
    #[error(
        "no --kernel given and no default guest at {0}: build it with resources/guest/build.sh \
         (which links it there), or pass --kernel and --initrd"
    )]
    NoDefaultGuest(PathBuf),
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 of `data`.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `ember.cmd=` parameter for `argv`.
pub fn encode(argv: &[impl AsRef<[u8]>]) -> String {
    let fields: Vec<String> = argv
        .iter()
        .map(|a| match a.as_ref() {
            [] => "-".to_string(),
            bytes => base64(bytes),
        })
        .collect();
    format!("ember.cmd={}", fields.join(","))
}

/// `cmdline` with the command (and the share device, if any) appended;
/// fails with [`Error::TooLong`] past the kernel's limit.
pub fn cmdline_with(
    cmdline: &str,
    argv: &[impl AsRef<[u8]>],
    share_dev: Option<&str>,
) -> Result<String, Error> {
    let mut out = format!("{} {}", cmdline, encode(argv));
    if let Some(dev) = share_dev {
        out.push_str(" ember.share=");
        out.push_str(dev);
    }
    let out = out.trim_start().to_string();
    let need = out.len() + 1;
    if need > CMDLINE_MAX_SIZE {
        return Err(Error::TooLong {
            need,
            max: CMDLINE_MAX_SIZE,
        });
    }
    Ok(out)
}

/// The guest device name of virtio-block disk `index` (`/dev/vda`, ...).
pub fn disk_device(index: usize) -> String {
    format!("/dev/vd{}", (b'a' + index as u8) as char)
}

/// Where `resources/guest/build.sh` links the default guest:
/// `$XDG_CACHE_HOME/ember/default-guest` (default
/// `$HOME/.cache/ember/default-guest`).
pub fn default_guest_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".cache")
        });
    cache.join("ember/default-guest")
}

/// The default guest's kernel and initramfs (`vmlinux`,
/// `initramfs.cpio.gz` in [`default_guest_dir`]).
pub fn default_guest() -> Result<(PathBuf, PathBuf), Error> {
    let dir = default_guest_dir();
    let kernel = dir.join("vmlinux");
    let initrd = dir.join("initramfs.cpio.gz");
    if kernel.is_file() && initrd.is_file() {
        Ok((kernel, initrd))
    } else {
        Err(Error::NoDefaultGuest(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn argv_encoding() {
        assert_eq!(encode(&["true"]), "ember.cmd=dHJ1ZQ==");
        let e = encode(&["sh", "-c", "exit 7", "", "é \"'\n"]);
        assert_eq!(e, "ember.cmd=c2g=,LWM=,ZXhpdCA3,-,w6kgIicK");
        // Nothing the kernel splits or unquotes on.
        assert!(!e.contains([' ', '"', '\'', '\n']));
    }

    #[test]
    fn cmdline_and_limit() {
        let c = cmdline_with("console=ttyS0", &["true"], Some("/dev/vdb")).unwrap();
        assert_eq!(c, "console=ttyS0 ember.cmd=dHJ1ZQ== ember.share=/dev/vdb");
        let long = "x".repeat(1600);
        let r = cmdline_with("console=ttyS0", &[long.as_str()], None);
        let Err(Error::TooLong { need, max }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(max, 2048);
        assert!(need > max);
        assert!(Error::TooLong { need, max }.to_string().contains("--share"));
    }

    #[test]
    fn disk_names() {
        assert_eq!(disk_device(0), "/dev/vda");
        assert_eq!(disk_device(2), "/dev/vdc");
    }
}
