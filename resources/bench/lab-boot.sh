#!/usr/bin/env bash
# Boot-time benchmark in the nested lab: boots the default guest (vmlinux +
# initramfs, 128 MiB, 1 vCPU, the same command line for all) ROUNDS times
# under each VMM, interleaved round by round in one lab session, and prints
# per VMM the median and range of
#   boot-to-init  VMM process start to the guest init's marker line
#   boot-to-exit  VMM process start to the VMM's exit (the guest rebooted)
# and ember's ratio to each peer, measured with resources/lab/stamp.c.
#
#   resources/bench/lab-boot.sh [-n ROUNDS] [-v VMM,VMM...] [-o DIR]
#
# The table also gives each VMM's first console line and ember's own share
# (fork to its first KVM_RUN, from its --boot-timer=json). -o DIR writes
# DIR/results.json (every round) and DIR/timeline.png (per-phase bars of the
# medians; needs python3-matplotlib, installed when missing and root).
# Report: lab-boot-report.py.
#
# VMMs: ember ($EMBER_RELEASE: run cargo build --release; ember-no-acpi
# is the same with --no-acpi), qemu (-M
# microvm), and firecracker and cloud-hypervisor when their binaries are in
# ../shared/peers (or $EMBER_PEERS). Cloud Hypervisor has no i8042 and our
# guest no ACPI: a reset boots it again, so it is killed at the marker and has
# no boot-to-exit. Results: docs/PERFORMANCE.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=bench/lab-boot.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

rounds=10 vmms="" out_dir=""
while getopts "n:v:o:" opt; do
    case $opt in
        n) rounds=$OPTARG ;;
        v) vmms=${OPTARG//,/ } ;;
        o) out_dir=$OPTARG ;;
        *) die "usage: lab-boot.sh [-n ROUNDS] [-v VMM,VMM...] [-o DIR]" ;;
    esac
done
if [ -n "$out_dir" ]; then
    mkdir -p "$out_dir" || die "cannot create $out_dir"
    need_packages python3-matplotlib
fi
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
        ember | ember-no-acpi)
            [ -x "$EMBER_RELEASE" ] || die "no release build of ember: run cargo build --release"
            [ -n "${have_ember:-}" ] || files+=(--file "$EMBER_RELEASE")
            have_ember=1 ;;
        qemu)
            need_packages qemu-system-x86
            q=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is not installed"
            files+=(--file "$q=$q" --file /usr/share/qemu/qboot.rom=/usr/share/qemu/qboot.rom) ;;
        firecracker | cloud-hypervisor)
            [ -x "$peers/$v" ] || die "no $v binary in $peers"
            files+=(--file "$peers/$v") ;;
        *) die "unknown VMM $v (ember, ember-no-acpi, qemu, firecracker, cloud-hypervisor)" ;;
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
                --memory 128M --cpus 1 --cmdline "\$C" --boot-timer=json </dev/null ;;
            ember-no-acpi) stamp timeout -s KILL 60 ./ember run --kernel vmlinux --initrd initramfs.cpio.gz \\
                --memory 128M --cpus 1 --cmdline "\$C" --boot-timer=json --no-acpi </dev/null ;;
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
# A VMM killed at the marker (stamp -k) ends with 137; the report checks
# every round, so the script itself succeeds.
exit 0
SCRIPT
"$here/../lab/run.sh" --timeout $((rounds * 60 + 60)) "${files[@]}" "$tmp/bench.sh" >"$tmp/out" ||
    { cp "$tmp/out" "${TMPDIR:-/tmp}/lab-boot.failed.out"; die "the lab run failed (output in ${TMPDIR:-/tmp}/lab-boot.failed.out): $(tail -n 5 "$tmp/out")"; }

echo "command: resources/bench/lab-boot.sh -n $rounds -v ${vmms// /,}; guest command line: $C"
# Debian's python3 (python3-matplotlib), whatever python3 is first in PATH.
/usr/bin/python3 "$here/lab-boot-report.py" "$tmp/out" ${out_dir:+"$out_dir"}
