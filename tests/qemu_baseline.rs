//! The reference VMM boots the default guest in the lab: QEMU `-M microvm`
//! with KVM, from the initramfs and from `rootfs.ext4` on virtio-blk, with 1
//! and 2 vCPUs. This proves the guest and the lab before ember is measured
//! against them.

mod common;

use common::lab::{case, fact, facts, guest_files, lab_tests_skipped, qemu_files, run_in_lab};

#[test]
fn qemu_microvm_boots_the_default_guest_in_the_lab() {
    if lab_tests_skipped("qemu_microvm_boots_the_default_guest_in_the_lab") {
        return;
    }
    let mut files = guest_files();
    files.extend(qemu_files());
    let run = run_in_lab("qemu_baseline.sh", &files, 400);
    assert_eq!(
        run.status, 0,
        "lab script failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    for cpus in ["1", "2"] {
        for (root, want_dev, want_fs) in [("initramfs", "none", "rootfs"), ("ext4", "vda", "ext4")]
        {
            let name = format!("{root}-{cpus}");
            let c = case(&run.stdout, &name);
            let f = facts(&name, &c.output);
            assert_eq!(fact(&f, "cpus"), cpus, "{name}: CPUs online");
            assert_eq!(fact(&f, "root"), want_dev, "{name}: root device");
            assert_eq!(fact(&f, "rootfs"), want_fs, "{name}: root filesystem");
            assert!(
                fact(&f, "cmdline").contains("ember.mode=exit"),
                "{name}: the command line did not reach the guest"
            );
            assert_eq!(
                c.status, 0,
                "{name}: QEMU's exit status; console:\n{}",
                c.output
            );
        }
    }
}
