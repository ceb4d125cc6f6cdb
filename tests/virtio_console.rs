//! `--console virtio` through the real binary on this host's KVM (tier b):
//! the default command line and the slot after the disks, the UART's
//! output still on stdout while stdin no longer reaches it, and the CLI
//! errors. The guest side (Linux on hvc0) is `tests/console_in_lab.rs`.

mod common;

use common::*;

#[test]
fn console_errors_are_one_line() {
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    one_line_error(
        &["run", "--kernel", k, "--console", "hvc"],
        "invalid console \"hvc\": expected serial or virtio",
    );
    // The console takes one of the 19 virtio-mmio slots.
    let d = temp_disk("vcon-many", 1 << 20);
    let many: Vec<String> = (0..19)
        .flat_map(|_| ["--disk".to_string(), format!("{},readonly", d.display())])
        .collect();
    let mut args = vec!["run", "--kernel", k, "--console", "virtio"];
    args.extend(many.iter().map(String::as_str));
    one_line_error(&args, "too many disks: 19 given, ember supports at most 18");
}

#[test]
fn default_cmdline_and_slot_after_the_disks() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    let out = ember_null(&["run", "--kernel", k, "--console", "virtio"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains(
            "cmdline: console=hvc0 reboot=k panic=-1 virtio_mmio.device=4K@0xd0000000:5,"
        ),
        "{stdout}"
    );
    let (a, b) = (temp_disk("vcon-a", 1 << 20), temp_disk("vcon-b", 1 << 20));
    let out = ember_null(&[
        "run",
        "--kernel",
        k,
        "--console",
        "virtio",
        "--disk",
        a.to_str().unwrap(),
        "--disk",
        &format!("{},readonly", b.display()),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains(
            "cmdline: console=hvc0 reboot=k panic=-1 root=/dev/vda rw \
             virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
             virtio_mmio.device=4K@0xd0002000:7,"
        ),
        "{stdout}"
    );
    // --console serial is the default.
    let out = ember_null(&["run", "--kernel", k, "--console", "serial"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("cmdline: console=ttyS0 reboot=k panic=-1,"),
        "{stdout}"
    );
}

#[test]
fn stdin_goes_to_the_virtio_console_not_the_uart() {
    if !kvm_available() {
        return;
    }
    // The echo guest polls COM1 for input. With --console virtio its
    // output still reaches stdout, but what is piped in goes to the
    // virtio console (which this guest never sets up), so the guest keeps
    // waiting until --timeout stops it.
    let elf = tiny_guest(3, false);
    let out = ember(
        &[
            "run",
            "--kernel",
            elf.to_str().unwrap(),
            "--console",
            "virtio",
            "--timeout",
            "1",
        ],
        b"hello, guest.",
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(stdout.contains("ember-tiny: echo ready\n"), "{stdout}");
    assert!(!stdout.contains("hello"), "{stdout}");
    assert!(!stdout.contains("echo done"), "{stdout}");
}
