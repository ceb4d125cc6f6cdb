# Runs in the lab: boots the default guest under QEMU -M microvm with KVM,
# from the initramfs and from rootfs.ext4 on virtio-blk, with 1 and 2 vCPUs.
# Each boot's console sits between "=== CASE NAME" and "=== END NAME status=N".
# tests/qemu_baseline.rs asserts on them.
set -u
qemu() {
    timeout -s KILL 60 qemu-system-x86_64 -enable-kvm -cpu host \
        -M microvm,x-option-roms=off,acpi=off -m 128 -nodefaults -no-user-config \
        -display none -serial stdio -no-reboot "$@" </dev/null
}
boot() {
    name=$1
    shift
    echo "=== CASE $name"
    qemu "$@" 2>&1
    echo "=== END $name status=$?"
}
C="console=ttyS0 reboot=t panic=-1 ember.mode=exit"
for n in 1 2; do
    boot "initramfs-$n" -smp "$n" -kernel vmlinux -initrd initramfs.cpio.gz -append "$C"
    boot "ext4-$n" -smp "$n" -kernel vmlinux -append "$C root=/dev/vda ro" \
        -drive id=d0,file=rootfs.ext4,format=raw,if=none,readonly=on \
        -device virtio-blk-device,drive=d0
done
