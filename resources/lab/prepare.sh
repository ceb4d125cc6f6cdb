#!/usr/bin/env bash
# Build (once) the nested lab's L1 kernel and base initramfs into the cache
# and print the directory: $XDG_CACHE_HOME/ember/lab/<hash>/ with
#   vmlinuz     Debian's linux-image kernel from bookworm-backports (6.12)
#   base.cpio   busybox, the lab init, stamp (line time-stamper, stamp.c),
#               kvmhold (kvmhold.c) and the decompressed KVM modules
#   version     the kernel package's name and version
# The kernel package is fetched with `apt-get download` through a private
# apt configuration in the cache (the system's sources are left alone),
# pointing at the same archive as the system's bookworm entry. See docs/LAB.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=lab/prepare.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

need_packages qemu-system-x86 busybox-static xz-utils python3 apt gcc libc6-dev

HASH_EXTRA="busybox-static $(pkg_version busybox-static)"
hash=$(hash_inputs "$here/init" "$here/prepare.sh" "$here/stamp.c" "$here/kvmhold.c" "$here/../lib/mkcpio.py")
dir=$(ember_cache lab/"$hash")
mkdir -p "$(dirname "$dir")"
exec 9>"$(dirname "$dir")/.lock"
flock 9
if [ -f "$dir/base.cpio" ]; then
    echo "$dir"
    exit 0
fi

tmp=$dir.tmp
rm -rf "$tmp" && mkdir -p "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/deb"

# The archive that serves the system's bookworm suite also serves backports.
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk '$2 == "bookworm" { print $1; exit }')
[ -n "$mirror" ] || die "no apt source for Debian bookworm is configured: the lab kernel comes from bookworm-backports"
echo "deb $mirror bookworm-backports main" >"$tmp/apt/sources.list"
apt_opts=(-q -o Dir::Etc::SourceList="$tmp/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o Dir::State::Lists="$tmp/apt/lists" -o Dir::Cache="$tmp/apt/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root)
log "fetching the lab kernel from bookworm-backports"
apt-get "${apt_opts[@]}" update >&2 || die "apt-get update for bookworm-backports failed"
# linux-image-amd64 in backports depends on the versioned 6.12 image package.
pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$pkg" ] || die "bookworm-backports has no linux-image-amd64 dependency to follow"
(cd "$tmp/deb" && apt-get "${apt_opts[@]}" download "$pkg" >&2) || die "apt-get download $pkg failed"
dpkg-deb -x "$tmp"/deb/*.deb "$tmp/x"
ver=${pkg#linux-image-}
cp "$tmp/x/boot/vmlinuz-$ver" "$tmp/vmlinuz"
dpkg-deb -f "$tmp"/deb/*.deb Package Version >"$tmp/version"

stage=$tmp/stage
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lab,lib/modules/lab}
cp /bin/busybox "$stage/bin/busybox"
for applet in $("$stage/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
done
install -m 755 "$here/init" "$stage/init"
for tool in stamp kvmhold; do
    gcc -O2 -static -Wall -o "$stage/bin/$tool" "$here/$tool.c" || die "cannot build $tool.c"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
# Debian ships no modules.dep for this use: load by path, in dependency order.
for mod in virt/lib/irqbypass arch/x86/kvm/kvm drivers/crypto/ccp/ccp arch/x86/kvm/kvm-amd; do
    xz -dc "$tmp/x/lib/modules/$ver/kernel/$mod.ko.xz" >"$stage/lib/modules/lab/${mod##*/}.ko" ||
        die "module $mod missing from $pkg"
done
python3 "$here/../lib/mkcpio.py" "$tmp/base.cpio" --dir "$stage" \
    --node /dev/console:c:5:1:600 --node /dev/null:c:1:3:666
rm -rf "$tmp/x" "$tmp/stage" "$tmp/deb" "$tmp/apt"
rm -rf "$dir" && mv "$tmp" "$dir"
echo "$dir"
