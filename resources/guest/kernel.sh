#!/usr/bin/env bash
# Build the default guest's kernel into OUTDIR (called by build.sh, which
# caches OUTDIR under the hash of this script and the fragments):
#
#   resources/guest/kernel.sh OUTDIR [FRAGMENT...]
#
# Debian's linux-source-6.1, `make tinyconfig`, kernel.config and then each
# FRAGMENT merged in (a later line for the same option wins: kernel-hvc.config
# turns the 8250 UART off), `make olddefconfig`, a check that every option's
# final value survived, then vmlinux and bzImage. Writes
# OUTDIR/{vmlinux,bzImage,kernel.config}.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=guest/kernel.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"
[ $# -ge 1 ] || die "usage: kernel.sh OUTDIR [FRAGMENT...]"
kdir=$1
shift
fragments=("$here/kernel.config" "$@")
jobs=$(nproc)
tree=$kdir.build
rm -rf "$tree" && mkdir -p "$tree"
log "building the guest kernel in $tree (about 5 minutes on 2 cores)"
tar -xf /usr/src/linux-source-6.1.tar.xz -C "$tree" --strip-components=1
make -s -C "$tree" tinyconfig >/dev/null
(cd "$tree" && scripts/kconfig/merge_config.sh -m .config "${fragments[@]}" >/dev/null)
make -s -C "$tree" olddefconfig >/dev/null
# Every option's final line in the fragments must survive olddefconfig: a
# dropped option (a missing dependency) would otherwise pass silently. An
# option "not set" may also be absent (its dependencies are off).
lost=0
while IFS= read -r line; do
    case "$line" in
        "# CONFIG_"*) sym=${line#\# } && ! grep -q "^${sym%% *}=" "$tree/.config" ;;
        *) grep -qxF "$line" "$tree/.config" ;;
    esac || { log "fragments: '$line' did not survive olddefconfig"; lost=1; }
done < <(cat "${fragments[@]}" | sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*\)=.*/\1 &/p' \
    -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1 &/p' | awk '{ k = $1; sub(/^[^ ]* /, ""); v[k] = $0 } END { for (k in v) print v[k] }')
[ $lost = 0 ] || die "the kernel configuration lost options (see above)"
make -C "$tree" -j"$jobs" vmlinux bzImage >"$tree.log" 2>&1 ||
    { tail -n 30 "$tree.log" >&2; die "kernel build failed (log: $tree.log)"; }
mkdir -p "$kdir.tmp"
cp "$tree/vmlinux" "$tree/arch/x86/boot/bzImage" "$kdir.tmp/"
cp "$tree/.config" "$kdir.tmp/kernel.config"
rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
rm -rf "$tree" "$tree.log"
