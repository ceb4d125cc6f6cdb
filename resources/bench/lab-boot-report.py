#!/usr/bin/env python3
"""Report of resources/bench/lab-boot.sh: reads the lab's output (each VMM
run under `stamp`, rounds marked "=== ROUND N VMM") and prints, per VMM, the
median and range of each phase seen from outside, and ember's ratio to each
peer. With an output directory it also writes results.json (every round's
figures) and timeline.png (per-phase bars of each VMM's medians).

Phases, ms from just before the VMM's fork (stamp's start):
  first_output  the guest's first line on the VMM's stdout
  init          the guest init's marker line (EMBER-GUEST-INIT-REACHED)
  exit          the VMM's exit after the guest's reboot (not for VMMs killed
                at the marker)
and for ember, from its --boot-timer=json line (CLOCK_MONOTONIC, related to
stamp's start by the STAMP-START line):
  main          ember's main() starts (fork, exec, dynamic loading before)
  vcpu_entry    just before the first KVM_RUN: ember's own share ends here

  lab-boot-report.py OUTPUT [OUT_DIR]
"""
import json
import re
import statistics
import sys

PHASES = ["main", "vcpu_entry", "first_output", "init", "exit"]


def parse(path):
    runs, cur, vmm = {}, None, None
    for line in open(path, errors="replace"):
        line = line.replace("\r", "").rstrip("\n")
        if line.startswith("==== lab: retrying"):
            runs, cur, vmm = {}, None, None
            continue
        m = re.match(r"=== ROUND \d+ (\S+)", line)
        if m:
            vmm = m.group(1)
            cur = {}
            runs.setdefault(vmm, []).append(cur)
            continue
        m = re.match(r"\[([0-9.]+)\] (.*)", line)
        if not m or cur is None:
            continue
        t, text = float(m.group(1)), m.group(2)
        if text.startswith("STAMP-START "):
            cur["start_ns"] = int(text.split()[1])
        elif text.startswith("STAMP-EXIT"):
            status = int(text.split()[1])
            if status == 0:
                cur["exit"] = t
            elif vmm != "cloud-hypervisor" or "init" not in cur:
                sys.exit(f"{vmm}: a round ended with status {status}")
        elif '"ember_boot_timer"' in text and "start_ns" in cur:
            j = json.loads(text[text.index("{"):])
            base = (j["origin_ns"] - cur["start_ns"]) / 1e6
            cur["main"] = base
            cur["vcpu_entry"] = base + j["phases_ns"]["first_vcpu_entry"] / 1e6
        elif not text.startswith("cloud-hypervisor: "):  # its own log lines
            cur.setdefault("first_output", t)
            if "EMBER-GUEST-INIT-REACHED" in text:
                cur.setdefault("init", t)
    return runs


def main():
    runs = parse(sys.argv[1])
    out_dir = sys.argv[2] if len(sys.argv) > 2 else None
    for v, rs in runs.items():
        if any("init" not in r for r in rs):
            sys.exit(f"{v}: a round has no init marker")
    vals = {v: {p: [r[p] for r in rs if p in r] for p in PHASES} for v, rs in runs.items()}
    med = {v: {p: statistics.median(x) for p, x in ph.items() if x} for v, ph in vals.items()}

    def cell(v, p):
        x = vals[v][p]
        return f"{statistics.median(x):7.1f} ({min(x):.0f}-{max(x):.0f})" if x else "-"

    print(f"{'VMM':<17} {'rounds':>6} {'first output ms':>22} {'boot-to-init ms':>22} "
          f"{'boot-to-exit ms':>22} {'ember/VMM init':>15} {'ember/VMM exit':>15}")
    e = med.get("ember", {})
    for v in runs:
        ratio = lambda p: (f"{e[p] / med[v][p]:15.2f}" if p in e and p in med[v] else f"{'-':>15}")
        print(f"{v:<17} {len(runs[v]):>6} {cell(v, 'first_output'):>22} {cell(v, 'init'):>22} "
              f"{cell(v, 'exit'):>22} {ratio('init')} {ratio('exit')}")
    if "ember" in vals and vals["ember"]["vcpu_entry"]:
        print(f"ember's own share (fork to first KVM_RUN): median {cell('ember', 'vcpu_entry')} ms; "
              f"fork to main: {cell('ember', 'main')} ms")
    if not out_dir:
        return
    with open(f"{out_dir}/results.json", "w") as f:
        json.dump({"rounds": runs, "medians": med}, f, indent=1)
    plot(med, f"{out_dir}/timeline.png")
    print(f"wrote {out_dir}/results.json and {out_dir}/timeline.png")


def plot(med, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segments = [  # (from, to, label, colour)
        (None, "main", "fork, exec, loader", "#bbbbbb"),
        ("main", "vcpu_entry", "VMM set-up to first KVM_RUN", "#e4572e"),
        ("vcpu_entry", "first_output", "guest: to first console line", "#76b041"),
        (None, "first_output", "VMM + guest: to first console line", "#a8c686"),
        ("first_output", "init", "guest: first line to init", "#17bebb"),
        ("init", "exit", "init to VMM exit", "#ffc914"),
    ]
    vmms = list(med)[::-1]
    fig, ax = plt.subplots(figsize=(10, 2.0 + 0.7 * len(vmms)))
    used = set()
    for y, v in enumerate(vmms):
        m = med[v]
        for start, end, label, colour in segments:
            if end not in m:
                continue
            if start is None:
                # Whole-span bars only where no finer split exists.
                if end == "first_output" and "vcpu_entry" in m:
                    continue
                s = 0.0
            elif start in m:
                s = m[start]
            else:
                continue
            ax.barh(y, m[end] - s, left=s, color=colour,
                    label=None if label in used else label)
            used.add(label)
    ax.set_yticks(range(len(vmms)), vmms)
    ax.set_xlabel("ms from the VMM's fork (median of the rounds)")
    ax.set_title("Boot phases in the nested lab (resources/bench/lab-boot.sh)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
