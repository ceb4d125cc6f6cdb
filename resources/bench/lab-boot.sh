#!/usr/bin/env bash
# Boot-time benchmark in the nested lab: boots the default guest (vmlinux +
# initramfs, 128 MiB, 1 vCPU, the same command line for all) ROUNDS times
# under each VMM, interleaved round by round in one lab session, and prints
# per VMM the median and range of
#   boot-to-init  VMM process start to the guest init's marker line
#   boot-to-exit  VMM process start to the VMM's exit (the guest rebooted)
# and ember's ratio to each peer, measured with resources/lab/stamp.c.
#
#   resources/bench/lab-boot.sh [-n ROUNDS] [-v VMM,VMM...]
#
# VMMs: ember (target/release/ember: run cargo build --release), qemu (-M
# microvm), and firecracker and cloud-hypervisor when their binaries are in
# ../shared/peers (or $EMBER_PEERS). Cloud Hypervisor has no i8042 and our
# guest no ACPI: a reset boots it again, so it is killed at the marker and has
# no boot-to-exit. Results: docs/PERFORMANCE.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=bench/lab-boot.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

rounds=10 vmms=""
while getopts "n:v:" opt; do
    case $opt in
        n) rounds=$OPTARG ;;
        v) vmms=${OPTARG//,/ } ;;
        *) die "usage: lab-boot.sh [-n ROUNDS] [-v VMM,VMM...]" ;;
    esac
done
peers=${EMBER_PEERS:-$here/../../../shared/peers}
if [ -z "$vmms" ]; then
    vmms="ember qemu"
    [ -x "$peers/firecracker" ] && vmms="$vmms firecracker"
    [ -x "$peers/cloud-hypervisor" ] && vmms="$vmms cloud-hypervisor"
fi
guest=$("$here/../guest/build.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
files=(--file "$guest/vmlinux" --file "$guest/initramfs.cpio.gz")
for v in $vmms; do
    case $v in
        ember)
            [ -x "$here/../../target/release/ember" ] || die "no release build of ember: run cargo build --release"
            files+=(--file "$here/../../target/release/ember") ;;
        qemu)
            q=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is not installed"
            files+=(--file "$q=$q" --file /usr/share/qemu/qboot.rom=/usr/share/qemu/qboot.rom) ;;
        firecracker | cloud-hypervisor)
            [ -x "$peers/$v" ] || die "no $v binary in $peers"
            files+=(--file "$peers/$v") ;;
        *) die "unknown VMM $v (ember, qemu, firecracker, cloud-hypervisor)" ;;
    esac
done

# One command line for all, but QEMU microvm has no i8042 and hangs on
# reboot=k: it gets reboot=t (a triple fault), its fast path (peers/README).
C="console=ttyS0 reboot=k panic=-1 quiet ember.mode=exit"
cat >"$tmp/bench.sh" <<SCRIPT
C="$C"
cat >fc.json <<JSON
{"boot-source": {"kernel_image_path": "vmlinux", "initrd_path": "initramfs.cpio.gz", "boot_args": "\$C"},
 "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}
JSON
for r in \$(seq 1 $rounds); do
    for v in $vmms; do
        echo "=== ROUND \$r \$v"
        case \$v in
            ember) stamp timeout -s KILL 60 ./ember run --kernel vmlinux --initrd initramfs.cpio.gz \\
                --memory 128M --cpus 1 --cmdline "\$C" </dev/null ;;
            qemu) stamp timeout -s KILL 60 qemu-system-x86_64 -enable-kvm -cpu host \\
                -M microvm,x-option-roms=off,acpi=off -m 128 -smp 1 -nodefaults -no-user-config \\
                -display none -serial stdio -no-reboot \\
                -kernel vmlinux -initrd initramfs.cpio.gz -append "\${C/reboot=k/reboot=t}" </dev/null ;;
            firecracker) rm -f /tmp/fc.sock; stamp timeout -s KILL 60 ./firecracker --no-api --no-seccomp \\
                --level Off --config-file fc.json </dev/null ;;
            cloud-hypervisor) stamp -k EMBER-GUEST-INIT-REACHED timeout -s KILL 60 ./cloud-hypervisor \\
                --kernel vmlinux --initramfs initramfs.cpio.gz --cmdline "\$C" --cpus boot=1 \\
                --memory size=128M --serial tty --console off </dev/null ;;
        esac
    done
done
SCRIPT
"$here/../lab/run.sh" --timeout $((rounds * 60 + 60)) "${files[@]}" "$tmp/bench.sh" >"$tmp/out" ||
    { cp "$tmp/out" "${TMPDIR:-/tmp}/lab-boot.failed.out"; die "the lab run failed (output in ${TMPDIR:-/tmp}/lab-boot.failed.out): $(tail -n 5 "$tmp/out")"; }

echo "command: resources/bench/lab-boot.sh -n $rounds -v ${vmms// /,}; guest command line: $C"
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
        init.setdefault(vmm, [])
        continue
    m = re.match(r"\[([0-9.]+)\] (.*)", line)
    if not m or vmm is None:
        continue
    t, text = float(m.group(1)), m.group(2)
    if "EMBER-GUEST-INIT-REACHED" in text:
        init[vmm].append(t)
    elif text.startswith("STAMP-EXIT"):
        if text == "STAMP-EXIT 0":
            exit_.setdefault(vmm, []).append(t)
        elif vmm != "cloud-hypervisor":
            sys.exit(f"{vmm}: a round ended with {text}")
fmt = lambda xs: f"{statistics.median(xs):8.1f} ({min(xs):7.1f}-{max(xs):7.1f})" if xs else "-"
med = lambda d, v: statistics.median(d[v]) if d.get(v) else None
print(f"{'VMM':<17} {'rounds':>6} {'boot-to-init ms median (min-max)':>34} {'boot-to-exit ms median (min-max)':>34} {'ember/VMM init':>15} {'ember/VMM exit':>15}")
for v in init:
    ri = med(init, "ember") / med(init, v) if med(init, "ember") and med(init, v) else None
    re_ = med(exit_, "ember") / med(exit_, v) if med(exit_, "ember") and med(exit_, v) else None
    r = lambda x: f"{x:15.2f}" if x else f"{'-':>15}"
    print(f"{v:<17} {len(init[v]):>6} {fmt(init[v]):>34} {fmt(exit_.get(v, [])):>34} {r(ri)} {r(re_)}")
PY
