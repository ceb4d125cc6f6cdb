//! `--share DIR[,rw]`: a host directory handed to the guest as an ext4
//! image on an extra virtio-block disk (the last one), mounted by the
//! default guest at `/mnt/share`.
//!
//! [`Share::create`] sizes a sparse temporary image from DIR's content
//! and fills it with `mkfs.ext4 -d` (e2fsprogs; no mounts, no root).
//! With `rw`, [`Share::copy_back`] extracts the image after the guest
//! reported its status (`debugfs -R "rdump / STAGING"`, again no mounts)
//! and copies every file and directory into DIR: files the guest created
//! or changed appear on the host; files it deleted stay. The image is
//! removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Free space added to the content's size (the image is sparse).
const MARGIN: u64 = 256 << 20;

/// Share errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--share` argument is malformed.
    #[error("invalid --share {0:?}: expected DIR[,rw]")]
    Syntax(String),
    /// DIR is not a readable directory.
    #[error("--share {0}: not a readable directory")]
    NotADir(PathBuf, #[source] std::io::Error),
    /// A tool from e2fsprogs is missing.
    #[error("--share needs {0} (e2fsprogs), which is not on PATH")]
    ToolMissing(&'static str),
    /// The temporary image cannot be created.
    #[error("cannot create the share image {0}")]
    Image(PathBuf, #[source] std::io::Error),
    /// A tool ran and failed.
    #[error("{tool} failed for --share {dir}: {stderr}")]
    Tool {
        /// mkfs.ext4 or debugfs.
        tool: &'static str,
        /// The shared directory.
        dir: PathBuf,
        /// Its error output, on one line.
        stderr: String,
    },
    /// Copying the guest's changes into DIR failed.
    #[error("cannot copy the guest's changes into {0}")]
    CopyBack(PathBuf, #[source] std::io::Error),
}

/// One `--share DIR[,rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareConfig {
    /// The host directory.
    pub dir: PathBuf,
    /// Copy the guest's changes back after it reported its status.
    pub rw: bool,
}

impl std::str::FromStr for ShareConfig {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (dir, opt) = match s.rsplit_once(',') {
            Some((d, o @ ("rw" | "ro"))) => (d, o),
            _ => (s, "ro"),
        };
        if dir.is_empty() {
            return Err(Error::Syntax(s.to_string()));
        }
        Ok(ShareConfig {
            dir: PathBuf::from(dir),
            rw: opt == "rw",
        })
    }
}

/// A built share image.
#[derive(Debug)]
pub struct Share {
    config: ShareConfig,
    image: PathBuf,
}

/// Bytes the tree at `dir` takes, counting each entry as at least 4 KiB.
fn tree_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 4096;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_size(&entry.path())?
        } else {
            meta.len().div_ceil(4096).max(1) * 4096
        };
    }
    Ok(total)
}

fn run_tool(tool: &'static str, dir: &Path, cmd: &mut Command) -> Result<String, Error> {
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ToolMissing(tool),
        _ => Error::Tool {
            tool,
            dir: dir.to_path_buf(),
            stderr: e.to_string(),
        },
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::Tool {
            tool,
            dir: dir.to_path_buf(),
            stderr: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    Ok(stderr)
}

impl Share {
    /// Builds the image for `config` in the temporary directory.
    pub fn create(config: ShareConfig) -> Result<Self, Error> {
        let content = tree_size(&config.dir).map_err(|e| Error::NotADir(config.dir.clone(), e))?;
        let size = (content + content / 2 + MARGIN).div_ceil(1 << 20) << 20;
        static N: AtomicUsize = AtomicUsize::new(0);
        let image = std::env::temp_dir().join(format!(
            "ember-share-{}-{}.ext4",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let share = Share { config, image };
        let file = std::fs::File::create(&share.image)
            .map_err(|e| Error::Image(share.image.clone(), e))?;
        file.set_len(size)
            .map_err(|e| Error::Image(share.image.clone(), e))?;
        drop(file);
        let dir = &share.config.dir;
        run_tool(
            "mkfs.ext4",
            dir,
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "ember-share", "-d"])
                .arg(dir)
                .arg(&share.image),
        )?;
        log::info!(
            "share {}: {} MiB image {}",
            dir.display(),
            size >> 20,
            share.image.display()
        );
        Ok(share)
    }

    /// The image, to attach as a disk.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// True for `,rw`.
    pub fn rw(&self) -> bool {
        self.config.rw
    }

    /// Copies the image's tree into the shared directory (see the module
    /// docs); `lost+found` at the top is left out.
    pub fn copy_back(&self) -> Result<(), Error> {
        let dir = &self.config.dir;
        let staging = self.image.with_extension("out");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(|e| Error::CopyBack(dir.clone(), e))?;
        let result = (|| {
            let stderr = run_tool(
                "debugfs",
                dir,
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("rdump / {}", staging.display()))
                    .arg(&self.image),
            )?;
            // debugfs exits 0 even when a request fails; its first line is
            // its version banner.
            let problems: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
                .collect();
            if !problems.is_empty() {
                return Err(Error::Tool {
                    tool: "debugfs",
                    dir: dir.clone(),
                    stderr: problems.join("; "),
                });
            }
            let _ = std::fs::remove_dir(staging.join("lost+found"));
            copy_tree(&staging, dir).map_err(|e| Error::CopyBack(dir.clone(), e))
        })();
        let _ = std::fs::remove_dir_all(&staging);
        result
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Copies `from`'s tree into `to` (files overwritten, permissions kept,
/// symlinks recreated).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)?;
            if dst.symlink_metadata().is_ok() {
                std::fs::remove_file(&dst)?;
            }
            std::os::unix::fs::symlink(target, &dst)?;
        } else {
            if dst
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                std::fs::remove_file(&dst)?;
            }
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        let p = |s: &str| s.parse::<ShareConfig>();
        assert_eq!(
            p("/a/b").unwrap(),
            ShareConfig {
                dir: "/a/b".into(),
                rw: false
            }
        );
        assert!(p("/a/b,rw").unwrap().rw);
        assert!(!p("/a/b,ro").unwrap().rw);
        assert_eq!(p("/a,b").unwrap().dir, PathBuf::from("/a,b"));
        assert!(p(",rw").is_err());
        assert!(p("").is_err());
    }

    #[test]
    fn round_trip_through_an_image() {
        if Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("SKIPPED: no mkfs.ext4");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ember-share-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a b.txt"), "hello\n").unwrap();
        std::fs::write(dir.join("sub/x"), "x\n").unwrap();
        let share = Share::create(format!("{},rw", dir.display()).parse().unwrap()).unwrap();
        assert!(share.rw());
        let size = std::fs::metadata(share.image()).unwrap().len();
        assert!(size >= MARGIN && size.is_multiple_of(1 << 20), "{size}");
        // What the guest would have seen; pretend it changed a file.
        std::fs::write(dir.join("a b.txt"), "changed on the host\n").unwrap();
        share.copy_back().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a b.txt")).unwrap(),
            "hello\n"
        );
        assert_eq!(std::fs::read_to_string(dir.join("sub/x")).unwrap(), "x\n");
        assert!(!dir.join("lost+found").exists());
        let image = share.image().to_path_buf();
        drop(share);
        assert!(!image.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_dir() {
        let r = Share::create("/nonexistent/ember-share".parse().unwrap());
        assert!(matches!(r, Err(Error::NotADir(..))), "{r:?}");
    }
}
