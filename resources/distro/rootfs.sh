#!/usr/bin/env bash
# Build the distribution guests' Debian 12 root disk into OUTDIR (called by
# resources/distro/build.sh, which caches it; see docs/GUEST.md):
#
#   resources/distro/rootfs.sh OUTDIR
#
# OUTDIR gets
#   rootfs.ext4    a 1 GiB sparse ext4 image (label ember-debian): bookworm,
#                  minbase + systemd, systemd-sysv, udev, dbus, kmod; the
#                  serial consoles (ttyS0, hvc0) log in as root at once;
#                  hostname ember-debian; / is /dev/vda; boots to
#                  multi-user.target; no network
#   packages.txt   every installed package and its version
#   metadata       suite, mirror, mmdebstrap's version, the image's size
# mmdebstrap builds the tree in a chroot, which needs root; mkfs.ext4 -d then
# fills the image from that directory, with no mounts.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=distro/rootfs.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

[ $# = 1 ] || die "usage: rootfs.sh OUTDIR"
out=$1
[ "$(id -u)" = 0 ] || die "building the root disk needs root (mmdebstrap's chroot): run resources/distro/build.sh as root once, later runs reuse the cache"
need_packages mmdebstrap e2fsprogs

suite=bookworm
disk_mib=1024
hostname=ember-debian
packages=systemd,systemd-sysv,udev,dbus,kmod
# The archive the system uses for bookworm (the system's sources are left
# alone; mmdebstrap gets its own list).
# shellcheck disable=SC2016 # apt's own $(...) fields
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk -v s="$suite" '$2 == s { print $1; exit }')
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian/

tmp=$out.tmp
rm -rf "$tmp" && mkdir -p "$tmp"
root=$tmp/root
log "mmdebstrap $suite ($packages) from $mirror: a few minutes"
# No documentation, manual pages or translations: a smaller disk.
mmdebstrap --mode=root --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$suite" "$root" "deb $mirror $suite main" >&2 ||
    die "mmdebstrap $suite failed"

# --- configuration: plain files, no chroot ---
echo "$hostname" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    "$hostname" >"$root/etc/hosts"
printf '# <device> <mount point> <type> <options> <dump> <pass>\n/dev/vda / ext4 rw,errors=remount-ro 0 1\n' \
    >"$root/etc/fstab"
# root logs in without a password; the serial getty logs it in at once.
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
mkdir -p "$root/etc/systemd/system/serial-getty@.service.d"
cat >"$root/etc/systemd/system/serial-getty@.service.d/autologin.conf" <<'EOF'
# ember: log in as root on the serial consoles (ttyS0, hvc0) at once.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
# Bash would wrap every prompt in bracketed-paste escapes.
echo "set enable-bracketed-paste off" >"$root/root/.inputrc"
# A micro VM has no display and no network: no getty on tty1 (systemd's
# getty generator starts one on the kernel's console= and on hvc0 when it
# exists), no apt timers.
rm -f "$root/etc/systemd/system/getty.target.wants/getty@tty1.service"
# A server: boot to multi-user.target (Debian's default is graphical.target).
ln -sfn /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
for unit in apt-daily.timer apt-daily-upgrade.timer; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
done

dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package} ${Version}\n' >"$tmp/packages.txt"
{
    echo "suite=$suite"
    echo "mirror=$mirror"
    echo "mmdebstrap=$(pkg_version mmdebstrap)"
    echo "packages=$packages"
    echo "installed=$(wc -l <"$tmp/packages.txt") (packages.txt)"
    echo "hostname=$hostname"
    echo "disk_mib=$disk_mib"
    echo "used_kib=$(du -sk "$root" | cut -f1)"
} >"$tmp/metadata"
mkfs.ext4 -q -F -L "$hostname" -d "$root" "$tmp/rootfs.ext4" "${disk_mib}M" >&2 ||
    die "mkfs.ext4 -d failed"
rm -rf "$root"
rm -rf "$out" && mv "$tmp" "$out"
