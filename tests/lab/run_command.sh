# Runs in the lab: `ember run ... -- CMD` with the default guest (issue 6).
# Cases (each between "=== CASE NAME" and "=== END NAME status=N"; ember's
# stderr is in the case's output too):
#   exit7    --boot-timeout 60 -- sh -c 'exit 7' (the init reports booting)
#   true     -- true, with no --kernel: the default guest from
#            $XDG_CACHE_HOME/ember/default-guest
#   args     arguments with spaces, quotes, an empty one, non-ASCII, newline
#   lines    a command printing 10,000 lines
#   share    --share DIR with a script; the guest runs it
#   sharerw  --share DIR,rw: files the guest writes appear on the host
#   timeout  --timeout 5 -- sleep 60 (also prints "elapsed=SECONDS")
#   panic    -- sh -c 'echo c > /proc/sysrq-trigger'
#   nostatus -- reboot -f: the guest resets without reporting a status
set -u
PATH=/lab:$PATH
ember() { timeout -s KILL 120 ./ember "$@" </dev/null 2>&1; }
run() { ember run --kernel vmlinux --initrd initramfs.cpio.gz "$@"; }

echo "=== CASE exit7"
run --boot-timeout 60 -- sh -c 'exit 7'
echo "=== END exit7 status=$?"

echo "=== CASE true"
mkdir -p /tmp/xdg/ember/default-guest
ln -sf "$PWD/vmlinux" "$PWD/initramfs.cpio.gz" /tmp/xdg/ember/default-guest/
XDG_CACHE_HOME=/tmp/xdg ember run -- true
echo "=== END true status=$?"

echo "=== CASE args"
run -- sh -c 'printf "$0:"; for a in "$@"; do printf "<%s>\n" "$a"; done' arg0 'a b' '' "it's \"q\"" 'é ü' 'x
y'
echo "=== END args status=$?"

echo "=== CASE lines"
run -- sh -c 'seq 10000 | sed "s/^/line /"'
echo "=== END lines status=$?"

mkdir -p /tmp/share/sub
cat >/tmp/share/hello.sh <<'X'
echo "hello from $(pwd) with $1"
cat sub/data.txt
exit 3
X
echo "host data" >/tmp/share/sub/data.txt
echo "=== CASE share"
run --share /tmp/share -- sh hello.sh arg1
echo "=== END share status=$?"
[ -e /tmp/share/guest.txt ] && echo "HOST-RO-NOT-COPIED FAIL" || echo "HOST-RO-NOT-COPIED ok"

echo "=== CASE sharerw"
run --share /tmp/share,rw -- sh -c 'echo "written by the guest" > guest.txt && mkdir -p new/deep && echo deep > new/deep/f && echo changed > sub/data.txt'
echo "=== END sharerw status=$?"
echo "HOST-GUEST-TXT $(cat /tmp/share/guest.txt 2>&1)"
echo "HOST-DEEP $(cat /tmp/share/new/deep/f 2>&1)"
echo "HOST-CHANGED $(cat /tmp/share/sub/data.txt 2>&1)"
echo "HOST-HELLO-KEPT $(head -1 /tmp/share/hello.sh)"

echo "=== CASE timeout"
start=$(date +%s)
run --timeout 5 -- sleep 60
rc=$?
echo "elapsed=$(($(date +%s) - start))"
echo "=== END timeout status=$rc"

echo "=== CASE panic"
run -- sh -c 'echo c > /proc/sysrq-trigger; sleep 30'
echo "=== END panic status=$?"

echo "=== CASE nostatus"
run -- reboot -f
echo "=== END nostatus status=$?"
