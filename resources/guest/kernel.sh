#!/usr/bin/env bash
# Build the default guest's kernel into OUTDIR (called by build.sh, which
# caches OUTDIR under the hash of this script and kernel.config):
#
#   resources/guest/kernel.sh OUTDIR
#
# Debian's linux-source-6.1, `make tinyconfig`, kernel.config merged in,
# `make olddefconfig`, a check that every fragment line survived, then
# vmlinux and bzImage. Writes OUTDIR/{vmlinux,bzImage,kernel.config}.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=guest/kernel.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"
[ $# = 1 ] || die "usage: kernel.sh OUTDIR"
kdir=$1
jobs=$(nproc)
tree=$kdir.build
rm -rf "$tree" && mkdir -p "$tree"
log "building the guest kernel in $tree (about 5 minutes on 2 cores)"
tar -xf /usr/src/linux-source-6.1.tar.xz -C "$tree" --strip-components=1
make -s -C "$tree" tinyconfig >/dev/null
(cd "$tree" && scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >/dev/null)
make -s -C "$tree" olddefconfig >/dev/null
# Every line of the fragment must survive olddefconfig: a dropped option
# (a missing dependency) would otherwise pass silently.
lost=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_* | "# CONFIG_"*" is not set")
            grep -qxF "$line" "$tree/.config" || { log "kernel.config: '$line' did not survive olddefconfig"; lost=1; } ;;
    esac
done <"$here/kernel.config"
[ $lost = 0 ] || die "the kernel configuration lost options (see above)"
make -C "$tree" -j"$jobs" vmlinux bzImage >"$tree.log" 2>&1 ||
    { tail -n 30 "$tree.log" >&2; die "kernel build failed (log: $tree.log)"; }
mkdir -p "$kdir.tmp"
cp "$tree/vmlinux" "$tree/arch/x86/boot/bzImage" "$kdir.tmp/"
cp "$tree/.config" "$kdir.tmp/kernel.config"
rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
rm -rf "$tree" "$tree.log"
