#!/usr/bin/env bash
# Build the distribution guests into the cache and print the directory:
# Debian 12's stock kernels and a Debian 12 root disk (docs/GUEST.md,
# "Distribution guests").
#
#   resources/distro/build.sh           build (or reuse) and print the directory
#
# $XDG_CACHE_HOME/ember/distro/<hash>/ (default ~/.cache/ember/...) holds
#   amd64/, cloud-amd64/   one per kernel flavour (linux-image-amd64 and
#                          linux-image-cloud-amd64, bookworm's 6.1):
#       vmlinuz            the stock bzImage
#       vmlinux            the ELF extracted from it (extract-vmlinux.py)
#       initramfs.cpio.gz  busybox, ./init and the modules to reach an ext4
#                          root on virtio (modules.order: the load order)
#       config, modules.dep, the .deb itself (every other module)
#   rootfs.ext4            the Debian 12 root disk for root=/dev/vda
#                          (rootfs.sh; 1 GiB sparse)
#   packages.txt           the disk's packages and versions
#   metadata               versions and findings, one key=value a line
# The kernels are the versions the system's apt lists name (apt-get update
# as root when they name none). The hash covers these scripts, the kernel
# and busybox-static versions and the disk's hash; the disk is cached on its
# own in distro/rootfs/<hash>/, keyed by rootfs.sh only, so a kernel update
# does not rebuild it. Building the disk needs root (mmdebstrap).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=distro/build.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

need_packages busybox-static kmod binutils python3 xz-utils lz4 zstd gzip apt

flavours=(amd64 cloud-amd64)
# What reaches an ext4 root on virtio-mmio (or virtio-pci), in load order;
# dependencies come from the package's modules.dep. ext4 and jbd2 want the
# crypto-crc32c driver first (a soft dependency insmod does not follow):
# crc32c_generic runs on any CPU. virtio_console gives hvc0. A module built
# into a flavour's kernel is left out.
modules=(virtio_mmio virtio_pci virtio_blk virtio_console crc32c_generic ext4)

# The versioned image packages the meta packages depend on, and their
# candidate versions, from apt's lists (two apt-cache calls: each reads them).
meta=("${flavours[@]/#/linux-image-}")
image_packages() {
    apt-cache depends "${meta[@]}" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2 }'
}
images=$(image_packages)
if [ -z "$images" ] && [ "$(id -u)" = 0 ]; then
    log "apt knows no ${meta[*]}: apt-get update"
    (flock 9 && apt-get -q update >&2) 9>/tmp/ember-apt.lock || die "apt-get update failed"
    images=$(image_packages)
fi
pkgs=()
for flavour in "${flavours[@]}"; do
    pkg=$(grep -x "linux-image-[0-9.]*-[0-9]*-$flavour" <<<"$images") ||
        die "apt knows no linux-image-$flavour (the Debian bookworm archive must be in the apt sources; as root this script runs apt-get update)"
    pkgs+=("$pkg")
done
declare -A candidate
while read -r key value; do
    case "$key" in
        Candidate:) candidate[$pkg]=$value ;;
        *:) [ -n "$value" ] || pkg=${key%:} ;;
    esac
done < <(apt-cache policy "${pkgs[@]}")
# kernel_ids: FLAVOUR:PACKAGE=VERSION ..., in the order of $flavours.
kernel_ids=""
for i in "${!flavours[@]}"; do
    pkg=${pkgs[$i]}
    case "${candidate[$pkg]:-(none)}" in
        "(none)") die "apt has no candidate version of $pkg" ;;
    esac
    kernel_ids="$kernel_ids ${flavours[$i]}:$pkg=${candidate[$pkg]}"
done

rhash=$(hash_inputs "$here/rootfs.sh")
rdir=$(ember_cache distro/rootfs/"$rhash")
HASH_EXTRA="$kernel_ids busybox-static $(pkg_version busybox-static) rootfs=$rhash modules=${modules[*]}"
hash=$(hash_inputs "$here/build.sh" "$here/init" "$here/extract-vmlinux.py" "$here/modules.py" \
    "$here/../lib/mkcpio.py")
dir=$(ember_cache distro/"$hash")

# build_flavour FLAVOUR:PACKAGE=VERSION: fills $dir.tmp/FLAVOUR and appends
# to $dir.tmp/metadata.
build_flavour() {
    local flavour=${1%%:*} pkg=${1#*:}
    local ver=${pkg#*=}
    pkg=${pkg%%=*}
    local out=$dir.tmp/$flavour work=$dir.tmp/work-$flavour
    mkdir -p "$out" "$work/deb"
    log "$flavour: apt-get download $pkg ($ver)"
    (cd "$work/deb" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
    dpkg-deb -x "$work"/deb/*.deb "$work/x"
    local release=${pkg#linux-image-}
    local moddir=$work/x/lib/modules/$release
    [ -f "$work/x/boot/vmlinuz-$release" ] || die "$pkg has no /boot/vmlinuz-$release"
    cp "$work/x/boot/vmlinuz-$release" "$out/vmlinuz"
    cp "$work/x/boot/config-$release" "$out/config"
    mv "$work"/deb/*.deb "$out/"

    # The ELF inside the bzImage, checked by binutils too.
    local found
    found=$(python3 "$here/extract-vmlinux.py" "$out/vmlinuz" "$out/vmlinux") ||
        die "$flavour: cannot extract vmlinux from $pkg's bzImage"
    readelf -h "$out/vmlinux" | grep -q "Advanced Micro Devices X86-64" ||
        die "$flavour: readelf does not see an x86-64 ELF in the extracted vmlinux"
    log "$flavour: vmlinux: $found"

    # Debian ships no modules.dep (depmod runs at install): make one.
    depmod -b "$work/x" "$release" || die "$flavour: depmod failed"
    cp "$moddir/modules.dep" "$out/"
    local order
    order=$(python3 "$here/modules.py" "$moddir" "${modules[@]}") || die "$flavour: cannot resolve the modules"

    local stage=$work/stage
    mkdir -p "$stage"/{bin,sbin,dev,proc,sys,newroot,etc,lib/modules}
    cp /bin/busybox "$stage/bin/busybox"
    local applet mod
    for applet in $("$stage/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
    done
    install -m 755 "$here/init" "$stage/init"
    : >"$stage/etc/modules.order"
    for mod in $order; do
        cp "$moddir/$mod" "$stage/lib/modules/"
        basename "$mod" >>"$stage/etc/modules.order"
    done
    cp "$stage/etc/modules.order" "$out/modules.order"
    python3 "$here/../lib/mkcpio.py" "$work/initramfs.cpio" --dir "$stage" \
        --node /dev/console:c:5:1:600 --node /dev/null:c:1:3:666
    gzip -9n <"$work/initramfs.cpio" >"$out/initramfs.cpio.gz"
    rm -rf "$work"
    {
        echo "$flavour.package=$pkg $ver"
        echo "$flavour.release=$release"
        echo "$flavour.vmlinux=$found"
        echo "$flavour.modules=$(sed 's/\.ko$//' "$out/modules.order" | tr '\n' ' ' | sed 's/ $//')"
    } >>"$dir.tmp/metadata"
}

mkdir -p "$(dirname "$rdir")"
exec 9>"$(dirname "$dir")/.lock"
flock 9
if [ ! -f "$dir/rootfs.ext4" ]; then
    start=$(date +%s)
    [ -f "$rdir/rootfs.ext4" ] || "$here/rootfs.sh" "$rdir"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    echo "busybox-static=$(pkg_version busybox-static)" >"$dir.tmp/metadata"
    for id in $kernel_ids; do
        build_flavour "$id"
    done
    sed 's/^/rootfs./' "$rdir/metadata" >>"$dir.tmp/metadata"
    ln "$rdir/rootfs.ext4" "$rdir/packages.txt" "$dir.tmp/" 2>/dev/null ||
        cp --sparse=always "$rdir/rootfs.ext4" "$rdir/packages.txt" "$dir.tmp/"
    log "built in $(($(date +%s) - start)) s"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir"
