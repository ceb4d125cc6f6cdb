#!/usr/bin/env bash
# virtio-blk benchmark in the nested lab: ember against QEMU -M microvm with
# virtio-blk-device, same guest kernel (1 vCPU, 128 MiB), same four 512 MiB
# raw images (in the lab's RAM: the lab gets 4 GiB, not 3, to hold them) as
# /dev/vda..vdd, ROUNDS interleaved rounds in one lab session. Inside the guest, blkbench (blkbench.c, O_DIRECT)
# measures, one request at a time on /dev/vda,
#   sequential read   256 MiB in 1 MiB requests (MB/s)
#   sequential write  256 MiB in 1 MiB requests + fdatasync (MB/s)
#   random read       4 KiB at random offsets, 10000 requests (IOPS)
# and then, 32 requests in flight per disk (32 threads per disk, each making
# synchronous preads: the guest kernel has no AIO or io_uring), 4 s each,
#   random read QD32       4 KiB at random offsets on /dev/vda (IOPS)
#   4 disks random read    the same on vda..vdd at once (total IOPS)
# The table gives the medians and ember's ratio to QEMU (> 1: ember faster),
# then each round's pair. A boot that ends without all five results (the
# lab stalled its guest, or blkbench reports a lost request) is named in the
# report and run once more; a round that fails twice is left out (and the
# script exits 1).
#
#   resources/bench/lab-block.sh [-n ROUNDS] [-q QEMU_QUEUE_SIZE]
#
# ROUNDS defaults to 5. QEMU's virtio-blk-device runs with its defaults
# (queue size 256, so seg_max 254) unless -q sets its queue-size property:
# ember's queue is 1024 deep (seg_max 1022), so -q 1024 compares like for
# like.
#
# Needs a release build of ember (cargo build --release). Results:
# docs/PERFORMANCE.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=bench/lab-block.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

rounds=5
qemu_queue=
while getopts "n:q:" opt; do
    case $opt in
        n) rounds=$OPTARG ;;
        q) qemu_queue=",queue-size=$OPTARG" ;;
        *) die "usage: lab-block.sh [-n ROUNDS] [-q QEMU_QUEUE_SIZE]" ;;
    esac
done
ember=$EMBER_RELEASE
[ -x "$ember" ] || die "no release build of ember: run cargo build --release"
guest=$("$here/../guest/build.sh")
need_packages qemu-system-x86
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is not installed"
tmp=$(mktemp -d)
trap '[ -n "${EMBER_BENCH_KEEP:-}" ] || rm -rf "$tmp"' EXIT

# The benchmark runs as the guest's first program (rdinit=/bench/run), from
# an extra cpio archive appended to the default initramfs.
mkdir -p "$tmp/stage/bench"
gcc -O2 -static -pthread -Wall -o "$tmp/stage/bench/blkbench" "$here/blkbench.c"
cat >"$tmp/stage/bench/run" <<'RUN'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bench/blkbench seqread /dev/vda 256
/bench/blkbench seqwrite /dev/vda 256
/bench/blkbench randread /dev/vda 10000
/bench/blkbench randqd 32 4 /dev/vda
/bench/blkbench randqd 32 4 /dev/vda /dev/vdb /dev/vdc /dev/vdd
reboot -f
RUN
chmod +x "$tmp/stage/bench/run"
python3 "$here/../lib/mkcpio.py" "$tmp/bench.cpio" --dir "$tmp/stage"
{ gzip -dc "$guest/initramfs.cpio.gz"; cat "$tmp/bench.cpio"; } >"$tmp/bench-initramfs.cpio"

cat >"$tmp/bench.sh" <<SCRIPT
C="console=ttyS0 reboot=k panic=-1 quiet rdinit=/bench/run"
# Four 512 MiB images, written out (no holes): 2 GiB, more than the lab's
# /tmp (tmpfs, half the lab's RAM by default) holds.
mount -o remount,size=3G /tmp
for i in 0 1 2 3; do dd if=/dev/zero of=/tmp/disk\$i.img bs=1M count=512 2>/dev/null; done
# One boot: VMM ROUND. A boot without all five results (a guest the lab
# stalled: killed after 120 s; or blkbench's lost-request report) says so
# and is run once more; the report's parser keeps the last attempt. The
# output streams (tee), so a lab that wedges mid-boot still shows how far
# the boot got; pipefail keeps the VMM's status.
set -o pipefail
boot() {
    echo "=== ROUND \$2 \$1"
    if [ \$1 = ember ]; then
        timeout -s KILL 120 ./ember run --kernel vmlinux --initrd bench-initramfs.cpio \\
            --disk /tmp/disk0.img --disk /tmp/disk1.img --disk /tmp/disk2.img --disk /tmp/disk3.img \\
            --root none --cmdline "\$C" </dev/null 2>&1 | tee /tmp/boot.out
    else
        timeout -s KILL 120 qemu-system-x86_64 -enable-kvm -cpu host \\
            -M microvm,x-option-roms=off,acpi=off -m 128 -smp 1 -nodefaults -no-user-config \\
            -display none -serial stdio -no-reboot \\
            -kernel vmlinux -initrd bench-initramfs.cpio -append "\${C/reboot=k/reboot=t}" \\
            -drive id=d0,file=/tmp/disk0.img,format=raw,if=none -device virtio-blk-device,drive=d0$qemu_queue \\
            -drive id=d1,file=/tmp/disk1.img,format=raw,if=none -device virtio-blk-device,drive=d1$qemu_queue \\
            -drive id=d2,file=/tmp/disk2.img,format=raw,if=none -device virtio-blk-device,drive=d2$qemu_queue \\
            -drive id=d3,file=/tmp/disk3.img,format=raw,if=none -device virtio-blk-device,drive=d3$qemu_queue \\
            </dev/null 2>&1 | tee /tmp/boot.out
    fi
    rc=\$?
    n=\$(grep -c "BLKBENCH " /tmp/boot.out)
    [ "\$n" = 5 ] && return 0
    echo "=== FAILED round \$2 \$1: exit status \$rc, \$n of 5 results"
    return 1
}
for r in \$(seq 1 $rounds); do
    boot ember \$r || boot ember \$r || true
    boot qemu \$r || boot qemu \$r || true
done
SCRIPT
"$here/../lab/run.sh" --memory 4G --timeout $((rounds * 300 + 60)) \
    --file "$ember" --file "$guest/vmlinux" --file "$tmp/bench-initramfs.cpio" \
    --file "$qemu=$qemu" --file /usr/share/qemu/qboot.rom=/usr/share/qemu/qboot.rom \
    "$tmp/bench.sh" >"$tmp/out" || die "the lab run failed: $(tail -n 5 "$tmp/out")"

python3 - "$tmp/out" "$rounds" <<'PY'
import re, statistics, sys
# res[vmm][round][test]: a boot's header clears its round (the last attempt
# counts), a fresh lab clears everything.
res, cur, failed = {}, None, []
for line in open(sys.argv[1], errors="replace"):
    line = line.replace("\r", "").strip()
    if line.startswith("==== lab: retrying"):
        res, cur, failed = {}, None, []
    m = re.match(r"=== ROUND (\d+) (\S+)", line)
    if m:
        cur = res.setdefault(m.group(2), {})[int(m.group(1))] = {}
    if line.startswith("=== FAILED ") or line.startswith("blkbench: ") and "pending" in line:
        failed.append(line)
    m = re.match(r"BLKBENCH (\S+) \S+ \S+ (\S+)", line)
    if m and cur is not None:
        cur[m.group(1)] = float(m.group(2))
rounds = int(sys.argv[2])
tests = [("seqread", "sequential read, MB/s"), ("seqwrite", "sequential write, MB/s"),
         ("randread", "4 KiB random read, IOPS"),
         ("randread-qd32", "4 KiB random read QD32, IOPS"),
         ("randread-qd32x4", "4 disks at QD32, total IOPS")]
# A round counts for a test when both VMMs have its result.
pairs = {key: [(res["ember"][r][key], res["qemu"][r][key]) for r in range(1, rounds + 1)
               if key in res.get("ember", {}).get(r, {}) and key in res.get("qemu", {}).get(r, {})]
         for key, _ in tests}
print(f"{'test':<28} {'ember median':>13} {'QEMU median':>13} {'ember/QEMU':>11}  rounds")
for key, label in tests:
    if not pairs[key]:
        print(f"{label:<28} {'-':>13} {'-':>13} {'-':>11}  0")
        continue
    me = statistics.median(e for e, _ in pairs[key])
    mq = statistics.median(q for _, q in pairs[key])
    print(f"{label:<28} {me:>13.1f} {mq:>13.1f} {me / mq:>11.2f}  {len(pairs[key])}")
print("each round, ember / QEMU:")
for key, label in tests:
    print(f"  {key:<15} " + "  ".join(f"{e:.0f}/{q:.0f}" for e, q in pairs[key]))
for line in failed:
    print("boot retried or lost:", line.removeprefix("=== FAILED "))
if any(len(p) < rounds for p in pairs.values()):
    sys.exit(f"fewer than {rounds} complete rounds (boots failed twice: see above)")
PY
