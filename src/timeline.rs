//! The boot timeline: when each boot phase happened, on one monotonic clock.
//!
//! The clock is `CLOCK_MONOTONIC`. The origin is the first statement of
//! `main` ([`Timeline::start`]); every phase is stored as nanoseconds since
//! that origin, and the origin itself is kept as an absolute
//! `CLOCK_MONOTONIC` value ([`Timeline::origin_ns`]) so that a parent that
//! noted the clock before spawning ember (`ember bench`) can add the time
//! from `execve` to `main`. `/proc/self/stat`'s start time was not used: it
//! counts in clock ticks (10 ms here), coarser than the whole boot of a
//! tiny guest.
//!
//! A [`Timeline`] is a cheap handle (an `Arc`) passed to whoever marks a
//! phase: `main`, [`crate::vm::run`], the vCPU threads, the serial console
//! and the boot-timer device. No global state. Each phase keeps its first
//! mark.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A boot phase, in boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The command line was parsed into a configuration.
    ArgsParsed,
    /// Guest RAM was mapped (not touched).
    MemoryMapped,
    /// Kernel, initrd and boot structures were written to guest memory.
    KernelLoaded,
    /// `KVM_CREATE_VM` returned and the memory slots are registered.
    VmCreated,
    /// Legacy and virtio devices exist and are wired.
    DevicesCreated,
    /// ember starts spawning the vCPU threads (everything before the first
    /// `KVM_RUN` is ready).
    VcpusStarted,
    /// A vCPU thread entered `KVM_RUN` for the first time: ember's own
    /// share of the boot ends here.
    FirstVcpuEntry,
    /// The guest wrote its first byte to the console (the serial port or,
    /// with `--console virtio`, the virtio console).
    FirstSerialOutput,
    /// The guest wrote 123 to the boot timer (port 0x3f0 or MMIO
    /// 0xc0000000).
    InitReached,
    /// The VM stopped (reset, power-off, signal or error).
    GuestStop,
    /// ember is about to return from `main`: the VM is torn down.
    ProcessExit,
}

impl Phase {
    /// Every phase, in boot order.
    pub const ALL: [Phase; 11] = [
        Phase::ArgsParsed,
        Phase::MemoryMapped,
        Phase::KernelLoaded,
        Phase::VmCreated,
        Phase::DevicesCreated,
        Phase::VcpusStarted,
        Phase::FirstVcpuEntry,
        Phase::FirstSerialOutput,
        Phase::InitReached,
        Phase::GuestStop,
        Phase::ProcessExit,
    ];

    /// The phase's name in the JSON report and the table.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ArgsParsed => "args_parsed",
            Phase::MemoryMapped => "memory_mapped",
            Phase::KernelLoaded => "kernel_loaded",
            Phase::VmCreated => "vm_created",
            Phase::DevicesCreated => "devices_created",
            Phase::VcpusStarted => "vcpus_started",
            Phase::FirstVcpuEntry => "first_vcpu_entry",
            Phase::FirstSerialOutput => "first_serial_output",
            Phase::InitReached => "init_reached",
            Phase::GuestStop => "guest_stop",
            Phase::ProcessExit => "process_exit",
        }
    }
}

const UNSET: u64 = u64::MAX;

#[derive(Debug)]
struct Inner {
    origin_ns: u64,
    marks: [AtomicU64; Phase::ALL.len()],
    /// Guest RAM resident at the stop, in KiB (UNSET if not measured).
    guest_resident_kib: AtomicU64,
}

/// A shared handle on the boot timeline.
#[derive(Debug, Clone)]
pub struct Timeline(Arc<Inner>);

/// Reads `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec owned by this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl Timeline {
    /// A timeline whose origin is now.
    pub fn start() -> Self {
        Self::with_origin(monotonic_ns())
    }

    /// A timeline whose origin is the absolute `CLOCK_MONOTONIC` time
    /// `origin_ns`.
    pub fn with_origin(origin_ns: u64) -> Self {
        Timeline(Arc::new(Inner {
            origin_ns,
            marks: std::array::from_fn(|_| AtomicU64::new(UNSET)),
            guest_resident_kib: AtomicU64::new(UNSET),
        }))
    }

    /// The origin, as an absolute `CLOCK_MONOTONIC` time in nanoseconds.
    pub fn origin_ns(&self) -> u64 {
        self.0.origin_ns
    }

    fn slot(&self, phase: Phase) -> &AtomicU64 {
        &self.0.marks[phase as usize]
    }

    /// Marks `phase` now, unless it is already marked.
    pub fn mark(&self, phase: Phase) {
        self.mark_at(phase, monotonic_ns());
    }

    /// Marks `phase` at the absolute time `now_ns`, unless already marked.
    pub fn mark_at(&self, phase: Phase, now_ns: u64) {
        let since = now_ns.saturating_sub(self.0.origin_ns);
        let _ =
            self.slot(phase)
                .compare_exchange(UNSET, since, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// True once `phase` is marked (a cheap check for hot paths).
    pub fn is_marked(&self, phase: Phase) -> bool {
        self.slot(phase).load(Ordering::Relaxed) != UNSET
    }

    /// Nanoseconds from the origin to `phase`, if marked.
    pub fn get(&self, phase: Phase) -> Option<u64> {
        let v = self.slot(phase).load(Ordering::Relaxed);
        (v != UNSET).then_some(v)
    }

    /// Records how much guest RAM was resident when the VM stopped.
    pub fn set_guest_resident_kib(&self, kib: u64) {
        self.0.guest_resident_kib.store(kib, Ordering::Relaxed);
    }

    /// Guest RAM resident at the stop, in KiB, if measured.
    pub fn guest_resident_kib(&self) -> Option<u64> {
        let v = self.0.guest_resident_kib.load(Ordering::Relaxed);
        (v != UNSET).then_some(v)
    }
}

/// What `main` adds to the timeline for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportExtra {
    /// Why the VM stopped (or the error), one line.
    pub stop: String,
    /// Guest memory size in KiB.
    pub guest_memory_kib: u64,
    /// ember's peak resident set (`VmHWM`) in KiB, if readable.
    pub peak_rss_kib: Option<u64>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

impl Timeline {
    /// The timeline as one line of JSON: phase times in nanoseconds from
    /// the origin (`null` if a phase never happened).
    pub fn to_json(&self, extra: &ReportExtra) -> String {
        let phases: Vec<String> = Phase::ALL
            .iter()
            .map(|p| format!("\"{}\":{}", p.name(), json_opt(self.get(*p))))
            .collect();
        format!(
            "{{\"ember_boot_timer\":1,\"clock\":\"CLOCK_MONOTONIC\",\"origin\":\"main\",\
             \"origin_ns\":{},\"phases_ns\":{{{}}},\"stop\":{},\"guest_memory_kib\":{},\
             \"guest_resident_kib\":{},\"peak_rss_kib\":{}}}",
            self.origin_ns(),
            phases.join(","),
            json_string(&extra.stop),
            extra.guest_memory_kib,
            json_opt(self.guest_resident_kib()),
            json_opt(extra.peak_rss_kib),
        )
    }

    /// The timeline as a human-readable table.
    pub fn to_text(&self, extra: &ReportExtra) -> String {
        let mut out = String::from("ember boot timer (ms since main, CLOCK_MONOTONIC):\n");
        let mut prev = 0;
        for p in Phase::ALL {
            match self.get(p) {
                Some(t) => {
                    out.push_str(&format!(
                        "  {:<20} {:>9.3}  (+{:.3})\n",
                        p.name(),
                        ms(t),
                        ms(t.saturating_sub(prev))
                    ));
                    prev = prev.max(t);
                }
                None => out.push_str(&format!("  {:<20} {:>9}\n", p.name(), "-")),
            }
        }
        out.push_str(&format!("  stop: {}\n", extra.stop));
        let kib = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} KiB"));
        out.push_str(&format!(
            "  peak RSS {}, guest RAM touched {} of {} MiB\n",
            kib(extra.peak_rss_kib),
            kib(self.guest_resident_kib()),
            extra.guest_memory_kib / 1024,
        ));
        out
    }
}

/// `VmHWM` (peak resident set) of this process in KiB, from
/// `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_mark_wins_and_json_shape() {
        let t = Timeline::with_origin(1_000);
        t.mark_at(Phase::ArgsParsed, 1_500);
        t.mark_at(Phase::ArgsParsed, 9_999);
        t.clone().mark_at(Phase::InitReached, 3_000);
        assert_eq!(t.get(Phase::ArgsParsed), Some(500));
        assert_eq!(t.get(Phase::InitReached), Some(2_000));
        assert!(!t.is_marked(Phase::GuestStop));
        t.set_guest_resident_kib(64);
        let extra = ReportExtra {
            stop: "guest \"reset\"".into(),
            guest_memory_kib: 131072,
            peak_rss_kib: Some(2048),
        };
        let j = t.to_json(&extra);
        assert!(j.starts_with("{\"ember_boot_timer\":1,"), "{j}");
        assert!(j.contains("\"origin_ns\":1000,"), "{j}");
        assert!(
            j.contains("\"args_parsed\":500,\"memory_mapped\":null"),
            "{j}"
        );
        assert!(j.contains("\"init_reached\":2000,"), "{j}");
        assert!(j.contains("\"stop\":\"guest \\\"reset\\\"\""), "{j}");
        assert!(
            j.ends_with("\"guest_resident_kib\":64,\"peak_rss_kib\":2048}"),
            "{j}"
        );
        assert!(!j.contains('\n'));
        let text = t.to_text(&extra);
        assert!(text.contains("args_parsed"), "{text}");
        assert!(
            text.contains("peak RSS 2048 KiB, guest RAM touched 64 KiB of 128 MiB"),
            "{text}"
        );
    }
}
