//! Tier (b): the [`ember::Vm`] object through its library API on this
//! host's KVM: a tiny guest counting in a loop is paused, its registers
//! read while paused show it stopped, and after `resume` it finishes with
//! the right output; operations its state does not allow are refused.
//!
//! These fail loudly without a usable /dev/kvm unless
//! `EMBER_SKIP_KVM_TESTS=1` is set.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ember::config::VmConfigBuilder;
use ember::plan::MachinePlan;
use ember::vm::{Options, VmState};
use ember::{StopReason, Vm};

/// Console output collected in memory.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

const COUNT: u64 = 400_000;

#[test]
fn a_paused_guest_stands_still_and_finishes_after_resume() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(13, false);
    let (loop_start, loop_end) = (
        guest_symbol(&elf, "count_loop"),
        guest_symbol(&elf, "count_done"),
    );
    let config = VmConfigBuilder::new(&elf).build().unwrap();
    let plan = MachinePlan::new(&config).unwrap();
    let sink = Sink::default();
    let mut vm = Vm::build(&config, plan, Options::embedded(Box::new(sink.clone()))).unwrap();
    assert_eq!(vm.state(), VmState::Created);
    assert!(vm.pause().is_err(), "a VM that never started cannot pause");
    vm.start().unwrap();
    assert!(vm.start().is_err(), "started twice");
    sink.wait_for("ember-tiny: counting\n");
    assert!(vm.vcpu_regs(0).is_err(), "registers of a running vCPU");

    vm.pause().unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    let first = vm.vcpu_regs(0).unwrap();
    let printed = sink.text();
    std::thread::sleep(Duration::from_millis(150));
    let second = vm.vcpu_regs(0).unwrap();
    assert_eq!(
        (first.rip, first.rbx),
        (second.rip, second.rbx),
        "the vCPU moved while paused"
    );
    assert!(
        (loop_start..loop_end).contains(&first.rip),
        "paused at rip {:#x}, not in the loop {loop_start:#x}..{loop_end:#x}",
        first.rip
    );
    assert!(
        first.rbx > 0 && first.rbx < COUNT,
        "paused mid-count: rbx {}",
        first.rbx
    );
    assert_eq!(sink.text(), printed, "output while paused");
    assert!(vm.pause().is_err(), "paused twice");

    vm.resume().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    let outcome = vm.wait().unwrap();
    assert_eq!(outcome.reason, StopReason::GuestReset);
    assert!(outcome.stuck.is_empty(), "{:?}", outcome.stuck);
    assert_eq!(
        sink.text(),
        format!("ember-tiny: counting\nember-tiny: counted {COUNT}\n")
    );
}

#[test]
fn pause_and_resume_many_times_lose_nothing() {
    if !kvm_available() {
        return;
    }
    let elf = tiny_guest(13, false);
    let config = VmConfigBuilder::new(&elf).cpus(2).build().unwrap();
    let plan = MachinePlan::new(&config).unwrap();
    let sink = Sink::default();
    let mut vm = Vm::build(&config, plan, Options::embedded(Box::new(sink.clone()))).unwrap();
    vm.start().unwrap();
    sink.wait_for("ember-tiny: counting\n");
    let mut last = 0;
    for _ in 0..20 {
        vm.pause().unwrap();
        let rbx = vm.vcpu_regs(0).unwrap().rbx;
        assert!(rbx >= last, "the count went back: {rbx} after {last}");
        last = rbx;
        // The second vCPU waits for INIT/SIPI; paused all the same.
        vm.vcpu_regs(1).unwrap();
        vm.resume().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let outcome = vm.wait().unwrap();
    assert_eq!(outcome.reason, StopReason::GuestReset);
    assert!(
        sink.text().ends_with(&format!("counted {COUNT}\n")),
        "{}",
        sink.text()
    );
}
