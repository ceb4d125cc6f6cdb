# Shared helpers for ember's resource scripts (sourced, not run).
#
# - ember_cache DIR...   prints $XDG_CACHE_HOME/ember/DIR (default ~/.cache)
# - need_packages PKG... installs missing Debian packages when root,
#                        otherwise fails naming them
# - hash_inputs FILE...  prints a short hash of the files' contents and of
#                        any extra strings given in $HASH_EXTRA
# - die MSG              prints "NAME: error: MSG" and exits 1
# - host_kvm_is_hardware  true when /dev/kvm uses VMX/SVM (kvm_intel or
#                        kvm_amd loaded, not PVM): stock Linux boots here
# - EMBER_RELEASE        the release binary `cargo build --release` makes
#                        (static, in target/x86_64-unknown-linux-gnu: see
#                        .cargo/config.toml)

EMBER_SCRIPT_NAME=${EMBER_SCRIPT_NAME:-$(basename "$0")}
EMBER_RELEASE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/x86_64-unknown-linux-gnu/release/ember

die() {
    echo "$EMBER_SCRIPT_NAME: error: $*" >&2
    exit 1
}

log() {
    echo "$EMBER_SCRIPT_NAME: $*" >&2
}

ember_cache() {
    local base=${XDG_CACHE_HOME:-}
    if [ -z "$base" ]; then
        [ -n "${HOME:-}" ] || die "neither XDG_CACHE_HOME nor HOME is set: no place for the cache"
        base=$HOME/.cache
    fi
    echo "$base/ember/$*"
}

need_packages() {
    command -v dpkg-query >/dev/null ||
        die "not a Debian-like host (no dpkg-query); install the equivalents of: $*"
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
    fi
    log "installing ${missing[*]}"
    # A flock keeps two scripts from running apt-get at once.
    (
        flock 9
        export DEBIAN_FRONTEND=noninteractive
        apt-get -q update >&2 &&
            apt-get -q install -y --no-install-recommends "${missing[@]}" >&2
    ) 9>/tmp/ember-apt.lock || die "apt-get install ${missing[*]} failed"
}

hash_inputs() {
    { cat "$@"; printf '%s\n' "${HASH_EXTRA:-}"; } | sha256sum | cut -c1-16
}

# pkg_version PKG: the installed version of a Debian package.
pkg_version() {
    dpkg-query -W -f='${Version}' "$1"
}

host_kvm_is_hardware() {
    [ -c /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] &&
        { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }
}
