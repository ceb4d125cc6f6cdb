#!/usr/bin/env bash
# Run a shell script somewhere with a KVM that boots stock Linux guests, and
# exit with the script's status.
#
#   resources/lab/run.sh [--timeout SECS] [--memory SIZE] [--interactive]
#                        [--mode auto|lab|host] [--file SRC[=DEST]]... SCRIPT
#
# Modes (EMBER_LAB_MODE or --mode; auto is the default):
#   host  the host's /dev/kvm is hardware virtualization (kvm_intel/kvm_amd,
#         no kvm_pvm): SCRIPT runs here, in a temporary directory holding the
#         files.
#   lab   an L1 VM under QEMU TCG with emulated AMD SVM (EPYC-v3,+svm,+npt,
#         2 vCPUs, 3 GiB), Debian's 6.12 kernel with kvm-amd: SCRIPT runs as
#         root in /lab, the files beside it. auto picks lab when the host's
#         KVM is PVM or absent.
# --file SRC puts SRC in the script's directory; SRC=/ABS/PATH puts it at that
# path in the lab (ignored in host mode, where it is already there). A
# dynamically linked executable brings the libraries `ldd` lists.
# The script's stdout and stderr stream on stdout. The lab says which mode it
# used, and what went wrong with the lab itself, on stderr.
#
# Exit status: the script's; 124 when the script passes --timeout; 125 when
# the lab itself failed (kernel panic, no progress, KVM not loading) twice:
# the lab is retried once in a fresh VM, after a line
# "==== lab: retrying in a fresh lab: REASON ====" on stdout.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=lab
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"

timeout=600 memory=3G interactive=0 mode=${EMBER_LAB_MODE:-auto}
files=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout=${2:?--timeout needs SECS}; shift 2 ;;
        --memory) memory=${2:?--memory needs a size}; shift 2 ;;
        --interactive) interactive=1; shift ;;
        --mode) mode=${2:?--mode needs auto, lab or host}; shift 2 ;;
        --file) files+=("${2:?--file needs a path}"); shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
[ $# = 1 ] || die "usage: run.sh [options] SCRIPT (see --help)"
script=$1
[ -r "$script" ] || die "cannot read the script $script"
case "$timeout" in '' | *[!0-9]*) die "--timeout takes whole seconds, not '$timeout'" ;; esac

if [ "$mode" = auto ]; then
    if host_kvm_is_hardware; then mode=host; else mode=lab; fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-lab.XXXXXX")
trap '[ -n "${EMBER_LAB_KEEP:-}" ] || rm -rf "$tmp"' EXIT

if [ "$mode" = host ]; then
    host_kvm_is_hardware || die "--mode host needs a VMX/SVM /dev/kvm (kvm_intel or kvm_amd loaded, not kvm_pvm)"
    log "mode=host (the host's KVM uses hardware virtualization)"
    for spec in "${files[@]}"; do
        case "$spec" in *=/*) continue ;; esac
        cp -L "$spec" "$tmp/"
    done
    cp "$script" "$tmp/script"
    set +e
    (cd "$tmp" && LAB_DIR=$tmp timeout -s KILL "$timeout" sh ./script)
    rc=$?
    [ $rc = 137 ] && { log "the script ran past its ${timeout}s deadline"; rc=124; }
    exit $rc
fi
[ "$mode" = lab ] || die "--mode takes auto, lab or host, not '$mode'"

labdir=$("$here/prepare.sh")
log "mode=lab (QEMU TCG, EPYC-v3 with SVM, kernel $(tr '\n' ' ' <"$labdir/version"))"

# The run's own files: a second cpio archive, appended to the base one.
stage=$tmp/stage
mkdir -p "$stage/lab"
add_libs() {
    local lib
    for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
        [ -e "$stage$lib" ] && continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}
for spec in "${files[@]}"; do
    src=${spec%%=*} dest=/lab/$(basename "${spec%%=*}")
    case "$spec" in *=/*) dest=${spec#*=} ;; esac
    [ -r "$src" ] || die "cannot read --file $src"
    mkdir -p "$stage$(dirname "$dest")"
    cp -L "$src" "$stage$dest"
    if head -c 4 "$src" | grep -q "ELF" && ldd "$src" >/dev/null 2>&1; then add_libs "$src"; fi
done
cp "$script" "$stage/lab/script"
python3 "$here/../lib/mkcpio.py" "$tmp/run.cpio" --dir "$stage"
cat "$labdir/base.cpio" "$tmp/run.cpio" >"$tmp/lab.cpio"
rm -rf "$stage" "$tmp/run.cpio"

# Deadline for the whole lab: the script's own, plus boot and shutdown. The
# lab enforces the script's deadline itself; passing this one means the lab
# stopped making progress.
outer=$((timeout + 90))

run_lab() {
    local ctl=$tmp/control
    : >"$ctl"
    local chardev=(-chardev stdio,id=con,signal=off)
    local cmdline="console=ttyS1 loglevel=${EMBER_LAB_LOGLEVEL:-4} panic=-1 lab.timeout=$timeout"
    [ $interactive = 1 ] && cmdline="$cmdline lab.interactive=1"
    set +e
    if [ $interactive = 1 ]; then
        # --foreground: QEMU stays in the terminal's foreground process
        # group, or its first terminal access would stop it (SIGTTOU).
        timeout --foreground -s KILL "$outer" qemu-system-x86_64 \
            -accel tcg,thread=${EMBER_LAB_TCG_THREAD:-multi} -cpu EPYC-v3,+svm,+npt -smp 2 -m "$memory" \
            -nodefaults -no-user-config -display none -no-reboot \
            -kernel "$labdir/vmlinuz" -initrd "$tmp/lab.cpio" -append "$cmdline" \
            "${chardev[@]}" -serial chardev:con -chardev file,id=ctl,path="$ctl" -serial chardev:ctl 2>"$tmp/qemu.err"
    else
        timeout -s KILL "$outer" qemu-system-x86_64 \
            -accel tcg,thread=${EMBER_LAB_TCG_THREAD:-multi} -cpu EPYC-v3,+svm,+npt -smp 2 -m "$memory" \
            -nodefaults -no-user-config -display none -no-reboot \
            -kernel "$labdir/vmlinuz" -initrd "$tmp/lab.cpio" -append "$cmdline" \
            "${chardev[@]}" -serial chardev:con -chardev file,id=ctl,path="$ctl" -serial chardev:ctl </dev/null 2>"$tmp/qemu.err"
    fi
    local qrc=$?
    set -e
    # TCG lacks a few of EPYC's features and says so at every start: noise.
    grep -v "TCG doesn't support requested feature" "$tmp/qemu.err" >&2 || true
    status=$(sed -n 's/^EMBER-LAB-EXIT \([0-9]*\).*/\1/p' "$ctl" | tail -n 1)
    failure=""
    if grep -q "Kernel panic" "$ctl"; then
        failure="the lab kernel panicked: $(grep -m1 'Kernel panic' "$ctl" | tr -d '\r')"
    elif grep -q "^EMBER-LAB-FAIL" "$ctl"; then
        failure=$(sed -n 's/^EMBER-LAB-FAIL //p' "$ctl" | head -n 1)
    elif [ -z "$status" ] && [ $qrc = 137 ]; then
        if grep -q "^EMBER-LAB-UP" "$ctl"; then
            failure="the lab stopped making progress (no result ${outer}s after start)"
        else
            failure="the lab did not come up within ${outer}s"
        fi
    elif [ -z "$status" ]; then
        failure="QEMU ended (status $qrc) without a result from the lab"
    fi
}

# One lab at a time on this machine: two would share 2 cores and skew both.
exec 8>"${TMPDIR:-/tmp}/ember-lab.lock"
flock 8
show_failure() {
    log "lab failure: $failure"
    local keep
    keep=$(ember_cache lab-failures)/$(date +%Y%m%d-%H%M%S)-$$.log
    mkdir -p "$(dirname "$keep")" && cp "$tmp/control" "$keep" || keep="(not kept)"
    log "the lab's control channel (first report; all of it in $keep):"
    { grep -m1 -B2 -A25 -E "BUG:|Oops|general protection|Kernel panic" "$tmp/control" ||
        tail -n 15 "$tmp/control"; } | tr -d '\r' | sed 's/^/    /' >&2
}
run_lab
if [ -n "$failure" ] && [ $interactive = 0 ]; then
    show_failure
    log "retrying once in a fresh lab"
    echo "==== lab: retrying in a fresh lab: $failure ===="
    run_lab
fi
if [ -n "$failure" ]; then
    show_failure
    exit 125
fi
exit "$status"
