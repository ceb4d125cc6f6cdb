#!/usr/bin/env bash
# Serves one file through FUSE with a slow fsync/fdatasync (see
# slowfs.py), installing Debian's python3-fusepy first when it is missing
# and we are root (as CI is); otherwise fails naming the package. Used by
# tests/hostile_guest.rs.
#   resources/tests/slowfs.sh BACKING_FILE MOUNTPOINT FSYNC_SECONDS
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=tests/slowfs.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"
[ $# -eq 3 ] || die "usage: slowfs.sh BACKING_FILE MOUNTPOINT FSYNC_SECONDS"
need_packages python3-fusepy
# Debian's python3, which sees Debian's python3-fusepy (a python3 earlier
# on PATH, such as a pyenv one, would not).
exec /usr/bin/python3 "$here/slowfs.py" "$@"
