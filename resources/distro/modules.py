#!/usr/bin/env python3
"""Resolve kernel modules to a load order, from depmod's output.

    modules.py MODDIR NAME...

MODDIR is a kernel's /lib/modules/VERSION after `depmod -b`. Prints one
path per line (relative to MODDIR), every module after the modules it
depends on (modules.dep), each once, in the order the names were given. A
name built into the kernel (modules.builtin) is left out, with a note on
stderr. Fails when a name is neither, or when a soft dependency
(modules.softdep "pre:", such as ext4's crypto-crc32c) is met by nothing
in the list nor in the kernel: modprobe would have loaded it, insmod will
not, so list a module that provides it (crc32c_generic, say).
"""

import os
import sys


def die(msg):
    sys.exit(f"modules.py: error: {msg}")


def norm(name):
    return name.replace("-", "_")


def modname(path):
    base = os.path.basename(path)
    return norm(base.split(".ko")[0])


def read_lines(moddir, name):
    path = os.path.join(moddir, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.strip() and not line.startswith("#")]


def main():
    if len(sys.argv) < 3:
        die("usage: modules.py MODDIR NAME...")
    moddir, wanted = sys.argv[1], [norm(n) for n in sys.argv[2:]]
    deps = {}  # name -> (path, [dependency paths])
    for fields in read_lines(moddir, "modules.dep"):
        path = fields[0].rstrip(":")
        deps[modname(path)] = (path, fields[1:])
    if not deps:
        die(f"no modules.dep in {moddir} (run depmod -b first)")
    builtin = {modname(f[0]) for f in read_lines(moddir, "modules.builtin")}
    aliases = {}  # alias -> module names
    for fields in read_lines(moddir, "modules.alias") + read_lines(moddir, "modules.builtin.alias"):
        if fields[0] == "alias" and len(fields) == 3:
            aliases.setdefault(norm(fields[1]), set()).add(norm(fields[2]))
    softdeps = {}  # module -> names it wants loaded first
    for fields in read_lines(moddir, "modules.softdep"):
        if fields[0] == "softdep" and len(fields) > 2:
            pre = []
            for word in fields[2:]:
                if word.endswith(":"):
                    keep = word == "pre:"
                elif keep:
                    pre.append(norm(word))
            softdeps[norm(fields[1])] = pre

    order, seen = [], set()
    for name in wanted:
        if name in builtin:
            print(f"modules.py: {name} is built in", file=sys.stderr)
            continue
        if name not in deps:
            die(f"no module {name} in {moddir}")
        path, dep_paths = deps[name]
        # modules.dep lists the whole closure, the last to be loaded first.
        for p in list(reversed(dep_paths)) + [path]:
            if modname(p) not in seen:
                seen.add(modname(p))
                order.append(p)

    present = seen | builtin
    for name in seen:
        for pre in softdeps.get(name, []):
            providers = ({pre} | aliases.get(pre, set())) & present
            if not providers:
                die(f"{name} wants {pre} loaded first (modules.softdep): add a module that provides it")
    for path in order:
        print(path)


if __name__ == "__main__":
    main()
