//! virtio-block with the default Linux guest, in the lab (issue 4): the
//! root on `/dev/vda`, data written by the guest and flushed is in the host
//! file after ember exits, the root image is clean for `e2fsck -fn` after
//! the guest created and deleted files, a readonly disk refuses writes and
//! stays unchanged, two data disks keep their order, sizes and ids.

mod common;

use common::lab::{case, fact, facts, guest_files, lab_tests_skipped, run_in_lab, which};

fn host_files() -> Vec<String> {
    let mut files = vec![env!("CARGO_BIN_EXE_ember").to_string()];
    files.extend(guest_files());
    for tool in ["e2fsck", "debugfs"] {
        let path = which(tool);
        files.push(format!("{}={}", path.display(), path.display()));
    }
    files
}

#[test]
fn virtio_block_in_the_lab() {
    if lab_tests_skipped("virtio_block_in_the_lab") {
        return;
    }
    let run = run_in_lab("block.sh", &host_files(), 400);
    assert_eq!(
        run.status, 0,
        "lab script failed:\n{}\n{}",
        run.stdout, run.stderr
    );

    let root = case(&run.stdout, "root");
    let f = facts("root", &root.output);
    assert_eq!(fact(&f, "root"), "vda", "root device\n{}", root.output);
    assert_eq!(
        fact(&f, "rootfs"),
        "ext4",
        "root filesystem\n{}",
        root.output
    );
    assert!(fact(&f, "cmdline").contains("root=/dev/vda"), "{f:?}");
    assert_eq!(root.status, 0, "exit status\n{}", root.output);

    let disks = case(&run.stdout, "disks");
    let out = &disks.output;
    assert_eq!(
        disks.status, 0,
        "exit status after the guest's reboot\n{out}"
    );
    let line = |tag: &str| -> &str {
        out.lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag} line in the guest's output:\n{out}"))
    };
    assert_eq!(line("GUEST-DD"), "GUEST-DD rc=0");
    assert_ne!(
        line("GUEST-RO-DD"),
        "GUEST-RO-DD rc=0",
        "a write to the readonly disk succeeded"
    );
    // 16 MiB and 8 MiB in 512-byte sectors, vdc read-only.
    assert!(
        line("GUEST-SIZES").ends_with("vdb=32768 vdc=16384 ro=1"),
        "{}",
        line("GUEST-SIZES")
    );
    assert_eq!(
        line("GUEST-SERIALS"),
        "GUEST-SERIALS vdb=data-one vdc=ro-two"
    );
    assert_eq!(line("GUEST-REMOUNT-RO"), "GUEST-REMOUNT-RO rc=0");

    for check in [
        "HOST-PATTERN",
        "HOST-REST-ZERO",
        "HOST-RO-UNCHANGED",
        "HOST-FSCK",
        "HOST-KEPT",
        "HOST-CHURN-GONE",
    ] {
        let verdict = run
            .stdout
            .lines()
            .find(|l| l.starts_with(check))
            .unwrap_or_else(|| panic!("no {check} verdict:\n{}", run.stdout));
        assert!(
            verdict.starts_with(&format!("{check} ok")),
            "{verdict}\n{}",
            run.stdout
        );
    }
}
