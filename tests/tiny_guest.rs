//! Tier (b): the real `ember` binary boots the tiny guest
//! (`resources/tiny-guest/guest.S`) on this host's KVM, through each entry
//! protocol, and we assert on what the guest prints and on the exit status.
//!
//! These fail loudly without a usable /dev/kvm unless
//! `EMBER_SKIP_KVM_TESTS=1` is set.

mod common;

use std::process::{Command, Stdio};

use common::*;

const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

fn run_ok(args: &[&str]) -> String {
    let out = ember_null(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stdout
}

#[test]
fn linux64_entry_sees_zero_page_and_cmdline() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, false);
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "ember-tiny: linux64 zero page HdrS ok, cmdline: {DEFAULT_CMDLINE}, e820 entries: 4, initrd at 0x00000000 size 0x00000000\n"
        )),
        "{out}"
    );
}

#[test]
fn linux64_custom_cmdline_memory_above_4g_and_initrd() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, false);
    let initrd = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-initrd.img");
    std::fs::write(&initrd, vec![0x5a; 0x1234]).unwrap();
    let out = run_ok(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--cmdline",
        "root=/dev/vda quiet ember.test=42",
        "--memory",
        "4G",
        "--initrd",
        initrd.to_str().unwrap(),
    ]);
    // 4 GiB crosses the MMIO gap: one more e820 entry above 4 GiB.
    assert!(
        // The initrd ends at the top of low RAM below initrd_addr_max
        // (0x7fffffff for ELF kernels), page aligned.
        out.contains(
            "cmdline: root=/dev/vda quiet ember.test=42, e820 entries: 5, \
             initrd at 0x7fffe000 size 0x00001234\n"
        ),
        "{out}"
    );
}

#[test]
fn bzimage_entry_sees_its_header_and_initrd_limit() {
    if !kvm_available() {
        return;
    }
    let bz = tiny_bzimage(0, 0x37ff_ffff);
    let out = run_ok(&["run", "--kernel", bz.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "ember-tiny: linux64 zero page HdrS ok, cmdline: {DEFAULT_CMDLINE}, e820 entries: 4"
        )),
        "{out}"
    );
    // The header's initrd_addr_max (0x37ffffff) caps the initrd below the
    // top of a 2 GiB guest's RAM.
    let initrd = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-initrd-bz.img");
    std::fs::write(&initrd, vec![1; 0x1234]).unwrap();
    let out = run_ok(&[
        "run",
        "--kernel",
        bz.to_str().unwrap(),
        "--memory",
        "2G",
        "--initrd",
        initrd.to_str().unwrap(),
    ]);
    assert!(
        out.contains("initrd at 0x37ffe000 size 0x00001234\n"),
        "{out}"
    );
    // PVH needs an ELF.
    let out = ember_null(&[
        "run",
        "--kernel",
        bz.to_str().unwrap(),
        "--boot-mode",
        "pvh",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("needs an ELF kernel"));
}

#[test]
fn pvh_entry_sees_start_info() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, true);
    let out = run_ok(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--cmdline",
        "pvh=yes",
    ]);
    assert!(
        out.contains("ember-tiny: pvh start_info magic ok, cmdline: pvh=yes, memmap entries: 4, modules: 0, rsdp: ok\n"),
        "{out}"
    );
    // Forcing the 64-bit protocol on the same ELF uses its 64-bit entry.
    let out = run_ok(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--boot-mode",
        "linux64",
    ]);
    assert!(
        out.contains("ember-tiny: linux64 zero page HdrS ok"),
        "{out}"
    );
    // Without ACPI tables the start info has no RSDP.
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap(), "--no-acpi"]);
    assert!(out.contains("modules: 0, rsdp: none\n"), "{out}");
}

#[test]
fn pvh_with_initrd_gets_a_module() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(0, true);
    let initrd = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-initrd-pvh.img");
    std::fs::write(&initrd, b"initrd").unwrap();
    let out = run_ok(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--memory",
        "5G",
    ]);
    assert!(
        out.contains("memmap entries: 5, modules: 1, rsdp: ok\n"),
        "{out}"
    );
}

#[test]
fn triple_fault_is_a_clean_reset() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(1, false);
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap()]);
    assert!(out.contains("ember-tiny: triple fault next\n"), "{out}");
    assert!(!out.contains("survived"), "{out}");
}

#[test]
fn unknown_mmio_reads_all_ones() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(2, false);
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap()]);
    assert!(out.contains("ember-tiny: mmio read 0xffffffff\n"), "{out}");
}

#[test]
fn piped_stdin_reaches_the_uart() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(3, false);
    let out = ember(
        &["run", "--kernel", elf.to_str().unwrap()],
        b"hello, guest.",
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ember-tiny: echo ready\nhello, guest\nember-tiny: echo done, bytes: 12\n"),
        "{stdout}"
    );
}

#[test]
fn long_piped_stdin_is_paced_by_the_fifo() {
    if !kvm_available() {
        return;
    }
    // More than the 64-byte FIFO: the rest must follow as the guest reads.
    let elf = tiny_guest(3, false);
    let mut input = "0123456789".repeat(30).into_bytes();
    input.push(b'.');
    let out = ember(&["run", "--kernel", elf.to_str().unwrap()], &input);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&"0123456789".repeat(30)), "{stdout}");
    assert!(stdout.contains("echo done, bytes: 300\n"), "{stdout}");
}

#[test]
fn mp_table_lists_every_vcpu() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(4, false);
    for cpus in ["1", "2", "16"] {
        let out = run_ok(&["run", "--kernel", elf.to_str().unwrap(), "--cpus", cpus]);
        assert!(
            out.contains(&format!("ember-tiny: mp table cpus: {cpus}\n")),
            "{out}"
        );
    }
}

#[test]
fn sigterm_stops_the_vm_cleanly() {
    if !kvm_available() {
        return;
    }
    // The echo guest waits for input forever; stdin stays open.
    let elf = tiny_guest(3, false);
    let mut child = Command::new(EMBER)
        .args(["run", "--kernel", elf.to_str().unwrap(), "--cpus", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = read_until(&mut stdout, "echo ready");
    assert!(seen.contains("echo ready"), "{seen}");
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait(child);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn stdin_eof_does_not_hang_or_spin() {
    if !kvm_available() {
        return;
    }
    // Empty piped stdin (immediate EOF) while the guest prints and resets.
    let elf = tiny_guest(0, false);
    let out = ember(&["run", "--kernel", elf.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.contains("HdrS ok"));
}

#[test]
fn cpl0_emulation_failure_is_a_vm_failure() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(5, false);
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("ember-tiny: int3 next\n"), "{stdout}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        // PVM's emulator rejects int3 at CPL0: KVM internal error.
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("ember: error: vCPU 0: KVM"),
            "{stderr}"
        );
    } else {
        // Hardware KVM: no IDT, so int3 triple-faults: a reset.
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }
}

#[test]
fn acpi_s5_power_off_ends_ember_with_status_0() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(9, false);
    for cpus in ["1", "2"] {
        let out = ember_null(&["run", "--kernel", elf.to_str().unwrap(), "--cpus", cpus]);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {stdout}\nstderr: {stderr}"
        );
        // The zero page points at the RSDP in the BIOS area.
        assert!(
            stdout.contains("ember-tiny: acpi rsdp at 0x000e0000 RSD PTR ok\n"),
            "{stdout}"
        );
        // The vCPU did not run past the power-off write.
        assert!(!stdout.contains("survived"), "{stdout}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // With a command the power-off is a stop without a reported status.
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{:?}", text(&out));
}

#[test]
fn no_acpi_leaves_acpi_rsdp_addr_zero() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(9, false);
    // The sleep registers stay on the bus without the tables, so the
    // guest's power-off write still ends ember.
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap(), "--no-acpi"]);
    assert!(
        out.contains("ember-tiny: acpi rsdp at 0x00000000\n"),
        "{out}"
    );
    assert!(!out.contains("survived"), "{out}");
}

#[test]
fn acpi_reset_register_ends_ember_with_status_0() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(10, false);
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap()]);
    assert!(out.contains("ember-tiny: acpi reset next\n"), "{out}");
    assert!(!out.contains("survived"), "{out}");
}

/// A guest that never programs the 8259 PIC (as Linux does not on
/// hardware-reduced ACPI) enables interrupts and makes COM1 raise IRQ 4
/// with the IOAPIC pin masked: nothing may arrive. With KVM's zeroed PIC
/// (unmasked, vector base 0) it got "interrupt vector 4", an exception
/// vector (src/devices/pic.rs).
#[test]
fn an_unprogrammed_pic_delivers_nothing() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(12, false);
    let out = run_ok(&["run", "--kernel", elf.to_str().unwrap()]);
    assert!(out.contains("ember-tiny: no interrupt\n"), "{out}");
    assert!(!out.contains("interrupt vector"), "{out}");
}
