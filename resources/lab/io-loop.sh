#!/usr/bin/env bash
# Checks the nested lab's emulated SVM against its known fault (docs/LAB.md,
# "Guests that triple-fault or spin"): boots a guest that only makes port-I/O
# exits (io-loop.S) under ember, two at a time so both L1 CPUs are busy, and
# counts the runs that do not end with the guest's own exit status 7.
#
#   resources/lab/io-loop.sh [RUNS] [EXITS]     (defaults: 10 runs, 1000000)
#
# Prints one line per run ("ok", or "FAULT: ..." with ember's stop reason)
# and "N of RUNS runs faulted". Exit status 0 when none did, 1 otherwise.
# Session 16, QEMU 7.2 TCG: 10 of 22 runs of a million exits triple-faulted
# (one VM alone: 0 of 6).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

runs=${1:-10} exits=${2:-1000000}
case "$runs$exits" in '' | *[!0-9]*) die "RUNS and EXITS are whole numbers (see the header)" ;; esac
[ "$runs" -ge 1 ] && [ "$exits" -ge 1 ] || die "RUNS and EXITS must be at least 1"
need_packages binutils

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-io-loop.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
as --64 --defsym COUNT="$exits" "$here/io-loop.S" -o "$tmp/io-loop.o"
ld -m elf_x86_64 -N -Ttext=0x100000 -e _start --no-warn-rwx-segments \
    "$tmp/io-loop.o" -o "$tmp/io-loop.elf"
(cd "$here/../.." && cargo build --release --quiet) || die "cargo build --release failed"

cat >"$tmp/script" <<SCRIPT
run=0 faults=0
while [ \$run -lt $runs ]; do
    first=\$run
    for i in 1 2; do
        [ \$run -lt $runs ] || break
        run=\$((run + 1))
        (EMBER_LOG=info timeout 600 ./ember run --kernel io-loop.elf --memory 64M \
            >out\$run 2>&1; echo "status=\$?" >>out\$run) &
    done
    wait
    i=\$first
    while [ \$i -lt \$run ]; do
        i=\$((i + 1))
        if grep -q "io-loop done" out\$i && grep -q "status=7" out\$i; then
            echo "run \$i: ok"
        else
            faults=\$((faults + 1))
            echo "run \$i: FAULT: \$(grep -v "^status=" out\$i | tr '\n' ' ') \$(grep "^status=" out\$i)"
        fi
    done
done
echo "\$faults of $runs runs faulted ($exits port-I/O exits each)"
[ \$faults = 0 ]
SCRIPT
# Last command: under `set -e` its status is the script's, and the EXIT
# trap still removes $tmp.
"$here/run.sh" --timeout $((runs * 120 + 60)) --file "$tmp/io-loop.elf" \
    --file "$EMBER_RELEASE" "$tmp/script"
