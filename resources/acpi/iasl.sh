#!/usr/bin/env bash
# Prints the path of iasl (Debian package acpica-tools), installing the
# package first when it is missing and we are root (as CI is); otherwise
# fails naming the package. Used by tests/acpi_iasl.rs.
#   resources/acpi/iasl.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EMBER_SCRIPT_NAME=acpi/iasl.sh
# shellcheck source=../lib/common.sh
. "$here/../lib/common.sh"
if ! command -v iasl >/dev/null; then
    need_packages acpica-tools
fi
command -v iasl || die "acpica-tools is installed but iasl is not on PATH"
