//! Tier (b): guests that attack or swamp ember's own threads, on this
//! host's KVM. Whatever the guest does, SIGTERM must end ember within a
//! second and `--timeout` on time:
//!
//! - a virtio-block queue whose available ring overlaps the used ring, so
//!   that the device's notification toggling makes new work appear forever
//!   (tiny guest mode 14);
//! - a UART flood (mode 15) and a virtio-console flood (mode 16) while
//!   nobody reads ember's stdout;
//! - a FLUSH that takes 2 s on one disk (a FUSE file whose fdatasync
//!   sleeps, `resources/tests/slowfs.py`) while the guest reads another
//!   disk and prints a heartbeat (mode 17): neither the heartbeat, nor the
//!   other disk, nor SIGTERM may wait for the flush.
//!
//! Mode 13 (a counting loop, for pause tests) is checked for its output.
//!
//! The tests run one at a time (see [`one_at_a_time`]): they measure
//! timing, and the busy guests of one would take the CPUs of another.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;

/// How long ember may take to stop after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(1);
/// `--timeout` given to ember, and how long after its start ember must
/// have exited with status 124.
const TIMEOUT_ARG: &str = "2";
const TIMEOUT_LIMIT: Duration = Duration::from_millis(2500);
/// How long a guest may take to print its first line.
const FIRST_LINE: Duration = Duration::from_secs(5);

/// Serialises the tests of this file (a poisoned lock is still a lock).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// An ember process that is killed when dropped, so that a failing test
/// does not leave a spinning VMM behind.
struct Ember {
    child: Child,
    started: Instant,
}

impl Ember {
    /// Starts ember with `args`, stdin from /dev/null, stdout and stderr
    /// piped.
    fn start(args: &[&str]) -> Ember {
        let started = Instant::now();
        let child = spawn_null(args);
        Ember { child, started }
    }

    fn stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().unwrap()
    }

    fn sigterm(&self) {
        // SAFETY: sending SIGTERM to our own child process, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits until `deadline` for ember to exit.
    fn exit_by(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills ember if it still runs and returns its stderr.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        stderr
    }
}

impl Drop for Ember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends ember SIGTERM and checks that it exits with 143 within
/// [`STOP_LIMIT`]; returns what went wrong, if anything. ember may still
/// run afterwards: [`with_stderr`] ends it.
fn check_sigterm(ember: &mut Ember, what: &str) -> Option<String> {
    let sent = Instant::now();
    ember.sigterm();
    let status = ember.exit_by(sent + STOP_LIMIT);
    let took = sent.elapsed();
    match status {
        None => Some(format!(
            "{what}: still running {STOP_LIMIT:?} after SIGTERM"
        )),
        Some(s) if s.code() != Some(143) => Some(format!(
            "{what}: exit status {s} after SIGTERM, expected 143"
        )),
        Some(_) => {
            eprintln!("{what}: stopped {took:?} after SIGTERM");
            None
        }
    }
}

/// Checks that ember, started with `--timeout 2`, exits with 124 within
/// [`TIMEOUT_LIMIT`] of its start.
fn check_timeout(ember: &mut Ember, what: &str) -> Option<String> {
    let status = ember.exit_by(ember.started + TIMEOUT_LIMIT);
    let took = ember.started.elapsed();
    match status {
        None => Some(format!(
            "{what}: still running {TIMEOUT_LIMIT:?} after its start with --timeout {TIMEOUT_ARG}"
        )),
        Some(s) if s.code() != Some(124) => Some(format!(
            "{what}: exit status {s} with --timeout {TIMEOUT_ARG}, expected 124"
        )),
        Some(_) => {
            eprintln!("{what}: stopped by --timeout {took:?} after its start");
            None
        }
    }
}

/// Ends ember (killing it if it still runs) and adds its stderr to
/// `problem`.
fn with_stderr(problem: Option<String>, mut ember: Ember) -> Option<String> {
    let running = ember.child_running();
    let stderr = ember.finish();
    problem.map(|p| {
        let killed = if running { " (killed)" } else { "" };
        format!("{p}{killed}; stderr: {stderr:?}")
    })
}

/// Reads `stdout` until `needle` appears, then stops reading and hands
/// the pipe back, still open, so that the guest's further output fills it.
/// Gives up after `limit` (the reader thread then ends when ember does).
fn read_until_then_stop(
    mut stdout: ChildStdout,
    needle: &str,
    limit: Duration,
) -> Result<ChildStdout, String> {
    let (tx, rx) = mpsc::channel();
    let wanted = needle.to_string();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
                    return;
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains(&wanted) {
                let _ = tx.send(Ok(stdout));
                return;
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(stdout)) => Ok(stdout),
        Ok(Err(seen)) => Err(format!("stdout ended before {needle:?}: {seen:?}")),
        Err(_) => Err(format!("no {needle:?} on stdout within {limit:?}")),
    }
}

/// What the guest does once it printed its ready line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Nothing on stdout: wait this long, then stop it.
    Quiet(Duration),
    /// It floods stdout: stop it once the (shrunk) pipe is full and
    /// 300 ms have passed.
    Floods,
}

/// ember's stdout pipe capacity in the tests: one page (the least Linux
/// allows), so a flooding guest fills it at once.
const PIPE_SIZE: libc::c_int = 4096;

/// Shrinks the pipe behind `stdout` to [`PIPE_SIZE`].
fn shrink_pipe(stdout: &ChildStdout) {
    // SAFETY: F_SETPIPE_SZ on a pipe fd we own; no memory is passed.
    let rc = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    assert!(
        rc >= PIPE_SIZE,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
}

/// Bytes waiting in the pipe behind `stdout`.
fn pipe_fill(stdout: &ChildStdout) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `n`, which outlives the call.
    let rc = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        -1
    } else {
        n
    }
}

/// Waits up to 2 s for the pipe behind `stdout` to be full: holding at
/// least half of [`PIPE_SIZE`] and not growing for 200 ms (a page the test
/// has partly read cannot take a whole page again).
fn wait_pipe_full(stdout: &ChildStdout) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut last, mut since) = (-1, Instant::now());
    loop {
        let fill = pipe_fill(stdout);
        if fill != last {
            (last, since) = (fill, Instant::now());
        } else if fill >= PIPE_SIZE / 2 && since.elapsed() >= Duration::from_millis(200) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the guest `args` (ember's arguments up to the optional `-- CMD`)
/// twice: once stopped by SIGTERM once `ready` is on stdout (and `after`
/// it), once by `--timeout`. Stdout is read only up to `ready`, then left
/// unread and open. Returns what went wrong.
fn sigterm_and_timeout(
    what: &str,
    args: &[&str],
    command: &[&str],
    ready: &str,
    after: After,
) -> Vec<String> {
    let mut problems = Vec::new();
    for timeout in [false, true] {
        let mut argv = args.to_vec();
        if timeout {
            argv.extend(["--timeout", TIMEOUT_ARG]);
        }
        argv.extend(command);
        let case = format!("{what}{}", if timeout { ", --timeout" } else { "" });
        let mut ember = Ember::start(&argv);
        let stdout = ember.stdout();
        shrink_pipe(&stdout);
        let stdout = match read_until_then_stop(stdout, ready, FIRST_LINE) {
            Ok(stdout) => stdout,
            Err(e) => {
                let stderr = ember.finish();
                problems.push(format!("{case}: the guest is wrong: {e}; stderr: {stderr}"));
                continue;
            }
        };
        if after == After::Floods && !wait_pipe_full(&stdout) {
            let stderr = ember.finish();
            problems.push(format!(
                "{case}: the guest is wrong: stdout never filled (holds {} bytes); stderr: {stderr}",
                pipe_fill(&stdout)
            ));
            continue;
        }
        let problem = if timeout {
            check_timeout(&mut ember, &case)
        } else {
            std::thread::sleep(match after {
                After::Quiet(d) => d,
                After::Floods => Duration::from_millis(300),
            });
            check_sigterm(&mut ember, &case)
        };
        problems.extend(with_stderr(problem, ember));
        drop(stdout);
    }
    problems
}

fn assert_no_problems(problems: &[String]) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Mode 14: the available ring 2 bytes below the used ring, so the
/// available index is the used ring's flags. virtio-queue's
/// disable/enable-notification loop then writes 1 and 0 there and always
/// finds "new" work: the device spins on the event-loop thread. Also in
/// command mode (`-- true`; the tiny guest ignores the command), whose
/// statuses for a signal and `--timeout` are the same.
#[test]
fn overlapping_virtio_rings_do_not_stop_sigterm_or_timeout() {
    if !kvm_available() {
        return;
    }
    let _serial = one_at_a_time();
    let elf = tiny_guest(14, false);
    let disk = temp_disk("hostile-ring", 1 << 20);
    let args = [
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
    ];
    let ready = "ember-tiny: hostile queue posted\n";
    let after = After::Quiet(Duration::from_millis(100));
    let mut problems = sigterm_and_timeout("overlapping rings", &args, &[], ready, after);
    problems.extend(sigterm_and_timeout(
        "overlapping rings, command mode",
        &args,
        &["--", "true"],
        ready,
        after,
    ));
    assert_no_problems(&problems);
}

/// Mode 15: the guest writes to COM1 forever and ember's stdout is a pipe
/// nobody reads (it stays open).
#[test]
fn serial_flood_into_an_unread_pipe_does_not_stop_sigterm_or_timeout() {
    if !kvm_available() {
        return;
    }
    let _serial = one_at_a_time();
    let elf = tiny_guest(15, false);
    let args = ["run", "--kernel", elf.to_str().unwrap()];
    let ready = "ember-tiny: flooding\n";
    let mut problems = sigterm_and_timeout("serial flood", &args, &[], ready, After::Floods);
    problems.extend(sigterm_and_timeout(
        "serial flood, command mode",
        &args,
        &["--", "true"],
        ready,
        After::Floods,
    ));
    assert_no_problems(&problems);
}

/// Mode 16: the guest keeps posting a 4 KiB buffer on the virtio
/// console's transmitq and ember's stdout is a pipe nobody reads.
#[test]
fn virtio_console_flood_into_an_unread_pipe_does_not_stop_sigterm_or_timeout() {
    if !kvm_available() {
        return;
    }
    let _serial = one_at_a_time();
    let elf = tiny_guest(16, false);
    let args = [
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--console",
        "virtio",
    ];
    let ready = "ember-tiny: console flooding\n";
    let mut problems =
        sigterm_and_timeout("virtio console flood", &args, &[], ready, After::Floods);
    problems.extend(sigterm_and_timeout(
        "virtio console flood, command mode",
        &args,
        &["--", "true"],
        ready,
        After::Floods,
    ));
    assert_no_problems(&problems);
}

/// The host's TSC rate in Hz, measured over 100 ms. A KVM guest's TSC
/// runs at the host's rate unless the VMM sets another (ember does not),
/// so this calibrates the guest's busy-wait ticks.
fn host_tsc_hz() -> u64 {
    fn tsc() -> u64 {
        // SAFETY: rdtsc has no preconditions on x86_64 (ember's only
        // target) and only reads the time-stamp counter.
        unsafe { std::arch::x86_64::_rdtsc() }
    }
    let (t0, c0) = (Instant::now(), tsc());
    std::thread::sleep(Duration::from_millis(100));
    let (t1, c1) = (Instant::now(), tsc());
    (c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64()) as u64
}

/// A FUSE mount (`resources/tests/slowfs.sh`) with one disk image whose
/// fsync and fdatasync take `delay`; unmounted when dropped, whatever
/// happened.
struct SlowFs {
    dir: PathBuf,
    mountpoint: PathBuf,
    server: Child,
}

impl SlowFs {
    /// How long the server may take to mount, including a first
    /// `apt-get install python3-fusepy`.
    const READY: Duration = Duration::from_secs(120);

    fn mount(name: &str, size: u64, delay: Duration) -> SlowFs {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("slowfs-{}-{name}", std::process::id()));
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).unwrap();
        let backing = dir.join("backing.img");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/tests/slowfs.sh");
        let mut server = Command::new(&script)
            .arg(&backing)
            .arg(&mountpoint)
            .arg(delay.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        let stdout = server.stdout.take().unwrap();
        let mut fs = SlowFs {
            dir,
            mountpoint,
            server,
        };
        if let Err(e) = read_until_then_stop(stdout, "slowfs: ready", Self::READY) {
            let _ = fs.server.kill();
            let _ = fs.server.wait();
            let mut stderr = String::new();
            if let Some(mut s) = fs.server.stderr.take() {
                let _ = s.read_to_string(&mut stderr);
            }
            panic!(
                "the slow FUSE disk did not come up ({e}); it needs Debian's python3-fusepy \
                 (libfuse2) and /dev/fuse; slowfs.sh said: {stderr}"
            );
        }
        fs
    }

    fn disk(&self) -> PathBuf {
        self.mountpoint.join("disk.img")
    }

    fn mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mnt = self.mountpoint.to_string_lossy();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(mnt.as_ref()))
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        // SIGTERM makes libfuse unmount and exit, unless a worker is still
        // sleeping in fsync: then kill it and unmount by hand.
        // SAFETY: signalling our own child process, not yet reaped.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        for (tool, args) in [("umount", ["-l"]), ("fusermount", ["-uz"])] {
            if self.mounted() {
                let _ = Command::new(tool)
                    .args(args)
                    .arg(&self.mountpoint)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if self.mounted() {
            eprintln!("could not unmount {}", self.mountpoint.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads `stdout` line by line on a thread, stamping each line with the
/// moment it arrived.
fn stamped_lines(stdout: ChildStdout) -> Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { return };
            let line = String::from_utf8_lossy(&line).into_owned();
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Mode 17: vda's FLUSH takes 700 ms and one is always outstanding; the
/// guest reads vdb in a loop and prints a tick every 100 ms of TSC time.
/// For 3 s the ticks must come without a gap over 300 ms, vdb reads must
/// keep completing (with disk I/O on one thread, vdb waits behind every
/// flush: about 4 reads in 3 s), and then SIGTERM must end ember within
/// 1 s. Why not a longer flush: once the FUSE server has taken the
/// fdatasync, the kernel holds even a killed process until it answers, so
/// the flush time bounds the exit whatever ember does (ember leaves the
/// disk thread behind after `STOP_DEADLINE`, 400 ms).
#[test]
fn a_slow_flush_stalls_neither_the_vcpu_nor_other_disks_nor_sigterm() {
    if !kvm_available() {
        return;
    }
    let _serial = one_at_a_time();
    const WINDOW: Duration = Duration::from_secs(3);
    const MAX_GAP: Duration = Duration::from_millis(300);
    const MIN_READS: usize = 10;
    let fs = SlowFs::mount("vda", 1 << 20, Duration::from_millis(700));
    let vdb = temp_disk("heartbeat-vdb", 1 << 20);
    let tick_cycles = host_tsc_hz() / 10;
    let elf = tiny_guest_linked(
        17,
        &[&format!("TICK_CYCLES={tick_cycles}")],
        &["-N", "-Ttext=0x100000"],
    );
    let vda = fs.disk();
    let mut ember = Ember::start(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--disk",
        vda.to_str().unwrap(),
        "--disk",
        vdb.to_str().unwrap(),
    ]);
    let lines = stamped_lines(ember.stdout());
    // The window opens at the first tick.
    let start = loop {
        match lines.recv_timeout(FIRST_LINE) {
            Ok((at, line)) if line.starts_with("ember-tiny: tick ") => break at,
            Ok((_, line)) if line.contains("status") || line.contains("virtio") => {
                panic!("the guest is wrong: {line}; stderr: {}", ember.finish())
            }
            Ok(_) => {}
            Err(e) => panic!(
                "no tick within {FIRST_LINE:?} ({e:?}); stderr: {}",
                ember.finish()
            ),
        }
    };
    let end = start + WINDOW;
    let mut ticks = vec![start];
    let mut reads = 0;
    let mut problems = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match lines.recv_timeout(end - now) {
            Ok((at, line)) if line.starts_with("ember-tiny: tick ") => ticks.push(at),
            Ok((_, line)) if line.starts_with("ember-tiny: vdb read ") => reads += 1,
            Ok((_, line)) => problems.push(format!("unexpected line from the guest: {line}")),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                problems.push("ember's stdout closed".to_string());
                break;
            }
        }
    }
    ticks.push(end);
    let gap = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "heartbeat: {} ticks, longest gap {gap:?}, {reads} vdb reads in {WINDOW:?}",
        ticks.len() - 2
    );
    if gap > MAX_GAP {
        problems.push(format!(
            "the vCPU stalled: {gap:?} between ticks (at most {MAX_GAP:?})"
        ));
    }
    if reads < MIN_READS {
        problems.push(format!(
            "vdb stalled behind vda's flush: {reads} reads completed in {WINDOW:?} \
             (at least {MIN_READS})"
        ));
    }
    let problem = check_sigterm(&mut ember, "slow flush");
    // Unmount first: a killed ember waits for the flush it is in, unless
    // the FUSE server is gone.
    drop(fs);
    problems.extend(with_stderr(problem, ember));
    assert_no_problems(&problems);
}

/// Mode 13 counts to COUNT (400000) in rbx, within [count_loop,
/// count_done), then prints the count and resets.
#[test]
fn counting_guest_prints_its_count() {
    if !kvm_available() {
        return;
    }
    let _serial = one_at_a_time();
    let elf = tiny_guest(13, false);
    let (count_loop, count_done) = (
        guest_symbol(&elf, "count_loop"),
        guest_symbol(&elf, "count_done"),
    );
    assert!(count_loop < count_done, "{count_loop:#x} {count_done:#x}");
    let start = Instant::now();
    let out = ember_null(&["run", "--kernel", elf.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    eprintln!(
        "counted in {:?} (loop at {count_loop:#x}..{count_done:#x})",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ember-tiny: counting\nember-tiny: counted 400000\n"),
        "{stdout}"
    );
}
