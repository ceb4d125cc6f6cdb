//! virtio-block through the real binary: `--disk` and `--root` errors, the
//! command-line entries, and the tiny guest reading the virtio-mmio
//! identity registers at the first device window (tier b).

mod common;

use common::*;

#[test]
fn disk_errors_are_one_line() {
    let elf = tiny_guest(0, false);
    let k = elf.to_str().unwrap();
    one_line_error(
        &["run", "--kernel", k, "--disk", "/nonexistent/disk.img"],
        "cannot open disk /nonexistent/disk.img",
    );
    one_line_error(
        &[
            "run",
            "--kernel",
            k,
            "--disk",
            "/nonexistent/disk.img,readonly",
        ],
        "cannot open disk",
    );
    let odd = temp_disk("odd", 1000);
    one_line_error(
        &["run", "--kernel", k, "--disk", odd.to_str().unwrap()],
        "is 1000 bytes, not a multiple of 512",
    );
    one_line_error(
        &["run", "--kernel", k, "--disk", "/tmp,readonly"],
        "neither a regular file nor a block device",
    );
    let ok = temp_disk("ok", 4096);
    let ok = ok.to_str().unwrap();
    for bad in [
        format!("{ok},rw"),
        format!("{ok},id="),
        format!("{ok},id=123456789012345678901"),
        ",readonly".to_string(),
    ] {
        one_line_error(&["run", "--kernel", k, "--disk", &bad], "invalid --disk");
    }
    one_line_error(
        &[
            "run",
            "--kernel",
            k,
            "--disk",
            ok,
            "--root",
            "/dev/vdb",
            "--cmdline",
            "root=/dev/sda",
        ],
        "conflicts with the root=",
    );
    let many: Vec<String> = (0..20)
        .flat_map(|_| ["--disk".to_string(), ok.to_string()])
        .collect();
    let mut args = vec!["run", "--kernel", k];
    args.extend(many.iter().map(String::as_str));
    one_line_error(&args, "too many disks: 20 given, ember supports at most 19");
}

#[test]
fn disks_are_announced_on_the_command_line() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, false);
    let a = temp_disk("a", 1 << 20);
    let b = temp_disk("b", 1 << 20);
    let out = ember_null(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0",
        "--disk",
        a.to_str().unwrap(),
        "--disk",
        &format!("{},readonly,id=data", b.to_str().unwrap()),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains(
            "cmdline: console=ttyS0 root=/dev/vda rw virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6,"
        ),
        "{stdout}"
    );
    // --root none: no root=, entries still there.
    let out = ember_null(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--cmdline",
        "quiet",
        "--root",
        "none",
        "--disk",
        a.to_str().unwrap(),
    ]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("cmdline: quiet virtio_mmio.device=4K@0xd0000000:5,"),
        "{stdout}"
    );
}

#[test]
fn guest_reads_the_virtio_mmio_magic() {
    if !kvm_available() {
        return;
    }
    // MODE 2 reads 4 bytes at 0xd0000000: the first device's MagicValue.
    let elf = tiny_guest(2, false);
    let a = temp_disk("magic", 1 << 20);
    let out = ember_null(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--disk",
        a.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains("ember-tiny: mmio read 0x74726976\n"),
        "{stdout}"
    );
}
