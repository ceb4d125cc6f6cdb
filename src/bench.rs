//! `ember bench`: boots the same VM N times, each in a child process
//! (`ember run ... --boot-timer=json`, the binary itself), and reports the
//! min, median, p90 and max of every boot phase, the peak RSS and the
//! VMM's memory overhead.
//!
//! Times are milliseconds from the moment just before the parent spawns
//! the child (`CLOCK_MONOTONIC`, the clock of [`crate::timeline`]), so they
//! include `fork`/`execve`, the dynamic loader and Rust's start-up
//! (`main`, the first row). `reaped` is when the parent's `wait` returned.
//!
//! Memory: `peak_rss` is the child's `VmHWM`, which the child reads from
//! `/proc/self/status` after the VM is torn down (`wait4`'s `ru_maxrss`
//! would count the parent's image too: the child's hiwater mark starts
//! from its parent's at `fork`). `guest_touched` is the guest RAM
//! resident at the stop, which the child sums from the `Rss` of its guest
//! mappings in `/proc/self/smaps` (never prefaulted, so resident means
//! touched by the guest or the loader; `crate::memory::resident_kib`).
//! `overhead` = `peak_rss` − `guest_touched`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::timeline::{monotonic_ns, Phase};

/// Longest one run may take before it is killed.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Benchmark errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `-n 0`.
    #[error("the number of runs must be at least 1")]
    NoRuns,
    /// The child could not be started.
    #[error("cannot start {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// The child did not finish in time.
    #[error("run {run} did not finish within {RUN_DEADLINE:?} and was killed")]
    Deadline {
        /// Run number (1-based, warm-ups included).
        run: usize,
    },
    /// The child failed.
    #[error("run {run} failed ({status}): {last_line}")]
    RunFailed {
        /// Run number (1-based, warm-ups included).
        run: usize,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Its last line on stderr.
        last_line: String,
    },
    /// The child printed no boot-timer report.
    #[error("run {run} printed no boot-timer report")]
    NoReport {
        /// Run number.
        run: usize,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The ember binary.
    pub exe: PathBuf,
    /// Arguments of `ember run` (without `--boot-timer`).
    pub args: Vec<OsString>,
    /// Measured runs.
    pub runs: usize,
    /// Unmeasured runs before them.
    pub warmups: usize,
    /// Guest memory in KiB (for the report).
    pub guest_memory_kib: u64,
}

impl Plan {
    /// The child's command line, for the report.
    pub fn command_line(&self) -> String {
        let mut words = vec![self.exe.display().to_string()];
        words.extend(self.args.iter().map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.into_owned()
            }
        }));
        words.push("--boot-timer=json".into());
        words.join(" ")
    }
}

/// One measured run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// `(row name, ms from spawn)` for every row that happened.
    pub times_ms: Vec<(&'static str, f64)>,
    /// Child's peak RSS in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Guest RAM resident at the stop in KiB.
    pub guest_resident_kib: Option<u64>,
}

/// Min, median, p90 (nearest rank) and max of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of values.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// 90th percentile, nearest rank.
    pub p90: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values`, `None` if empty.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let rank = (0.9 * n as f64).ceil() as usize;
        Some(Stats {
            n,
            min: v[0],
            median,
            p90: v[rank.clamp(1, n) - 1],
            max: v[n - 1],
        })
    }

    fn to_json(self) -> String {
        format!(
            "{{\"n\":{},\"min\":{:.3},\"median\":{:.3},\"p90\":{:.3},\"max\":{:.3}}}",
            self.n, self.min, self.median, self.p90, self.max
        )
    }
}

/// Rows of the time table, in order: `main`, the phases, `reaped`.
pub fn row_names() -> Vec<&'static str> {
    let mut rows = vec!["main"];
    rows.extend(Phase::ALL.iter().map(|p| p.name()));
    rows.push("reaped");
    rows
}

/// The value of `"key":` in a flat JSON object written by
/// [`crate::timeline::Timeline::to_json`]: `Some(None)` for `null`.
fn json_u64(text: &str, key: &str) -> Option<Option<u64>> {
    let pat = format!("\"{key}\":");
    let rest = &text[text.find(&pat)? + pat.len()..];
    if rest.starts_with("null") {
        return Some(None);
    }
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok().map(Some)
}

/// Builds a sample from a child's boot-timer JSON line, spawned at
/// `spawn_ns` and reaped at `reaped_ns` (absolute `CLOCK_MONOTONIC`).
pub fn parse_sample(json: &str, spawn_ns: u64, reaped_ns: u64) -> Option<Sample> {
    let origin = json_u64(json, "origin_ns")??;
    let base = origin.saturating_sub(spawn_ns);
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut times_ms = vec![("main", ms(base))];
    for p in Phase::ALL {
        if let Some(t) = json_u64(json, p.name()).flatten() {
            times_ms.push((p.name(), ms(base + t)));
        }
    }
    times_ms.push(("reaped", ms(reaped_ns.saturating_sub(spawn_ns))));
    Some(Sample {
        times_ms,
        peak_rss_kib: json_u64(json, "peak_rss_kib").flatten(),
        guest_resident_kib: json_u64(json, "guest_resident_kib").flatten(),
    })
}

fn run_once(plan: &Plan, run: usize) -> Result<Sample, Error> {
    let mut cmd = Command::new(&plan.exe);
    cmd.args(&plan.args)
        .arg("--boot-timer=json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let spawn_ns = monotonic_ns();
    let child = cmd.spawn().map_err(|e| Error::Spawn(plan.exe.clone(), e))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, monotonic_ns()));
    });
    let (out, reaped_ns) = match rx.recv_timeout(RUN_DEADLINE) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the child is
            // not reaped yet (its waiter thread is still blocked), so the
            // pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(Error::Deadline { run });
        }
    };
    let out = out.map_err(|e| Error::Spawn(plan.exe.clone(), e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last_line = stderr
            .lines()
            .rfind(|l| !l.starts_with('{'))
            .unwrap_or("")
            .to_string();
        return Err(Error::RunFailed {
            run,
            status: out.status,
            last_line,
        });
    }
    stderr
        .lines()
        .rfind(|l| l.starts_with("{\"ember_boot_timer\""))
        .and_then(|l| parse_sample(l, spawn_ns, reaped_ns))
        .ok_or(Error::NoReport { run })
}

/// The measured samples.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One per measured run.
    pub samples: Vec<Sample>,
}

/// Runs the warm-ups, then the measured runs, with a progress line on
/// stderr.
pub fn run(plan: &Plan) -> Result<Report, Error> {
    if plan.runs == 0 {
        return Err(Error::NoRuns);
    }
    let total = plan.warmups + plan.runs;
    let mut report = Report::default();
    let mut stderr = std::io::stderr();
    for i in 1..=total {
        let what = if i <= plan.warmups {
            format!("warm-up {i}/{}", plan.warmups)
        } else {
            format!("run {}/{}", i - plan.warmups, plan.runs)
        };
        let _ = write!(stderr, "\rember bench: {what}   ");
        let _ = stderr.flush();
        let sample = run_once(plan, i).inspect_err(|_| {
            let _ = writeln!(stderr);
        })?;
        if i > plan.warmups {
            report.samples.push(sample);
        }
    }
    let _ = writeln!(stderr, "\rember bench: {} runs done          ", plan.runs);
    Ok(report)
}

impl Report {
    fn column(&self, row: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.times_ms.iter().find(|(r, _)| *r == row).map(|(_, t)| *t))
            .collect()
    }

    fn memory_rows(&self) -> [(&'static str, Vec<f64>); 3] {
        let mib = |k: u64| k as f64 / 1024.0;
        let peak: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|s| s.peak_rss_kib.map(mib))
            .collect();
        let touched = self
            .samples
            .iter()
            .filter_map(|s| s.guest_resident_kib.map(mib))
            .collect();
        let overhead = self
            .samples
            .iter()
            .filter_map(|s| Some(mib(s.peak_rss_kib?.saturating_sub(s.guest_resident_kib?))))
            .collect();
        [
            ("peak_rss", peak),
            ("guest_touched", touched),
            ("overhead", overhead),
        ]
    }

    /// The human-readable table.
    pub fn to_table(&self, plan: &Plan) -> String {
        let mut out = format!(
            "ember bench: {} runs after {} warm-ups, guest memory {} MiB\ncommand: {}\n",
            self.samples.len(),
            plan.warmups,
            plan.guest_memory_kib / 1024,
            plan.command_line()
        );
        let line = |name: &str, s: Option<Stats>| match s {
            Some(s) => format!(
                "{:<22} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                name, s.min, s.median, s.p90, s.max
            ),
            None => format!("{name:<22} {:>9} {:>9} {:>9} {:>9}\n", "-", "-", "-", "-"),
        };
        out.push_str(&format!(
            "{:<22} {:>9} {:>9} {:>9} {:>9}\n",
            "ms from spawn", "min", "median", "p90", "max"
        ));
        for row in row_names() {
            out.push_str(&line(row, Stats::of(&self.column(row))));
        }
        out.push_str(&format!(
            "{:<22} {:>9} {:>9} {:>9} {:>9}\n",
            "MiB", "min", "median", "p90", "max"
        ));
        for (name, values) in self.memory_rows() {
            out.push_str(&line(name, Stats::of(&values)));
        }
        out.push_str(
            "ember's own share: spawn to first_vcpu_entry; peak_rss: child VmHWM; \
             overhead: peak_rss - guest_touched (smaps Rss of guest RAM)\n",
        );
        out
    }

    /// The report as one JSON object.
    pub fn to_json(&self, plan: &Plan) -> String {
        let stats = |v: &[f64]| Stats::of(v).map_or("null".to_string(), Stats::to_json);
        let times: Vec<String> = row_names()
            .into_iter()
            .map(|r| format!("\"{r}\":{}", stats(&self.column(r))))
            .collect();
        let memory: Vec<String> = self
            .memory_rows()
            .iter()
            .map(|(name, v)| format!("\"{name}\":{}", stats(v)))
            .collect();
        let command = plan
            .command_line()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        format!(
            "{{\"ember_bench\":1,\"command\":\"{command}\",\"runs\":{},\"warmups\":{},\
             \"guest_memory_mib\":{},\"times_ms_from_spawn\":{{{}}},\"memory_mib\":{{{}}}}}",
            self.samples.len(),
            plan.warmups,
            plan.guest_memory_kib / 1024,
            times.join(","),
            memory.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let s = Stats::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(
            (s.n, s.min, s.median, s.p90, s.max),
            (3, 1.0, 3.0, 5.0, 5.0)
        );
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Stats::of(&v).unwrap();
        assert_eq!((s.median, s.p90), (10.5, 18.0));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[2.0]).unwrap().p90, 2.0);
    }

    #[test]
    fn sample_from_report() {
        let j = "{\"ember_boot_timer\":1,\"clock\":\"CLOCK_MONOTONIC\",\"origin\":\"main\",\
                 \"origin_ns\":2000000,\"phases_ns\":{\"args_parsed\":100000,\
                 \"memory_mapped\":null,\"init_reached\":3000000},\"stop\":\"guest reset\",\
                 \"guest_memory_kib\":131072,\"guest_resident_kib\":512,\"peak_rss_kib\":3072}";
        let s = parse_sample(j, 1_000_000, 9_000_000).unwrap();
        assert_eq!(s.times_ms[0], ("main", 1.0));
        assert_eq!(s.times_ms[1], ("args_parsed", 1.1));
        assert!(s.times_ms.contains(&("init_reached", 4.0)));
        assert!(!s.times_ms.iter().any(|(r, _)| *r == "memory_mapped"));
        assert_eq!(s.times_ms.last(), Some(&("reaped", 8.0)));
        assert_eq!(
            (s.peak_rss_kib, s.guest_resident_kib),
            (Some(3072), Some(512))
        );
        let report = Report {
            samples: vec![s.clone(), s],
        };
        let plan = Plan {
            exe: "/bin/ember".into(),
            args: vec!["run".into(), "--cmdline".into(), "a b".into()],
            runs: 2,
            warmups: 0,
            guest_memory_kib: 131072,
        };
        let json = report.to_json(&plan);
        assert!(
            json.contains("\"command\":\"/bin/ember run --cmdline 'a b' --boot-timer=json\""),
            "{json}"
        );
        assert!(
            json.contains("\"init_reached\":{\"n\":2,\"min\":4.000,"),
            "{json}"
        );
        assert!(json.contains("\"memory_mapped\":null"), "{json}");
        assert!(
            json.contains("\"overhead\":{\"n\":2,\"min\":2.500,"),
            "{json}"
        );
        let table = report.to_table(&plan);
        assert!(table.contains("init_reached"), "{table}");
    }
}
