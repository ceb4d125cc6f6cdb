# Runs in the lab: ember's virtio-block with the default guest (issue 4).
# Cases (each between "=== CASE NAME" and "=== END NAME status=N"):
#   root     rootfs.ext4 as the root on /dev/vda
#   disks    root + two data disks: the guest writes a pattern to vdb and
#            syncs, tries to write the readonly vdc, creates and deletes files
#            on the root, reports sizes and serials, remounts / read-only and
#            reboots; afterwards the host side checks the files.
# Host-side verdicts are lines "HOST-<CHECK> ok|FAIL ...".
set -u
PATH=/lab:$PATH

. ./lib.sh

echo "=== CASE root"
cp rootfs.ext4 /tmp/root.ext4
timeout -s KILL 60 ./ember run --kernel vmlinux --disk /tmp/root.ext4 \
    --cmdline "console=ttyS0 reboot=k panic=-1 ember.mode=exit" </dev/null 2>&1
echo "=== END root status=$?"

echo "=== CASE disks"
cp rootfs.ext4 /tmp/root.ext4
dd if=/dev/zero of=/tmp/data.img bs=1M count=16 2>/dev/null
# A readonly disk with known content.
i=0
while [ $i -lt 2000 ]; do echo "readonly-disk-line-$i"; i=$((i + 1)); done >/tmp/ro.img
truncate -s 8M /tmp/ro.img
ro_sum=$(md5sum </tmp/ro.img)
cat >/tmp/cmds <<'GUEST'
i=0; while [ $i -lt 4000 ]; do echo "ember-block-pattern-$i"; i=$((i + 1)); done > /tmp/pattern
dd if=/tmp/pattern of=/dev/vdb bs=4096 conv=fsync 2>/dev/null && echo "GUEST-DD rc=0"
sync
dd if=/tmp/pattern of=/dev/vdc bs=4096 conv=fsync 2>/dev/null; echo "GUEST-RO-DD rc=$?"
echo "GUEST-SIZES vda=$(cat /sys/block/vda/size) vdb=$(cat /sys/block/vdb/size) vdc=$(cat /sys/block/vdc/size) ro=$(cat /sys/block/vdc/ro)"
echo "GUEST-SERIALS vdb=$(cat /sys/block/vdb/serial) vdc=$(cat /sys/block/vdc/serial)"
mkdir /churn && i=0 && while [ $i -lt 200 ]; do echo "file $i" > /churn/f$i; i=$((i + 1)); done
rm -rf /churn
echo "kept by the guest" > /kept.txt
sync
mount -o remount,ro / && echo "GUEST-REMOUNT-RO rc=0"
reboot -f
GUEST
drive /tmp/cmds --kernel vmlinux --disk /tmp/root.ext4 --disk /tmp/data.img,id=data-one \
    --disk /tmp/ro.img,readonly,id=ro-two
echo "=== END disks status=$?"

# Host side, after ember exited.
i=0
while [ $i -lt 4000 ]; do echo "ember-block-pattern-$i"; i=$((i + 1)); done >/tmp/pattern
n=$(wc -c </tmp/pattern)
if head -c "$n" /tmp/data.img | cmp -s - /tmp/pattern; then
    echo "HOST-PATTERN ok ($n bytes)"
else
    echo "HOST-PATTERN FAIL"
fi
if [ "$(tail -c +$((n + 1)) /tmp/data.img | tr -d '\0' | wc -c)" = 0 ]; then
    echo "HOST-REST-ZERO ok"
else
    echo "HOST-REST-ZERO FAIL: bytes past the pattern changed"
fi
if [ "$(md5sum </tmp/ro.img)" = "$ro_sum" ]; then echo "HOST-RO-UNCHANGED ok"; else echo "HOST-RO-UNCHANGED FAIL"; fi
e2fsck -fn /tmp/root.ext4 >/tmp/fsck 2>&1
rc=$?
cat /tmp/fsck
if [ $rc = 0 ]; then echo "HOST-FSCK ok"; else echo "HOST-FSCK FAIL rc=$rc"; fi
kept=$(debugfs -R "cat /kept.txt" /tmp/root.ext4 2>/dev/null)
if [ "$kept" = "kept by the guest" ]; then echo "HOST-KEPT ok"; else echo "HOST-KEPT FAIL: '$kept'"; fi
if debugfs -R "ls /churn" /tmp/root.ext4 2>&1 | grep -q "not found"; then
    echo "HOST-CHURN-GONE ok"
else
    echo "HOST-CHURN-GONE FAIL"
fi
