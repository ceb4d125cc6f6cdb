//! ember boots the default Linux guest (issue 3), in the lab on PVM hosts
//! and directly on VMX/SVM hosts: each entry protocol, 1/2/4 vCPUs, 128 MiB
//! and 4 GiB (across the 32-bit MMIO gap), the command line reaching
//! `/proc/cmdline`, a clean exit on reboot, and the guest's shell driven
//! through ember's stdin.

mod common;

use common::lab::{case, ember_files, fact, facts, lab_tests_skipped, run_in_lab_with};

#[test]
fn ember_boots_the_default_guest() {
    if lab_tests_skipped("ember_boots_the_default_guest") {
        return;
    }
    // The 4 GiB guest needs the lab to have at least 2 GiB more.
    let run = run_in_lab_with("ember_boot.sh", &ember_files(), 600, "7G");
    assert_eq!(
        run.status, 0,
        "lab script failed:\n{}\n{}",
        run.stdout, run.stderr
    );

    for (entry, format, protocol) in [
        ("pvh", "Elf", "Pvh"),
        ("linux64", "Elf", "Linux64"),
        ("bzimage", "BzImage", "Linux64"),
    ] {
        let c = case(&run.stdout, entry);
        let loaded = c
            .output
            .lines()
            .find(|l| l.contains("kernel ") && l.contains(" loaded, entry "))
            .unwrap_or_else(|| panic!("{entry}: no kernel-loaded debug line\n{}", c.output));
        assert!(
            loaded.contains(format) && loaded.contains(&format!("({protocol})")),
            "{entry}: want a {format} kernel entered by {protocol}: {loaded}"
        );
        let f = facts(entry, &c.output);
        assert!(
            fact(&f, "cmdline").contains(&format!("case={entry}")),
            "{entry}: the command line given did not reach /proc/cmdline: {f:?}"
        );
        assert_eq!(
            fact(&f, "root"),
            "none",
            "{entry}: booted from the initramfs"
        );
        assert_eq!(
            c.status, 0,
            "{entry}: ember's exit status after the guest's reboot\n{}",
            c.output
        );
    }
    for n in ["1", "2", "4"] {
        let name = format!("cpus-{n}");
        let c = case(&run.stdout, &name);
        let f = facts(&name, &c.output);
        assert_eq!(fact(&f, "cpus"), n, "{name}: CPUs online\n{}", c.output);
        assert_eq!(c.status, 0, "{name}: exit status\n{}", c.output);
    }
    // No PIT by default: the guest runs its local APIC timer in TSC-deadline
    // mode (CPUID), so it neither calibrates nor needs the PIT.
    let c = case(&run.stdout, "pvh");
    assert!(
        c.output.contains("TSC deadline timer available")
            && !c.output.contains("APIC timer disabled"),
        "pvh: the guest should use the TSC-deadline timer\n{}",
        c.output
    );
    let c = case(&run.stdout, "pit");
    assert_eq!(c.status, 0, "pit: exit status\n{}", c.output);
    assert_eq!(
        fact(&facts("pit", &c.output), "cpus"),
        "2",
        "pit\n{}",
        c.output
    );
    let mem_kib = |name: &str| -> u64 {
        let c = case(&run.stdout, name);
        assert_eq!(c.status, 0, "{name}: exit status\n{}", c.output);
        fact(&facts(name, &c.output), "mem_kib")
            .parse()
            .expect("mem_kib is a number")
    };
    // MemTotal is RAM less what the kernel keeps for itself.
    let small = mem_kib("mem-128M");
    assert!(
        (100 << 10..=128 << 10).contains(&small),
        "128M guest saw {small} KiB"
    );
    let big = mem_kib("mem-4G");
    assert!(
        (3900 << 10..=4096 << 10).contains(&big),
        "4G guest saw {big} KiB: RAM above the MMIO gap is missing"
    );

    // No --cmdline: the default one gives the serial console and the shell.
    let c = case(&run.stdout, "stdin");
    let f = facts("stdin", &c.output);
    assert!(
        fact(&f, "cmdline").contains("console=ttyS0"),
        "default command line: {f:?}"
    );
    assert!(
        c.output.contains("sum=42"),
        "a command typed on ember's stdin did not run in the guest:\n{}",
        c.output
    );
    assert_eq!(
        c.status, 0,
        "stdin: exit status after the typed reboot\n{}",
        c.output
    );
}
