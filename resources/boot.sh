#!/usr/bin/env bash
# Boot the default guest under ember with its console on this terminal.
#
#   resources/boot.sh [EMBER RUN OPTIONS...]      e.g. --cpus 2 --memory 512M
#
# Builds (once, cached) the default guest and ember (release), then runs
#   ember run --kernel vmlinux --initrd initramfs.cpio.gz [OPTIONS...]
# directly when this host's KVM boots Linux (VMX/SVM), or inside the nested
# lab otherwise (docs/LAB.md). The guest gives a shell; `exit` ends the VM.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=boot.sh
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

guest=$("$here/guest/build.sh")
(cd "$here/.." && cargo build --release --quiet) || die "cargo build --release failed"
ember=$EMBER_RELEASE

if host_kvm_is_hardware; then
    exec "$ember" run --kernel "$guest/vmlinux" --initrd "$guest/initramfs.cpio.gz" "$@"
fi

# In the lab: the arguments, single-quoted for the lab's sh.
quoted=""
for arg in "$@"; do
    quoted="$quoted '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
done
script=$(mktemp)
trap 'rm -f "$script"' EXIT
echo "exec ./ember run --kernel vmlinux --initrd initramfs.cpio.gz $quoted" >"$script"
"$here/lab/run.sh" --interactive --timeout 86400 --memory "${EMBER_LAB_MEMORY:-3G}" \
    --file "$ember" --file "$guest/vmlinux" --file "$guest/initramfs.cpio.gz" "$script"
