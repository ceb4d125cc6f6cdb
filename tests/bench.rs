//! Tier (b): the boot timeline (`--boot-timer`) and `ember bench` on the
//! boot-timer tiny guest (`resources/tiny-guest/boot-timer.S`), on this
//! host's KVM.

mod common;

use std::process::Command;

use common::*;

const PHASES: [&str; 11] = [
    "args_parsed",
    "memory_mapped",
    "kernel_loaded",
    "vm_created",
    "devices_created",
    "vcpus_started",
    "first_vcpu_entry",
    "first_serial_output",
    "init_reached",
    "guest_stop",
    "process_exit",
];

/// The number after `"key":` in `json`.
fn number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let rest = &json[json.find(&pat).unwrap_or_else(|| panic!("{key} in {json}")) + pat.len()..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key}: {:?} in {json}", &rest[..end]))
}

#[test]
fn boot_timer_json_has_every_phase_in_order() {
    if !kvm_available() {
        return;
    }
    let elf = boot_timer_guest();
    let out = ember_null(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--boot-timer=json",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("ember-tiny: boot timer\n"), "{stdout}");
    let json = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    assert!(json.contains("\"stop\":\"guest powered off\""), "{json}");
    let times: Vec<f64> = PHASES.iter().map(|p| number(json, p)).collect();
    assert!(times[0] > 0.0, "{json}");
    for (w, p) in times.windows(2).zip(PHASES.iter().skip(1)) {
        assert!(w[0] <= w[1], "{p} before the previous phase: {json}");
    }
    // The guest touched a few pages (kernel, boot structures), not 128 MiB.
    let resident = number(json, "guest_resident_kib");
    assert!((4.0..4096.0).contains(&resident), "{json}");
    assert!(number(json, "peak_rss_kib") > resident, "{json}");
    assert_eq!(number(json, "guest_memory_kib"), 131072.0);

    // The text form names every phase too.
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap(), "--boot-timer"]);
    let (_, stderr) = text(&out);
    for p in PHASES {
        assert!(stderr.contains(p), "{stderr}");
    }
    assert!(stderr.contains("stop: guest powered off"), "{stderr}");
}

/// Runs `ember bench -n 3 ARGS...` to completion.
fn bench(args: &[&str]) -> std::process::Output {
    wait(
        Command::new(EMBER)
            .args(["bench", "-n", "3"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn bench_prints_table_and_json_with_real_numbers() {
    if !kvm_available() {
        return;
    }
    let elf = boot_timer_guest();
    let out = bench(&["--warmups", "1", "--kernel", elf.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("ember bench: run 3/3"), "{stderr}");
    assert!(
        stdout.starts_with("ember bench: 3 runs after 1 warm-ups"),
        "{stdout}"
    );
    assert!(stdout.contains("ms from spawn"), "{stdout}");
    for row in ["main", "init_reached", "reaped", "peak_rss", "overhead"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap_or_else(|| panic!("no {row} row: {stdout}"));
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or_else(|_| panic!("{line}")))
            .collect();
        assert_eq!(v.len(), 4, "{line}");
        assert!(
            v[0] > 0.0 && v[0] <= v[1] && v[1] <= v[2] && v[2] <= v[3],
            "{line}"
        );
    }

    let out = bench(&[
        "--warmups",
        "0",
        "--json",
        "--kernel",
        elf.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json = stdout.trim();
    assert!(
        json.starts_with("{\"ember_bench\":1,") && json.ends_with('}'),
        "{json}"
    );
    assert_eq!(number(json, "runs"), 3.0);
    let init = &json[json.find("\"init_reached\":").unwrap()..];
    assert!(init.starts_with("\"init_reached\":{\"n\":3,"), "{json}");
    let median = number(init, "median");
    assert!(median > 0.0 && median < 1000.0, "{json}");
    let overhead = &json[json.find("\"overhead\":").unwrap()..];
    assert!(number(overhead, "median") > 0.5, "{json}");
}

#[test]
fn bench_reports_a_failing_run() {
    let out = ember_null(&["bench", "-n", "1", "--kernel", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("/nonexistent"), "{}", text(&out).1);
}
