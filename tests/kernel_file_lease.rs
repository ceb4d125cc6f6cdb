//! ember maps a kernel's whole pages from its file instead of copying them
//! (`src/boot/file_map.rs`), under a read lease (`src/boot/lease.rs`).
//! These tests rewrite the kernel file in place while the guest runs and
//! check that the guest keeps seeing the kernel it booted, and that the
//! writer is not held up. The guest is the tiny guest in MODE 11 (prints a
//! word of a read-only page, waits for a byte on COM1, prints it again),
//! linked with page-aligned segments, on this host's KVM.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The MODE 11 guest with `word` at the start of its read-only page,
/// linked so its segments are page aligned in the file and in memory.
fn guest(word: u32) -> PathBuf {
    tiny_guest_linked(
        11,
        &[&format!("PAGE_WORD={word:#x}")],
        &[
            "-z",
            "max-page-size=4096",
            "-z",
            "noseparate-code",
            "-Ttext-segment=0x100000",
        ],
    )
}

/// A fresh copy of `from` that only this test writes.
fn fresh_copy(from: &Path, name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lease-{}-{name}.elf", std::process::id()));
    let _ = std::fs::remove_file(&p);
    std::fs::copy(from, &p).unwrap();
    p
}

fn start(kernel: &Path) -> Child {
    Command::new(EMBER)
        .args(["run", "--kernel"])
        .arg(kernel)
        .env("EMBER_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the guest from `kernel`, rewrites `kernel` with `replacement`
/// once the guest has printed its word, lets the guest print it again;
/// returns (stdout, stderr, how long the rewrite took).
fn rewrite_while_running(kernel: &Path, replacement: &[u8]) -> (String, String, Duration) {
    let mut child = start(kernel);
    let mut stdout = child.stdout.take().unwrap();
    let first = read_until(&mut stdout, "word 0x11111111\n");
    assert!(first.contains("word 0x11111111"), "first line: {first}");
    let t = Instant::now();
    std::fs::write(kernel, replacement).unwrap();
    let took = t.elapsed();
    assert_eq!(
        std::fs::read(kernel).unwrap(),
        replacement,
        "the write went through"
    );
    child.stdin.take().unwrap().write_all(b"x").unwrap();
    let rest = read_until(&mut stdout, "ember-tiny: file page word 0x");
    let rest = rest + &read_until(&mut stdout, "\n");
    child.stdout = Some(stdout);
    let out = wait(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        first + &rest + &String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

#[test]
fn rewriting_a_mapped_kernel_file_does_not_reach_the_guest() {
    if !kvm_available() {
        return;
    }
    let a = guest(0x1111_1111);
    let b = std::fs::read(guest(0x2222_2222)).unwrap();
    assert_eq!(std::fs::read(&a).unwrap().len(), b.len(), "same layout");
    let kernel = fresh_copy(&a, "mapped");
    let (stdout, stderr, took) = rewrite_while_running(&kernel, &b);
    assert!(stderr.contains("KiB mapped from the file"), "{stderr}");
    assert!(
        stderr.contains("KiB of guest memory copied from it, lease released"),
        "the lease broke and ember detached: {stderr}"
    );
    assert_eq!(
        stdout.matches("file page word 0x11111111").count(),
        2,
        "the guest still sees the kernel it booted: {stdout}"
    );
    assert!(!stdout.contains("0x22222222"), "{stdout}");
    assert!(took < Duration::from_secs(5), "the writer waited {took:?}");
}

#[test]
fn a_kernel_file_open_for_writing_is_copied() {
    if !kvm_available() {
        return;
    }
    let a = guest(0x1111_1111);
    let b = std::fs::read(guest(0x2222_2222)).unwrap();
    let kernel = fresh_copy(&a, "copied");
    // Someone holds the file open for writing: no lease, so no mapping.
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&kernel)
        .unwrap();
    let (stdout, stderr, _) = rewrite_while_running(&kernel, &b);
    drop(writer);
    assert!(stderr.contains("no read lease on the file"), "{stderr}");
    assert!(!stderr.contains("lease released"), "{stderr}");
    assert_eq!(
        stdout.matches("file page word 0x11111111").count(),
        2,
        "{stdout}"
    );
}
