# Runs in the lab: ember with --console virtio (issue 10). Each boot's output
# sits between "=== CASE NAME" and "=== END NAME status=N";
# tests/console_in_lab.rs asserts. vmlinux-hvc is the hvc kernel variant (no
# 8250 UART at all: resources/guest/build.sh --hvc), vmlinux the default one.
set -u
. ./lib.sh

# The hvc-only kernel, default command line (console=hvc0): boot messages and
# the init's marker on hvc0, then its shell typed into through ember's stdin.
# The messages from before the virtio console came up are in dmesg only
# (docs/VIRTIO.md): the [n] keeps the typed command's echo from matching.
echo "=== CASE hvc-shell"
printf '%s\n' 'echo "sum=$((6 * 7))"' \
    'echo "tty=$(cat /sys/class/tty/console/active) uarts=$(ls /sys/class/tty | grep -c ttyS)"' \
    'dmesg | grep "Linux versio[n]"' 'reboot -f' >/tmp/cmds
drive /tmp/cmds --console virtio --kernel vmlinux-hvc --initrd initramfs.cpio.gz
echo "=== END hvc-shell status=$?"

# Input that arrives long before the driver posts receive buffers: all of it
# is in the pipe at once (then EOF); ember keeps it until the guest takes it.
echo "=== CASE hvc-early"
printf '%s\n' 'echo "early=$((2 * 21))"' 'reboot -f' |
    timeout -s KILL 60 ./ember run --console virtio --kernel vmlinux-hvc --initrd initramfs.cpio.gz 2>&1
echo "=== END hvc-early status=$?"

# A command (ember run -- CMD): its output on hvc0, its status ember's.
echo "=== CASE hvc-command"
timeout -s KILL 60 ./ember run --console virtio --kernel vmlinux-hvc --initrd initramfs.cpio.gz \
    -- sh -c 'echo "cmd-out $((40 + 2))"; exit 7' </dev/null 2>&1
echo "=== END hvc-command status=$?"

# The default kernel (8250 and virtio-console both built in) on hvc0.
echo "=== CASE default-shell"
printf '%s\n' 'echo "sum=$((6 * 7))"' \
    'echo "tty=$(cat /sys/class/tty/console/active)"' 'reboot -f' >/tmp/cmds
drive /tmp/cmds --console virtio --kernel vmlinux --initrd initramfs.cpio.gz
echo "=== END default-shell status=$?"
