//! Shared helpers for the tests that boot real Linux guests: build the
//! default guest (`resources/guest/build.sh`, cached) and run a script in
//! the nested KVM lab (`resources/lab/run.sh`).
//!
//! Lab tests cannot run without QEMU and the Debian archive; they fail
//! loudly when something is missing. `EMBER_SKIP_LAB_TESTS=1` is the one
//! explicit opt-out (CI never sets it): each such test then says it was
//! skipped and asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// True when the caller opted out of lab tests with `EMBER_SKIP_LAB_TESTS=1`.
pub fn lab_tests_skipped(test: &str) -> bool {
    let skip = std::env::var("EMBER_SKIP_LAB_TESTS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: SKIPPED (EMBER_SKIP_LAB_TESTS=1)");
    }
    skip
}

/// The directory of the default guest's artifacts, built once per process.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_guest(&[]))
}

/// The default guest with the hvc kernel variant (no 8250 UART, console on
/// virtio-console's hvc0: `resources/guest/build.sh --hvc`), built once
/// per process; the first build takes minutes, later ones hit the cache.
pub fn hvc_guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_guest(&["--hvc"]))
}

fn build_guest(args: &[&str]) -> PathBuf {
    let out = Command::new(repo().join("resources/guest/build.sh"))
        .args(args)
        .output()
        .expect("cannot run resources/guest/build.sh");
    assert!(
        out.status.success(),
        "resources/guest/build.sh {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    for f in ["vmlinux", "bzImage", "initramfs.cpio.gz", "rootfs.ext4"] {
        assert!(
            dir.join(f).is_file(),
            "the guest build left no {f} in {dir:?}"
        );
    }
    dir
}

/// What a lab run gave back.
#[derive(Debug)]
pub struct LabRun {
    /// The script's exit status (124: it passed its deadline; 125: the lab
    /// itself failed twice).
    pub status: i32,
    /// The script's output from the last lab attempt, `\r` removed.
    pub stdout: String,
    /// The lab's own messages (mode, failures).
    pub stderr: String,
}

/// Runs `script` (a file under `tests/lab/`) in the lab with `files` (paths,
/// or `SRC=/ABS/DEST`) and `tests/lab/lib.sh`, with a deadline of
/// `timeout_s` seconds.
pub fn run_in_lab(script: &str, files: &[String], timeout_s: u32) -> LabRun {
    run_in_lab_with(script, files, timeout_s, "3G")
}

/// [`run_in_lab`] with the lab VM's memory size (`3G`, `7G`, ...).
pub fn run_in_lab_with(script: &str, files: &[String], timeout_s: u32, memory: &str) -> LabRun {
    let mut cmd = Command::new(repo().join("resources/lab/run.sh"));
    cmd.arg("--timeout").arg(timeout_s.to_string());
    cmd.arg("--memory").arg(memory);
    cmd.arg("--file").arg(repo().join("tests/lab/lib.sh"));
    for f in files {
        cmd.arg("--file").arg(f);
    }
    cmd.arg(repo().join("tests/lab").join(script));
    let out = cmd.output().expect("cannot run resources/lab/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    // A lab failure is retried once; only the last attempt counts.
    let stdout = match stdout.rfind("==== lab: retrying in a fresh lab") {
        Some(at) => stdout[at..].to_string(),
        None => stdout,
    };
    let run = LabRun {
        status: out.status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_ne!(
        run.status, 125,
        "the lab itself failed (not the code under test):\n{}",
        run.stderr
    );
    run
}

/// The files QEMU needs in the lab: its binary (libraries follow) and the
/// microvm firmware, at their host paths.
pub fn qemu_files() -> Vec<String> {
    let qemu = which("qemu-system-x86_64");
    let mut files = vec![format!("{}={}", qemu.display(), qemu.display())];
    for fw in ["qboot.rom", "bios-microvm.bin"] {
        let path = Path::new("/usr/share/qemu").join(fw);
        assert!(path.exists(), "QEMU firmware {path:?} is missing");
        files.push(format!("{}={}", path.display(), path.display()));
    }
    files
}

/// The default guest's artifacts as lab files.
pub fn guest_files() -> Vec<String> {
    ["vmlinux", "bzImage", "initramfs.cpio.gz", "rootfs.ext4"]
        .iter()
        .map(|f| guest_dir().join(f).display().to_string())
        .collect()
}

/// The `ember` binary under test and the default guest, as lab files.
pub fn ember_files() -> Vec<String> {
    let mut files = vec![env!("CARGO_BIN_EXE_ember").to_string()];
    files.extend(guest_files());
    files
}

/// The full path of a program on PATH.
pub fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// One guest boot's section of a lab script's output, between
/// `=== CASE NAME` and `=== END NAME status=N`.
#[derive(Debug)]
pub struct Case {
    /// The guest's console output.
    pub output: String,
    /// The VMM's exit status.
    pub status: i32,
}

/// Finds the case called `name` in a lab script's output.
pub fn case(stdout: &str, name: &str) -> Case {
    let start_tag = format!("=== CASE {name}\n");
    let start = stdout
        .find(&start_tag)
        .unwrap_or_else(|| panic!("case {name} never started; output:\n{stdout}"))
        + start_tag.len();
    let end_tag = format!("=== END {name} status=");
    let end = stdout[start..]
        .find(&end_tag)
        .unwrap_or_else(|| panic!("case {name} never ended; output:\n{stdout}"))
        + start;
    let status = stdout[end + end_tag.len()..]
        .lines()
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("case {name}: unreadable status"));
    Case {
        output: stdout[start..end].to_string(),
        status,
    }
}

/// The guest's facts line (`EMBER-FACTS key=value ...`) as (key, value)
/// pairs, asserting the init marker came first.
pub fn facts(case_name: &str, output: &str) -> Vec<(String, String)> {
    let marker = output
        .find("EMBER-GUEST-INIT-REACHED")
        .unwrap_or_else(|| panic!("{case_name}: the guest never reached init; console:\n{output}"));
    let line = output[marker..]
        .lines()
        .find(|l| l.starts_with("EMBER-FACTS "))
        .unwrap_or_else(|| panic!("{case_name}: no facts line; console:\n{output}"));
    let mut pairs = Vec::new();
    let rest = &line["EMBER-FACTS ".len()..];
    let (head, cmdline) = rest.split_once(" cmdline=").unwrap_or((rest, ""));
    for kv in head.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    pairs.push(("cmdline".into(), cmdline.trim_matches('"').to_string()));
    pairs
}

/// The value of `key` in a facts line.
pub fn fact<'a>(facts: &'a [(String, String)], key: &str) -> &'a str {
    facts
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in the facts {facts:?}"))
}
