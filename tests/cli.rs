//! The `ember` command line: help, version, and one-line errors with exit
//! status 1 for every kind of bad input (no panic, no backtrace).

mod common;

use common::*;

fn assert_one_line_error(args: &[&str], expect: &str) {
    let out = ember_null(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: stdout {stdout} stderr {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(lines[0].starts_with("ember: error: "), "{args:?}: {stderr}");
    assert!(
        lines[0].contains(expect),
        "{args:?}: expected {expect:?} in {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn help_and_version() {
    let out = ember_null(&["help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.contains("run"));
    let out = ember_null(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out).0;
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--memory",
        "--cpus",
        "--boot-mode",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    let out = ember_null(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let v = text(&out).0;
    assert!(
        v.starts_with(&format!("ember {}\n", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("host KVM: "), "{v}");
}

#[test]
fn missing_or_unreadable_kernel() {
    assert_one_line_error(
        &["run", "--kernel", "/nonexistent/vmlinux"],
        "cannot read kernel /nonexistent/vmlinux: No such file",
    );
    assert_one_line_error(&["run", "--kernel", "/"], "is not a regular file");
    assert_one_line_error(&["run"], "--kernel");
}

#[test]
fn not_a_kernel() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-kernel.txt");
    std::fs::write(&path, "just some text, not a kernel\n").unwrap();
    assert_one_line_error(
        &["run", "--kernel", path.to_str().unwrap()],
        "is not a kernel",
    );
    // An ELF that is truncated after its magic.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("truncated.elf");
    std::fs::write(&path, b"\x7fELF\x02\x01\x01").unwrap();
    assert_one_line_error(
        &["run", "--kernel", path.to_str().unwrap()],
        "cannot load ELF kernel",
    );
}

#[test]
fn bad_memory_sizes() {
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    assert_one_line_error(&["run", "--kernel", k, "--memory", "32M"], "too small");
    assert_one_line_error(&["run", "--kernel", k, "--memory", "63"], "too small");
    assert_one_line_error(&["run", "--kernel", k, "--memory", "2T"], "too large");
    assert_one_line_error(
        &["run", "--kernel", k, "--memory", "1000G"],
        "larger than the host can give",
    );
    assert_one_line_error(&["run", "--kernel", k, "--memory", "12X"], "invalid size");
}

#[test]
fn bad_cpu_counts() {
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    assert_one_line_error(
        &["run", "--kernel", k, "--cpus", "0"],
        "invalid vCPU count 0",
    );
    assert_one_line_error(
        &["run", "--kernel", k, "--cpus", "255"],
        "invalid vCPU count 255",
    );
    assert_one_line_error(&["run", "--kernel", k, "--cpus", "-1"], "");
}

#[test]
fn bad_boot_mode_and_cmdline() {
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    assert_one_line_error(
        &["run", "--kernel", k, "--boot-mode", "efi"],
        "invalid boot mode",
    );
    assert_one_line_error(
        &["run", "--kernel", k, "--boot-mode", "pvh"],
        "no XEN_ELFNOTE_PHYS32_ENTRY note",
    );
    let long = "x".repeat(3000);
    assert_one_line_error(&["run", "--kernel", k, "--cmdline", &long], "command line");
}

#[test]
fn kvm_device_absent_or_wrong() {
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    assert_one_line_error(
        &["run", "--kernel", k, "--kvm-device", "/nonexistent/kvm"],
        "does not exist",
    );
    assert_one_line_error(
        &["run", "--kernel", k, "--kvm-device", "/dev/null"],
        "/dev/null is not a usable KVM device",
    );
}

#[test]
fn unknown_flag() {
    assert_one_line_error(&["run", "--kernel", "x", "--frobnicate"], "--frobnicate");
    assert_one_line_error(&["dance"], "dance");
}

#[test]
fn kvm_permission_denied_names_the_fix() {
    // Needs root (to drop to `nobody`) and util-linux's setpriv.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output();
    if !root || setpriv.is_err() || std::fs::metadata("/dev/kvm").is_err() {
        eprintln!("SKIPPED: needs root, setpriv and /dev/kvm");
        return;
    }
    // A kernel that `nobody` can read.
    let elf = tiny_guest(0, false);
    let copy = std::env::temp_dir().join(format!("ember-perm-{}.elf", std::process::id()));
    std::fs::copy(&elf, &copy).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            EMBER,
        ])
        .args(["run", "--kernel", copy.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    let (_, stderr) = text(&out);
    if stderr.contains("permission denied") || out.status.code() == Some(1) {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("ember: error: permission denied opening /dev/kvm"),
            "{stderr}"
        );
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            assert!(stderr.contains("host KVM is PVM"), "{stderr}");
        }
    } else {
        // /dev/kvm is world-accessible here (mode 0666): nothing to test.
        eprintln!("SKIPPED: /dev/kvm is accessible to nobody");
    }
}
