#!/bin/sh
# Builds the boot-timer tiny guest (boot-timer.S) into OUT (default
# target/tiny-guest/boot-timer.elf) and prints its path.
#   resources/tiny-guest/build.sh [OUT]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../target/tiny-guest/boot-timer.elf}
mkdir -p "$(dirname "$out")"
as --64 "$here/boot-timer.S" -o "$out.o"
# The note right after the code: otherwise ld puts it at its default base
# (4 MiB) and loading it touches guest RAM there.
ld -m elf_x86_64 -N -Ttext=0x100000 --section-start=.note.Xen=0x100800 -e _start \
    --no-warn-rwx-segments "$out.o" -o "$out"
rm -f "$out.o"
echo "$out"
