//! virtio-console with real Linux guests, in the lab (issue 10): the hvc
//! kernel variant (no 8250 UART) under `--console virtio` prints its boot
//! messages and the init marker through hvc0 (those from before the
//! virtio console came up only through `dmesg`: Linux 6.1 drops its log
//! replay there, see docs/VIRTIO.md), runs what is typed on
//! ember's stdin (also input sent before the driver was ready), runs a
//! command with its exit status, and reboots to exit 0; the default kernel
//! works on hvc0 too.

mod common;

use common::lab::{
    case, ember_files, fact, facts, hvc_guest_dir, lab_tests_skipped, run_in_lab, Case,
};

/// The hvc kernel under a file name of its own (the lab puts files side by
/// side under their base names).
fn hvc_kernel() -> String {
    let link = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmlinux-hvc");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(hvc_guest_dir().join("vmlinux"), &link)
        .expect("cannot link the hvc kernel");
    link.display().to_string()
}

fn assert_boot_on_hvc0(name: &str, c: &Case) {
    for kernel_line in ["Freeing unused kernel image", "Run /init as init process"] {
        assert!(
            c.output.contains(kernel_line),
            "{name}: no kernel message {kernel_line:?} on ember's stdout:\n{}",
            c.output
        );
    }
    let f = facts(name, &c.output);
    assert!(
        fact(&f, "cmdline").contains("console=hvc0"),
        "{name}: the default command line with --console virtio: {f:?}"
    );
}

#[test]
fn virtio_console_in_the_lab() {
    if lab_tests_skipped("virtio_console_in_the_lab") {
        return;
    }
    let mut files = ember_files();
    files.push(hvc_kernel());
    let run = run_in_lab("console.sh", &files, 400);
    assert_eq!(
        run.status, 0,
        "lab script failed:\n{}\n{}",
        run.stdout, run.stderr
    );

    let c = case(&run.stdout, "hvc-shell");
    assert_boot_on_hvc0("hvc-shell", &c);
    for want in ["sum=42", "tty=hvc0 uarts=0", "Linux version 6."] {
        assert!(
            c.output.contains(want),
            "hvc-shell: no {want:?}: the typed command did not run or its output was lost:\n{}",
            c.output
        );
    }
    assert_eq!(c.status, 0, "hvc-shell: exit status\n{}", c.output);

    let c = case(&run.stdout, "hvc-early");
    assert_boot_on_hvc0("hvc-early", &c);
    assert!(
        c.output.contains("early=42"),
        "hvc-early: input sent before the driver was ready was lost:\n{}",
        c.output
    );
    assert_eq!(c.status, 0, "hvc-early: exit status\n{}", c.output);

    let c = case(&run.stdout, "hvc-command");
    assert!(
        c.output.contains("cmd-out 42"),
        "hvc-command:\n{}",
        c.output
    );
    assert_eq!(c.status, 7, "hvc-command: exit status\n{}", c.output);

    let c = case(&run.stdout, "default-shell");
    assert_boot_on_hvc0("default-shell", &c);
    for want in ["sum=42", "tty=hvc0"] {
        assert!(
            c.output.contains(want),
            "default-shell: no {want:?}:\n{}",
            c.output
        );
    }
    assert_eq!(c.status, 0, "default-shell: exit status\n{}", c.output);
}
