#!/usr/bin/env bash
# Host benchmark of the VMMs' own cost: boots the boot-timer tiny guest
# (resources/tiny-guest/boot-timer.S: one line on COM1, 123 to the boot
# timer, then power-off/reset) ROUNDS times under each VMM, interleaved
# round by round (the order rotates each round), and prints the medians of
#   start-to-line  VMM process start (just before fork) to the guest's line
#                  on the VMM's stdout
#   start-to-exit  VMM process start to the VMM reaped by its parent
#   peak RSS       the VMM's VmHWM at its exit (resources/bench/vmmstat.c)
# and the ratio of ember to each peer. 1 vCPU, 128 MiB, same ELF for all.
#
#   resources/bench/host-tiny.sh [-n ROUNDS] [-e EMBER] [-f FIRECRACKER]
#                                [-c CLOUD_HYPERVISOR] [-q QEMU]
#
# Defaults: 20 rounds, ember from cargo build --release (built if missing),
# ../shared/peers/{firecracker,cloud-hypervisor} if present, and
# qemu-system-x86_64 -M microvm if installed (-cpu host,-arch-capabilities:
# PVM refuses the ARCH_CAPABILITIES MSR that -cpu host sets). A peer given
# as "" is skipped. Results: docs/PERFORMANCE.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=20
ember=$root/target/x86_64-unknown-linux-gnu/release/ember  # see .cargo/config.toml
fc=$root/../shared/peers/firecracker
ch=$root/../shared/peers/cloud-hypervisor
[ -x "$fc" ] || fc=/work/shared/peers/firecracker
[ -x "$ch" ] || ch=/work/shared/peers/cloud-hypervisor
qemu=$(command -v qemu-system-x86_64 || true)
while getopts "n:e:f:c:q:" opt; do
    case $opt in
        n) rounds=$OPTARG ;;
        e) ember=$OPTARG ;;
        f) fc=$OPTARG ;;
        c) ch=$OPTARG ;;
        q) qemu=$OPTARG ;;
        *) echo "usage: host-tiny.sh [-n ROUNDS] [-e EMBER] [-f FC] [-c CH] [-q QEMU]" >&2; exit 2 ;;
    esac
done
[ -x "$ember" ] || (cd "$root" && cargo build --release >&2)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
guest=$("$root/resources/tiny-guest/build.sh" "$tmp/boot-timer.elf")
cc -O2 -o "$tmp/vmmstat" "$here/vmmstat.c"
cat >"$tmp/fc.json" <<JSON
{"boot-source": {"kernel_image_path": "$guest", "boot_args": "console=ttyS0 reboot=k panic=-1"},
 "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}
JSON

python3 - "$tmp" "$rounds" "$ember" "$fc" "$ch" "$qemu" "$guest" <<'PY'
import os, statistics, subprocess, sys, time
tmp, rounds, ember, fc, ch, qemu, guest = sys.argv[1:]
rounds = int(rounds)
C = "console=ttyS0 reboot=k panic=-1"
vmms = {"ember": [ember, "run", "--kernel", guest, "--cmdline", C, "--memory", "128M", "--cpus", "1"]}
if fc and os.access(fc, os.X_OK):
    vmms["firecracker"] = [fc, "--no-api", "--no-seccomp", "--level", "Off", "--config-file", f"{tmp}/fc.json"]
if ch and os.access(ch, os.X_OK):
    vmms["cloud-hypervisor"] = [ch, "--kernel", guest, "--cmdline", C, "--cpus", "boot=1",
                                "--memory", "size=128M", "--serial", "tty", "--console", "off"]
if qemu and os.access(qemu, os.X_OK):
    vmms["qemu-microvm"] = [qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities",
                            "-M", "microvm,x-option-roms=off,acpi=off", "-m", "128", "-smp", "1",
                            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                            "-no-reboot", "-kernel", guest, "-append", C]
for name, cmd in vmms.items():
    print(f"# {name}: {' '.join(cmd)}", file=sys.stderr)
LINE = b"ember-tiny: boot timer"
res = {n: {"line": [], "exit": [], "rss": []} for n in vmms}
names = list(vmms)
for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
        print(f"\rhost-tiny: round {r + 1}/{rounds} {name:<18}", end="", file=sys.stderr, flush=True)
        out = f"{tmp}/stat"
        p = subprocess.Popen([f"{tmp}/vmmstat", out] + vmms[name], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf, t_line = b"", None
        while True:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            if t_line is None and LINE in buf:
                t_line = time.monotonic_ns()
        p.wait(timeout=30)
        start, end, hwm, status = map(int, open(out).read().split())
        if t_line is None:
            sys.exit(f"\n{name}: no guest line in round {r + 1} (status {status}): {buf[-200:]!r}")
        res[name]["line"].append((t_line - start) / 1e6)
        res[name]["exit"].append((end - start) / 1e6)
        res[name]["rss"].append(hwm / 1024)
print(file=sys.stderr)
med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
print(f"{rounds} interleaved rounds, medians (min-max)")
print(f"| VMM | start-to-line ms | start-to-exit ms | peak RSS MiB | ember/VMM line | exit | RSS |")
print("|---|---|---|---|---|---|---|")
for n in names:
    d, m = res[n], med[n]
    rng = lambda k, f: f"{m[k]:{f}} ({min(d[k]):{f}}-{max(d[k]):{f}})"
    ratio = lambda k: f"{med['ember'][k] / m[k]:.2f}"
    print(f"| {n} | {rng('line', '.1f')} | {rng('exit', '.1f')} | {rng('rss', '.1f')} "
          f"| {ratio('line')} | {ratio('exit')} | {ratio('rss')} |")
PY
