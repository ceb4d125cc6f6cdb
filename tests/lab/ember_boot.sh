# Runs in the lab: boots the default guest under ember with each entry
# protocol, vCPU count and memory size of issue 3, and drives the guest's
# shell through ember's stdin. Each boot's output sits between
# "=== CASE NAME" and "=== END NAME status=N". tests/ember_boot.rs asserts.
set -u
C="console=ttyS0 reboot=k panic=-1 ember.mode=exit"
boot() {
    name=$1
    shift
    echo "=== CASE $name"
    timeout -s KILL 60 ./ember run "$@" </dev/null 2>&1
    echo "=== END $name status=$?"
}
# ember's debug log names the kernel format and the entry protocol it chose.
export EMBER_LOG=debug
boot pvh --kernel vmlinux --initrd initramfs.cpio.gz --cmdline "$C case=pvh"
boot linux64 --kernel vmlinux --boot-mode linux64 --initrd initramfs.cpio.gz --cmdline "$C case=linux64"
boot bzimage --kernel bzImage --initrd initramfs.cpio.gz --cmdline "$C case=bzimage"
unset EMBER_LOG
for n in 1 2 4; do
    boot "cpus-$n" --cpus "$n" --kernel vmlinux --initrd initramfs.cpio.gz --cmdline "$C"
done
# The legacy PIT on request (off by default: the guest has the TSC-deadline
# timer and kvmclock).
boot pit --pit --cpus 2 --kernel vmlinux --initrd initramfs.cpio.gz --cmdline "$C"
boot mem-128M --memory 128M --kernel vmlinux --initrd initramfs.cpio.gz --cmdline "$C"
boot mem-4G --memory 4G --kernel vmlinux --initrd initramfs.cpio.gz --cmdline "$C"

# The guest's shell, typed into through ember's stdin (a pipe): once the
# shell is up, a command, then a reboot. No --cmdline: the default one must
# give the serial console (and the init's default, the shell).
echo "=== CASE stdin"
. ./lib.sh
printf '%s\n' 'echo "sum=$((6 * 7))"' 'reboot -f' >/tmp/cmds
drive /tmp/cmds --kernel vmlinux --initrd initramfs.cpio.gz
echo "=== END stdin status=$?"
