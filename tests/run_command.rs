//! Issue 6, running a command in a VM. On this host: the exit-status port
//! and panic recognition with the tiny guest, `--timeout`, and the CLI's
//! command-mode errors. In the lab: `ember run ... -- CMD` with the default
//! Linux guest (exit statuses, arguments, 10,000 lines, `--share`,
//! `--timeout`, a panic, a reset without a status).

mod common;

use std::time::{Duration, Instant};

use common::lab::{case, guest_files, lab_tests_skipped, run_in_lab, which};
use common::*;

#[test]
fn exit_status_port_sets_embers_status() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(6, false);
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(42), "{stdout}\n{stderr}");
    assert!(stdout.contains("ember-tiny: reporting exit status 42\n"));
    assert!(!stdout.contains("survived"), "{stdout}");
    assert_eq!(stderr, "");
}

#[test]
fn panic_on_the_console_then_reset_is_a_guest_panic() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(7, false);
    for extra in [&[][..], &["--", "true"][..]] {
        let mut args = vec!["run", "--kernel", elf.to_str().unwrap()];
        args.extend(extra);
        let out = ember_null(&args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(123), "{stdout}\n{stderr}");
        let mut lines = stderr.lines();
        assert_eq!(
            lines.next(),
            Some("ember: error: guest kernel panic (exit status 123); its panic lines:")
        );
        assert_eq!(
            lines.next(),
            Some("ember: | Kernel panic - not syncing: tiny test panic")
        );
    }
}

#[test]
fn reset_without_status_in_command_mode() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, false);
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap(), "--", "true"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(122), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(
            "ember: error: guest reset before the command reported an exit status \
             (exit status 122); last console lines:\nember: | ember-tiny: linux64"
        ),
        "{stderr}"
    );
    // The command is on the kernel command line, base64 encoded.
    assert!(stdout.contains("loglevel=3 ember.cmd=dHJ1ZQ=="), "{stdout}");
}

#[test]
fn timeout_stops_a_spinning_guest() {
    if !kvm_available() {
        return;
    }
    // Mode 3 polls COM1 for input forever once stdin is at EOF.
    let elf = tiny_guest(3, false);
    let start = Instant::now();
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap(), "--timeout", "1"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        stderr,
        "ember: error: timed out: the guest was still running after --timeout 1s (exit status 124)\n"
    );
}

#[test]
fn boot_timeout_needs_the_booted_port() {
    if !kvm_available() {
        return;
    }
    // Mode 3 never writes the booted port: the boot deadline ends it.
    let spin = tiny_guest(3, false);
    let out = ember_null(&[
        "run",
        "--kernel",
        spin.to_str().unwrap(),
        "--boot-timeout",
        "1",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(121), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(
            "ember: error: boot timed out: the guest had not reported booting after --boot-timeout 1s (exit status 121)"
        ),
        "{stderr}"
    );
    // Mode 8 writes it, then spins: only the run deadline ends it.
    let booted = tiny_guest(8, false);
    let args = ["run", "--kernel", booted.to_str().unwrap()];
    let out = ember_null(&[&args[..], &["--boot-timeout", "1", "--timeout", "2"]].concat());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(124), "{stdout}\n{stderr}");
}

#[test]
fn command_mode_errors_have_their_own_status() {
    let too_long = "x".repeat(2000);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["run", "--kernel", "Cargo.toml", "--", &too_long],
            125,
            "ember: error: the command is too long for the kernel command line",
        ),
        (
            &["run", "--", "true"],
            125,
            "ember: error: no --kernel given and no default guest at /nonexistent/ember/default-guest",
        ),
        (
            &["run", "--kernel", "Cargo.toml", "--share", "/nonexistent/d", "--", "true"],
            125,
            "ember: error: --share /nonexistent/d: not a readable directory",
        ),
        (
            &["run", "--kernel", "Cargo.toml", "--timeout", "0", "--", "true"],
            125,
            "ember: error: invalid value '0' for '--timeout <SECS>'",
        ),
        (
            &["run", "--kernel", "Cargo.toml", "--share", "."],
            1,
            "ember: error: --share needs a command after `--`",
        ),
        (
            &["run"],
            1,
            "ember: error: --kernel is required unless a command follows `--`",
        ),
    ];
    for (args, status, start) in cases {
        let out = std::process::Command::new(EMBER)
            .args(*args)
            .env("XDG_CACHE_HOME", "/nonexistent")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(*status), "{args:?}: {stderr}");
        assert!(stderr.starts_with(start), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(stdout, "");
    }
}

fn lab_files() -> Vec<String> {
    let mut files = vec![env!("CARGO_BIN_EXE_ember").to_string()];
    files.extend(
        guest_files()
            .into_iter()
            .filter(|f| f.ends_with("vmlinux") || f.ends_with("initramfs.cpio.gz")),
    );
    for tool in ["mkfs.ext4", "debugfs"] {
        let path = which(tool);
        files.push(format!("{}={}", path.display(), path.display()));
    }
    files.push("/etc/mke2fs.conf=/etc/mke2fs.conf".into());
    files
}

fn verdict<'a>(stdout: &'a str, tag: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("no {tag} line:\n{stdout}"))
        .trim()
}

#[test]
fn run_command_in_the_lab() {
    if lab_tests_skipped("run_command_in_the_lab") {
        return;
    }
    let run = run_in_lab("run_command.sh", &lab_files(), 400);
    let out = &run.stdout;
    assert_eq!(run.status, 0, "lab script failed:\n{out}\n{}", run.stderr);

    let c = case(out, "exit7");
    assert_eq!(c.status, 7, "{}", c.output);
    assert_eq!(c.output, "", "quiet guest, no ember lines");

    let c = case(out, "true");
    assert_eq!(c.status, 0, "{}", c.output);

    let c = case(out, "args");
    assert_eq!(c.status, 0, "{}", c.output);
    assert_eq!(
        c.output, "arg0:<a b>\n<>\n<it's \"q\">\n<é ü>\n<x\ny>\n",
        "arguments survive the command line"
    );

    let c = case(out, "lines");
    assert_eq!(c.status, 0);
    let expected: String = (1..=10_000).map(|i| format!("line {i}\n")).collect();
    assert!(
        c.output == expected,
        "10,000 lines in order: got {} lines, first difference near {:?}",
        c.output.lines().count(),
        c.output.lines().zip(expected.lines()).find(|(a, b)| a != b)
    );

    let c = case(out, "share");
    assert_eq!(c.status, 3, "the script's exit status\n{}", c.output);
    assert_eq!(c.output, "hello from /mnt/share with arg1\nhost data\n");
    assert_eq!(verdict(out, "HOST-RO-NOT-COPIED"), "ok");

    let c = case(out, "sharerw");
    assert_eq!(c.status, 0, "{}", c.output);
    assert_eq!(verdict(out, "HOST-GUEST-TXT"), "written by the guest");
    assert_eq!(verdict(out, "HOST-DEEP"), "deep");
    assert_eq!(verdict(out, "HOST-CHANGED"), "changed");
    assert_eq!(
        verdict(out, "HOST-HELLO-KEPT"),
        "echo \"hello from $(pwd) with $1\""
    );

    let c = case(out, "timeout");
    assert_eq!(c.status, 124, "{}", c.output);
    assert!(
        c.output.contains(
            "ember: error: timed out: the guest was still running after --timeout 5s (exit status 124)"
        ),
        "{}",
        c.output
    );
    let elapsed: u64 = verdict(&c.output, "elapsed=").parse().unwrap();
    assert!(elapsed <= 10, "took {elapsed} s");

    let c = case(out, "panic");
    assert_eq!(c.status, 123, "{}", c.output);
    assert!(
        c.output
            .contains("ember: error: guest kernel panic (exit status 123); its panic lines:"),
        "{}",
        c.output
    );
    assert!(
        c.output
            .contains("ember: | Kernel panic - not syncing: sysrq triggered crash"),
        "{}",
        c.output
    );

    let c = case(out, "nostatus");
    assert_eq!(c.status, 122, "{}", c.output);
    assert!(
        c.output
            .contains("before the command reported an exit status"),
        "{}",
        c.output
    );
}
