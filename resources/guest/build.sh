#!/usr/bin/env bash
# Build ember's default guest into the cache and print the directory holding it.
#
#   resources/guest/build.sh            build (or reuse) and print the directory
#   resources/guest/build.sh --hvc      the same guest with the hvc kernel variant
#
# The directory, $XDG_CACHE_HOME/ember/guest/<hash of inputs>/ (default
# ~/.cache/ember/guest/...), holds:
#   vmlinux            ELF kernel with the PVH note
#   bzImage            the same kernel for the 64-bit boot protocol
#   initramfs.cpio.gz  busybox + ./init
#   rootfs.ext4        the same files on an ext4 disk (root=/dev/vda)
#   kernel.config      the kernel's final .config
# and points the symlink $XDG_CACHE_HOME/ember/default-guest at it: the
# guest `ember run -- CMD` boots when no --kernel is given (docs/RUN.md).
# It is reused until an input changes: kernel.config (the fragment), init,
# this script, or the Debian packages linux-source-6.1 and busybox-static.
#
# --hvc: the kernel also gets kernel-hvc.config (no 8250 UART, console only
# on virtio-console's hvc0: `ember run --console virtio`), cached under its
# own hash; the default-guest link is left alone. Only the tests that need
# it build it. See docs/GUEST.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=guest/build.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

need_packages linux-source-6.1 busybox-static make gcc bc bison flex libelf-dev \
    libssl-dev xz-utils cpio e2fsprogs python3


rootfs_mib=64
fragments=()
lock=.lock
case "${1:-}" in
    "") ;;
    --hvc) fragments=("$here/kernel-hvc.config") lock=.lock-hvc ;;
    *) die "usage: build.sh [--hvc]" ;;
esac

# --- the kernel: cached on its own, so a change to init doesn't rebuild it ---
HASH_EXTRA="linux-source-6.1 $(pkg_version linux-source-6.1)"
khash=$(hash_inputs "$here/kernel.config" "${fragments[@]}" "$here/kernel.sh")
kdir=$(ember_cache kernel/"$khash")
mkdir -p "$(dirname "$kdir")"

# --- the userspace: busybox + init, as an initramfs and an ext4 disk ---
HASH_EXTRA="$khash busybox-static $(pkg_version busybox-static) rootfs=$rootfs_mib"
ghash=$(hash_inputs "$here/init" "$here/ember-exit" "$here/build.sh" "$here/../lib/mkcpio.py")
gdir=$(ember_cache guest/"$ghash")

build_guest() {
    local stage=$gdir.tmp/stage
    rm -rf "$gdir.tmp" && mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,root,etc,mnt/share}
    cp /bin/busybox "$stage/bin/busybox"
    local applet
    for applet in $("$stage/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
    done
    install -m 755 "$here/init" "$stage/init"
    ln -s ../init "$stage/sbin/init"
    install -m 755 "$here/ember-exit" "$stage/sbin/ember-exit"
    echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
    chmod 1777 "$stage/tmp"
    # The initramfs needs /dev/console before devtmpfs is mounted; the disk
    # gets /dev from the kernel (CONFIG_DEVTMPFS_MOUNT).
    python3 "$here/../lib/mkcpio.py" "$gdir.tmp/initramfs.cpio" --dir "$stage" \
        --node /dev/console:c:5:1:600 --node /dev/null:c:1:3:666
    gzip -9n "$gdir.tmp/initramfs.cpio"
    mkfs.ext4 -q -F -L ember-root -E root_owner=0:0 -d "$stage" \
        "$gdir.tmp/rootfs.ext4" "${rootfs_mib}M" >&2
    rm -rf "$stage"
    ln "$kdir/vmlinux" "$kdir/bzImage" "$kdir/kernel.config" "$gdir.tmp/" 2>/dev/null ||
        cp "$kdir/vmlinux" "$kdir/bzImage" "$kdir/kernel.config" "$gdir.tmp/"
    rm -rf "$gdir" && mv "$gdir.tmp" "$gdir"
}

# One build at a time per cache: parallel test processes wait for the first.
mkdir -p "$(dirname "$gdir")"
exec 9>"$(dirname "$gdir")/$lock"
flock 9
[ -f "$kdir/bzImage" ] || "$here/kernel.sh" "$kdir" "${fragments[@]}"
[ -f "$gdir/rootfs.ext4" ] || build_guest
[ ${#fragments[@]} -gt 0 ] || ln -sfn "$gdir" "$(dirname "$(dirname "$gdir")")/default-guest"
echo "$gdir"
