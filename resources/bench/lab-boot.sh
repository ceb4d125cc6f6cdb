#!/usr/bin/env bash
# Boot-time benchmark in the nested lab: boots the default guest (vmlinux +
# initramfs, 128 MiB, 1 vCPU, quiet serial console) ROUNDS times under each
# VMM, round by round, in one lab session, and prints the medians of
#   boot-to-init  VMM process start to the guest init's marker line
#   boot-to-exit  VMM process start to the VMM's exit (the guest rebooted)
# measured with resources/lab/stamp.c.
#
#   resources/bench/lab-boot.sh [-n ROUNDS]
#
# VMMs: QEMU -M microvm (Debian's qemu-system-x86). Results: docs/PERFORMANCE.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=bench/lab-boot.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

rounds=10
while getopts "n:" opt; do
    case $opt in
        n) rounds=$OPTARG ;;
        *) die "usage: lab-boot.sh [-n ROUNDS]" ;;
    esac
done
guest=$("$here/../guest/build.sh")
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is not installed"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/bench.sh" <<SCRIPT
C="console=ttyS0 reboot=t panic=-1 quiet ember.mode=exit"
for r in \$(seq 1 $rounds); do
    echo "=== ROUND \$r qemu"
    stamp timeout -s KILL 60 qemu-system-x86_64 -enable-kvm -cpu host \\
        -M microvm,x-option-roms=off,acpi=off -m 128 -smp 1 -nodefaults -no-user-config \\
        -display none -serial stdio -no-reboot \\
        -kernel vmlinux -initrd initramfs.cpio.gz -append "\$C" </dev/null
done
SCRIPT
"$here/../lab/run.sh" --timeout $((rounds * 60 + 60)) \
    --file "$guest/vmlinux" --file "$guest/initramfs.cpio.gz" \
    --file "$qemu=$qemu" --file /usr/share/qemu/qboot.rom=/usr/share/qemu/qboot.rom \
    "$tmp/bench.sh" >"$tmp/out" || die "the lab run failed: $(tail -n 5 "$tmp/out")"

python3 - "$tmp/out" <<'PY'
import re, statistics, sys
init, exit_, vmm = {}, {}, None
for line in open(sys.argv[1], errors="replace"):
    line = line.replace("\r", "").rstrip("\n")
    if line.startswith("==== lab: retrying"):
        init, exit_ = {}, {}
    m = re.match(r"=== ROUND \d+ (\S+)", line)
    if m:
        vmm = m.group(1)
        continue
    m = re.match(r"\[([0-9.]+)\] (.*)", line)
    if not m or vmm is None:
        continue
    t, text = float(m.group(1)), m.group(2)
    if "EMBER-GUEST-INIT-REACHED" in text:
        init.setdefault(vmm, []).append(t)
    elif text.startswith("STAMP-EXIT"):
        if text != "STAMP-EXIT 0":
            sys.exit(f"{vmm}: a round ended with {text}")
        exit_.setdefault(vmm, []).append(t)
print(f"{'VMM':<10} {'rounds':>6} {'boot-to-init ms (median, min-max)':>36} {'boot-to-exit ms (median, min-max)':>36}")
for v in init:
    i, e = init[v], exit_.get(v, [])
    fmt = lambda xs: f"{statistics.median(xs):8.1f} ({min(xs):7.1f}-{max(xs):7.1f})" if xs else "-"
    print(f"{v:<10} {len(i):>6} {fmt(i):>36} {fmt(e):>36}")
PY
