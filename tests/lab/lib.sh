# Helpers for the lab scripts (sourced: `. ./lib.sh`; tests/common/lab.rs
# puts this file beside every script).

# drive CMDS_FILE EMBER_RUN_ARGS...
# Runs `ember run EMBER_RUN_ARGS...` with its stdin on a pipe; once the
# guest's shell is up (the default init's "interactive shell" line), types
# the lines of CMDS_FILE into it. Prints everything ember printed and returns
# ember's exit status (137 when killed after 90 s).
drive() {
    cmds=$1
    shift
    rm -f /tmp/drive.in /tmp/drive.out
    mkfifo /tmp/drive.in
    (
        i=0
        until grep -q "interactive shell" /tmp/drive.out 2>/dev/null || [ $i -ge 600 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        cat "$cmds"
        sleep 30
    ) >/tmp/drive.in &
    timeout -s KILL 90 ./ember run "$@" </tmp/drive.in >/tmp/drive.out 2>&1
    rc=$?
    cat /tmp/drive.out
    return $rc
}
