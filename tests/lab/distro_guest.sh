# Runs in the lab (or on a VMX/SVM host): boots the Debian 12 distribution
# guest (resources/distro/build.sh) with each stock kernel flavour under each
# VMM (the cases file), logs in on the serial console, asks
# systemd for its state, then powers the VM off with systemctl.
#
# Files beside it: cases (one "NAME VMM FLAVOUR KERNEL" line per boot; VMM
# is qemu, ember, or ember64: ember with --boot-mode linux64),
# rootfs.ext4 (writable: every boot gets a fresh copy) and, per flavour F
# (amd64, cloud-amd64), F.vmlinuz (the bzImage as shipped), F.vmlinux (the
# ELF inside it) and F.initramfs.cpio.gz; ember and the QEMU binary when
# those VMMs run.
# Each case's console sits between "=== CASE NAME" and "=== END NAME
# status=N", every line time-stamped by `stamp` ("[MS] ...") in the lab.
# A boot whose console stays silent for $stall seconds is killed
# ("=== STALLED NAME ...") and the case runs again: the nested lab now and
# then freezes a guest (docs/LAB.md). A boot that ends without the guest's
# power-off also runs again ("=== RETRY NAME ..."): the lab's emulated SVM
# now and then corrupts a guest's state, which then triple-faults or spins
# (docs/LAB.md; ember's info log names the stop). Three attempts at most;
# the last one is asserted on.
# tests/distro_guest.rs asserts on the last attempt of each case.
set -u
# Typing into a VMM that has already exited must not kill the script.
trap '' PIPE

# One VMM boot: KERNEL INITRD CPUS MEMORY DISK CMDLINE, console on stdio.
# ember gets its defaults: ACPI tables, no PIT.
# Each execs the VMM (so its pid, in ./vmm.pid, is the VMM's).
vmm_qemu() {
    # microvm with ACPI: the stock kernels find the virtio-mmio devices
    # (and, for cloud-amd64, which has no MP-table parser, the CPUs) only
    # in the ACPI tables.
    exec qemu-system-x86_64 -enable-kvm -cpu host -smp "$3" -m "$4" \
        -M microvm,x-option-roms=off,acpi=on,rtc=on -nodefaults -no-user-config \
        -display none -serial stdio -no-reboot -kernel "$1" -initrd "$2" -append "$6" \
        -drive id=d0,file="$5",format=raw,if=none -device virtio-blk-device,drive=d0
}
vmm_ember() {
    # The info log names why the VM stopped (on stderr, in the case's output).
    EMBER_LOG=info exec ./ember run --kernel "$1" --initrd "$2" --cpus "$3" --memory "$4" \
        --disk "$5" --cmdline "$6" ${EMBER_BOOT_MODE:+--boot-mode "$EMBER_BOOT_MODE"}
}
# ember with an ELF vmlinux entered through the 64-bit Linux boot protocol
# instead of its PVH note (`vmm_ember` with a vmlinux takes PVH).
vmm_ember64() {
    EMBER_BOOT_MODE=linux64 vmm_ember "$@"
}
if [ "${1:-}" = vmm ]; then
    shift
    vmm=$1
    shift
    echo $$ >vmm.pid
    "vmm_$vmm" "$@"
fi

deadline=240 stall=120
cpus=2 memory=1024
# `quiet`: in the nested lab every console byte is a port-I/O exit, and now
# and then the lab's emulated SVM resumes a guest with the L1 host's state
# after one (docs/LAB.md, "When the lab itself fails"). A verbose boot of
# these kernels makes ~72,000 such exits, a quiet one ~3,000.
cmdline="console=ttyS0 root=/dev/vda ro panic=-1 reboot=t quiet"

# What is typed once root is logged in. The facts line's tag is split in
# the command, so an echo of the typing can never look like the answer.
cat >cmds <<'EOF'
stty -echo; export SYSTEMD_COLORS=0 SYSTEMD_PAGER=
s=$(systemctl is-system-running --wait); f=$(systemctl --failed --plain --no-legend | wc -l)
echo "EMBER-""DISTRO state=$s failed=$f cpus=$(nproc) online=$(cat /sys/devices/system/cpu/online) multi_user=$(systemctl is-active multi-user.target) kernel=$(uname -r)"
systemctl --failed --plain --no-legend
systemd-analyze
systemctl poweroff
EOF

# Every console line time-stamped, where the lab's stamp is (not on a host).
stamp=
command -v stamp >/dev/null && stamp=stamp

# boot NAME VMM FLAVOUR KERNEL: one guest boot, its stdin a pipe into which
# cmds is typed once the serial getty has logged root in. Returns 2 on a
# stall.
boot() {
    name=$1 vmm=$2 flavour=$3 kernel=$4
    echo "=== CASE $name"
    cp rootfs.ext4 disk.ext4 || echo "cannot copy the disk"
    rm -f in out vmm.pid
    mkfifo in
    $stamp timeout -s KILL "$deadline" sh "$0" vmm "$vmm" "$kernel" \
        "$flavour.initramfs.cpio.gz" "$cpus" "$memory" disk.ext4 "$cmdline" \
        <in >out 2>&1 &
    pid=$!
    exec 6>in
    typed=0 size=0 quiet=0 stalled=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if [ $typed = 0 ] && grep -q "automatic login" out; then
            sleep 1
            cat cmds >&6
            typed=1
        fi
        now=$(wc -c <out)
        if [ "$now" = "$size" ]; then quiet=$((quiet + 1)); else quiet=0 size=$now; fi
        if [ $quiet -ge $stall ]; then
            stalled=1
            kill -KILL "$(cat vmm.pid)" 2>/dev/null
            break
        fi
    done
    wait "$pid"
    rc=$?
    exec 6>&-
    cat out
    powered_off=0
    grep -q "reboot: Power down" out && powered_off=1
    rm -f disk.ext4 in out vmm.pid
    if [ $stalled = 1 ]; then
        echo "=== STALLED $name: no console output for ${stall}s"
        return 2
    fi
    echo "=== END $name status=$rc"
    # A boot that did not end in the guest's power-off is run once more
    # (the test asserts on the last attempt and reports the retry).
    if [ $powered_off = 0 ]; then
        echo "=== RETRY $name: no power-off (status $rc)"
        return 2
    fi
}

while read -r name vmm flavour kernel; do
    boot "$name" "$vmm" "$flavour" "$kernel" </dev/null ||
        boot "$name" "$vmm" "$flavour" "$kernel" </dev/null ||
        boot "$name" "$vmm" "$flavour" "$kernel" </dev/null
done <cases
