//! ember's ACPI tables, dumped to files, through the ACPICA disassembler
//! (`iasl -d`, Debian package `acpica-tools`): every table with a standard
//! header (XSDT, FADT, MADT, DSDT) must disassemble without errors or
//! warnings, and the DSDT's disassembly must compile back (`iasl`) without
//! errors. (iasl does not take a bare RSDP; the unit tests in
//! `src/acpi/tests.rs` check its checksums and pointer.)
//!
//! `resources/acpi/iasl.sh` finds iasl, installing acpica-tools when it is
//! missing and we are root (as in CI). Without iasl this test fails unless
//! `EMBER_SKIP_IASL=1` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ember::acpi::{self, Platform};
use ember::plan::{DeviceKind, DeviceSlot, Topology};

/// iasl's path, or `None` when skipping was asked for.
fn iasl() -> Option<PathBuf> {
    if std::env::var("EMBER_SKIP_IASL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: EMBER_SKIP_IASL=1");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/acpi/iasl.sh");
    let out = Command::new(&script)
        .output()
        .expect("run resources/acpi/iasl.sh");
    assert!(
        out.status.success(),
        "iasl (acpica-tools) is missing and could not be installed; \
         install acpica-tools or set EMBER_SKIP_IASL=1 to skip:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(PathBuf::from(path))
}

fn run(iasl: &Path, dir: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(iasl)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run iasl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Asserts iasl succeeded and reported no errors or warnings.
fn assert_clean(out: &Output, text: &str, what: &str) {
    assert!(out.status.success(), "iasl {what} failed:\n{text}");
    for bad in ["Error", "Warning", "Invalid", "Incorrect", "checksum"] {
        assert!(!text.contains(bad), "iasl {what} reported {bad:?}:\n{text}");
    }
}

#[test]
fn iasl_disassembles_every_table() {
    let Some(iasl) = iasl() else {
        return;
    };
    for (cpus, disks) in [(1u8, 0usize), (2, 1), (16, 8)] {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("acpi-iasl-{cpus}-{disks}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let slots: Vec<DeviceSlot> = (0..disks)
            .map(|i| DeviceSlot::new(i, DeviceKind::Block { disk: i }))
            .collect();
        let tables = acpi::build(&Platform {
            topology: Topology::new(cpus),
            virtio: &slots,
        })
        .unwrap();
        for table in tables.all().into_iter().skip(1) {
            let stem = table.name.trim().replace(' ', "_").to_lowercase();
            std::fs::write(dir.join(format!("{stem}.dat")), &table.bytes).unwrap();
            let (out, text) = run(&iasl, &dir, &["-d", &format!("{stem}.dat")]);
            assert_clean(&out, &text, &format!("-d {stem}.dat"));
            let dsl = std::fs::read_to_string(dir.join(format!("{stem}.dsl"))).unwrap();
            assert!(dsl.contains("Disassembly of"), "{dsl}");
        }

        let dsdt = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
        assert_eq!(dsdt.matches("\"LNRO0005\"").count(), disks, "{dsdt}");
        for needle in [
            "EisaId (\"PNP0501\")",
            "EisaId (\"PNP0303\")",
            "Name (_S5, Package",
            "IO (Decode16,",
            "0x03F8,",
        ] {
            assert!(dsdt.contains(needle), "no {needle:?} in:\n{dsdt}");
        }
        for slot in &slots {
            let window = format!("0x{:08X},", slot.addr);
            assert!(dsdt.contains(&window), "no window {window} in:\n{dsdt}");
        }
        // The disassembly is valid ASL: it compiles back.
        let (out, text) = run(&iasl, &dir, &["-p", "recompiled", "dsdt.dsl"]);
        assert!(out.status.success(), "iasl dsdt.dsl failed:\n{text}");
        assert!(text.contains("0 Errors"), "{text}");

        let madt = std::fs::read_to_string(dir.join("apic.dsl")).unwrap();
        assert_eq!(
            madt.matches("Subtable Type : 00 [Processor Local APIC]")
                .count(),
            usize::from(cpus),
            "{madt}"
        );
        assert!(madt.contains("[I/O APIC]"), "{madt}");
        let fadt = std::fs::read_to_string(dir.join("facp.dsl")).unwrap();
        assert!(fadt.contains("Hardware Reduced (V5) : 1"), "{fadt}");
    }
}
