#!/usr/bin/env python3
"""Write a newc cpio archive (the initramfs format) from a staging directory.

No root needed: every entry is owned by root, mtimes are zero (so the archive
is reproducible), and device nodes the staging directory cannot hold are added
with --node. Usage:

    mkcpio.py OUT.cpio --dir STAGING [--node /dev/console:c:5:1:600] ...
"""

import argparse
import os
import stat
import sys


class Writer:
    """Appends newc entries to a binary file."""

    def __init__(self, out):
        self.out = out
        self.ino = 1

    def _pad(self, length):
        self.out.write(b"\0" * ((4 - length % 4) % 4))

    def entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        fields = [
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0,
            rdev[0], rdev[1], len(name_b), 0,
        ]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + name_b)
        self._pad(len(header) + len(name_b))
        self.out.write(data)
        self._pad(len(data))

    def trailer(self):
        self.ino = 0
        self.entry("TRAILER!!!", 0)


def add_tree(writer, root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir != ".":
            st = os.lstat(dirpath)
            writer.entry(rel_dir, stat.S_IFDIR | stat.S_IMODE(st.st_mode), nlink=2)
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                writer.entry(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    writer.entry(rel, stat.S_IFREG | stat.S_IMODE(st.st_mode), f.read())
            else:
                sys.exit(f"mkcpio: {path}: unsupported file type")


def add_node(writer, spec):
    try:
        path, kind, major, minor, mode = spec.split(":")
        ftype = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[kind]
        writer.entry(path.lstrip("/"), ftype | int(mode, 8), rdev=(int(major), int(minor)))
    except (ValueError, KeyError):
        sys.exit(f"mkcpio: bad --node {spec!r} (want PATH:c|b:MAJOR:MINOR:MODE)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--dir", required=True, help="staging directory")
    parser.add_argument("--node", action="append", default=[], help="PATH:c|b:MAJOR:MINOR:MODE")
    args = parser.parse_args()
    with open(args.out, "wb") as out:
        writer = Writer(out)
        add_tree(writer, args.dir)
        for spec in args.node:
            add_node(writer, spec)
        writer.trailer()


if __name__ == "__main__":
    main()
