//! Distribution guests (`resources/distro/build.sh`): Debian 12's stock
//! kernels, `linux-image-amd64` and `linux-image-cloud-amd64`, each with
//! the distro initramfs, boot the Debian 12 root disk to systemd's
//! `multi-user.target` with 2 vCPUs, no failed units, and power off with
//! `systemctl poweroff`. In the lab on PVM hosts, directly on VMX/SVM hosts.
//!
//! Each case is one boot: ember with the bzImage as shipped (`vmlinuz`)
//! and with the ELF `vmlinux` extracted from it, entered through the 64-bit
//! Linux boot protocol (`--boot-mode linux64`) and through its PVH note
//! (what `--boot-mode auto` picks); with `EMBER_DISTRO_QEMU=1` also QEMU `-M microvm` with ACPI as
//! a reference (not by default: in the lab it kills the L1 kernel too
//! often). The guests boot `quiet`: in the nested lab each console byte is
//! a port-I/O exit, and the lab's emulated SVM now and then resumes a guest
//! with the L1 host's state after one, so the guest triple-faults or spins
//! (docs/LAB.md, "When the lab itself fails"). A boot that ends without the
//! guest's power-off is still retried twice and reported. The stock kernels
//! find virtio-mmio devices only in ACPI tables (they lack
//! `VIRTIO_MMIO_CMDLINE_DEVICES`; the cloud kernel lacks the MP-table parser
//! too), and end the VM through ACPI S5.

mod common;

use common::lab::{case, lab_tests_skipped, qemu_files, repo, run_in_lab_with};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// ember's boots: (case name, VMM, kernel flavour, kernel file in the lab);
/// VMM `ember64` is ember with `--boot-mode linux64`.
const EMBER_CASES: &[(&str, &str, &str, &str)] = &[
    ("ember-amd64", "ember", "amd64", "amd64.vmlinuz"),
    (
        "ember-cloud-amd64",
        "ember",
        "cloud-amd64",
        "cloud-amd64.vmlinuz",
    ),
    ("ember-amd64-vmlinux", "ember64", "amd64", "amd64.vmlinux"),
    (
        "ember-cloud-amd64-vmlinux",
        "ember64",
        "cloud-amd64",
        "cloud-amd64.vmlinux",
    ),
];
/// ember's PVH boots of the same `vmlinux` files (`--boot-mode auto`).
const PVH_CASES: &[(&str, &str, &str, &str)] = &[
    ("ember-amd64-vmlinux-pvh", "ember", "amd64", "amd64.vmlinux"),
    (
        "ember-cloud-amd64-vmlinux-pvh",
        "ember",
        "cloud-amd64",
        "cloud-amd64.vmlinux",
    ),
];
/// The reference boots, QEMU microvm with ACPI: run only with
/// `EMBER_DISTRO_QEMU=1`. In the nested lab QEMU as the inner VMM is what
/// most often kills the L1 kernel itself ("corrupted stack end" in
/// `qemu-system-x86`: 4 of the 7 L1 panics of session 16 in about a tenth
/// of its boots, twice in one CI run's first boot, `quiet` or not;
/// docs/LAB.md).
const QEMU_CASES: &[(&str, &str, &str, &str)] = &[
    ("qemu-amd64", "qemu", "amd64", "amd64.vmlinuz"),
    (
        "qemu-cloud-amd64",
        "qemu",
        "cloud-amd64",
        "cloud-amd64.vmlinuz",
    ),
];
/// The stock kernel flavours (`linux-image-FLAVOUR`).
const FLAVOURS: &[&str] = &["amd64", "cloud-amd64"];
/// The lab script's deadline, for all the boots: each takes 20 to 40 s in the
/// lab and has a deadline of its own, 240 s, in the script.
const LAB_TIMEOUT_S: u32 = 1500;

/// Runs `resources/distro/build.sh` (cached) and returns its directory.
fn distro_dir() -> PathBuf {
    let out = Command::new(repo().join("resources/distro/build.sh"))
        .output()
        .expect("cannot run resources/distro/build.sh");
    assert!(
        out.status.success(),
        "resources/distro/build.sh failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    for f in ["rootfs.ext4", "metadata"] {
        assert!(dir.join(f).is_file(), "the build left no {f} in {dir:?}");
    }
    dir
}

/// `key=value` lines of the build's metadata.
fn metadata(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("metadata"))
        .expect("read the distro metadata")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy of the cached 1 GiB root disk, shrunk to its contents plus
/// 64 MiB: the lab holds its files in RAM, where a sparse file is dense.
/// The guests write to this copy, never to the cache.
fn small_disk(src: &Path, dest: &Path) {
    let _ = std::fs::remove_file(dest);
    run(Command::new("cp").arg("--sparse=always").arg(src).arg(dest));
    let estimate = run(Command::new("resize2fs").arg("-P").arg(dest));
    let blocks: u64 = estimate
        .lines()
        .find_map(|l| l.split_once("minimum size of the filesystem:"))
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("resize2fs -P gave no estimate: {estimate}"));
    // 4 KiB blocks: 16384 of them are 64 MiB.
    run(Command::new("resize2fs")
        .arg(dest)
        .arg((blocks + 16384).to_string()));
}

/// The time in seconds since the VMM started of the first console line
/// holding every one of `texts`, from the lab's `stamp` prefix ("[MS] ...");
/// None on a host, where lines carry no stamp.
fn stamp_of(output: &str, texts: &[&str]) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| texts.iter().all(|t| l.contains(t)))?;
    let ms: f64 = line.strip_prefix('[')?.split_once(']')?.0.parse().ok()?;
    Some(ms / 1e3)
}

#[test]
fn debian_guests_boot_to_multi_user_and_power_off() {
    if lab_tests_skipped("debian_guests_boot_to_multi_user_and_power_off") {
        return;
    }
    let dir = distro_dir();
    let meta = metadata(&dir);
    let stage = Path::new(env!("CARGO_TARGET_TMPDIR")).join("distro-guest");
    std::fs::create_dir_all(&stage).unwrap();
    let mut files = Vec::new();
    for flavour in FLAVOURS {
        for f in ["vmlinuz", "vmlinux", "initramfs.cpio.gz"] {
            // One name per flavour in the lab: a symlink the lab follows.
            let link = stage.join(format!("{flavour}.{f}"));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(dir.join(flavour).join(f), &link).unwrap();
            files.push(link.display().to_string());
        }
    }
    let disk = stage.join("rootfs.ext4");
    small_disk(&dir.join("rootfs.ext4"), &disk);
    files.push(disk.display().to_string());
    let with_qemu = std::env::var("EMBER_DISTRO_QEMU").is_ok_and(|v| v == "1");
    if !with_qemu {
        eprintln!("QEMU's reference boots not run (EMBER_DISTRO_QEMU=1 adds them)");
    }
    let qemu_cases: &[_] = if with_qemu { QEMU_CASES } else { &[] };
    let cases_run: Vec<_> = qemu_cases
        .iter()
        .chain(EMBER_CASES.iter())
        .chain(PVH_CASES.iter())
        .collect();
    let cases = stage.join("cases");
    let lines: String = cases_run
        .iter()
        .map(|(name, vmm, flavour, kernel)| format!("{name} {vmm} {flavour} {kernel}\n"))
        .collect();
    std::fs::write(&cases, lines).unwrap();
    files.push(cases.display().to_string());
    if with_qemu {
        files.extend(qemu_files());
    }
    files.push(env!("CARGO_BIN_EXE_ember").to_string());

    // 1 GiB guests and a ~300 MiB disk (two copies at a time) in the lab.
    let lab = run_in_lab_with("distro_guest.sh", &files, LAB_TIMEOUT_S, "4G");
    assert_eq!(
        lab.status, 0,
        "lab script failed:\n{}\n{}",
        lab.stdout, lab.stderr
    );

    for (name, _vmm, flavour, _kernel) in cases_run {
        // A stalled or failed boot is retried (twice at most): the last
        // attempt counts, and every retry is reported.
        let stalls = lab.stdout.matches(&format!("=== STALLED {name}:")).count();
        if stalls > 0 {
            eprintln!("{name}: the lab froze the guest {stalls} time(s); retried");
        }
        for (at, _) in lab.stdout.match_indices(&format!("=== RETRY {name}:")) {
            let line = lab.stdout[at..].lines().next().unwrap_or("");
            let start = lab.stdout[..at]
                .rfind(&format!("=== CASE {name}\n"))
                .unwrap_or(0);
            let tail: Vec<&str> = lab.stdout[start..at].lines().rev().take(15).collect();
            eprintln!(
                "{name}: retried after a boot without power-off ({line}); its last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let last = lab
            .stdout
            .rfind(&format!("=== CASE {name}\n"))
            .unwrap_or_else(|| panic!("case {name} never started:\n{}", lab.stdout));
        assert!(
            !lab.stdout[last..].contains(&format!("=== STALLED {name}:")),
            "{name}: the guest stalled on its last attempt (no console output for minutes):\n{}",
            &lab.stdout[last..]
        );
        let c = case(&lab.stdout[last..], name);
        let console = &c.output;
        assert!(
            !console.contains("EMBER-DISTRO-INITRAMFS-FAILED"),
            "{name}: the initramfs failed:\n{console}"
        );
        assert!(
            console.contains("ember-distro initramfs: /dev/vda (ext4, ro) mounted"),
            "{name}: the initramfs never mounted the root disk:\n{console}"
        );
        let line = console
            .lines()
            .find_map(|l| l.split_once("EMBER-DISTRO state="))
            .map(|(_, rest)| format!("state={rest}"))
            .unwrap_or_else(|| panic!("{name}: no facts line from the guest:\n{console}"));
        let facts: HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let want_kernel = meta
            .get(&format!("{flavour}.release"))
            .map(String::as_str)
            .unwrap_or("?");
        for (key, want) in [
            ("state", "running"),
            ("failed", "0"),
            ("cpus", "2"),
            ("online", "0-1"),
            ("multi_user", "active"),
            ("kernel", want_kernel),
        ] {
            assert_eq!(
                facts.get(key).copied(),
                Some(want),
                "{name}: {key}; console:\n{console}"
            );
        }
        assert!(
            console.contains("reboot: Power down"),
            "{name}: the guest did not power off:\n{console}"
        );
        assert_eq!(c.status, 0, "{name}: the VMM's exit status\n{console}");
        // Where the time goes, for the record (the lab's figures are
        // emulation on emulation, see docs/LAB.md).
        let at = |texts: &[&str]| {
            stamp_of(console, texts).map_or("?".to_string(), |s| format!("{s:.1} s"))
        };
        let analyze = console
            .lines()
            .find(|l| l.contains("Startup finished in"))
            .map_or("", |l| l.split_once("Startup").map_or(l, |(_, r)| r));
        eprintln!(
            "{name}: switch_root {}, login {}, VMM exit {}; systemd: Startup{analyze}",
            at(&["ember-distro initramfs:"]),
            at(&["automatic login"]),
            at(&["STAMP-EXIT"]),
        );
    }
}
