#!/usr/bin/env python3
"""Extract the ELF vmlinux from a bzImage and say what it is.

    extract-vmlinux.py BZIMAGE OUT

The boot protocol header (2.08+) gives the compressed payload's place:
payload_offset (0x248) counts from the protected-mode code, which starts
after the (setup_sects + 1) 512-byte sectors, and payload_length (0x24c)
covers the compressed stream plus 4 bytes: the uncompressed size, little
endian (the kernel build's *_with_size rules), which this checks. The
format is told by its magic: xz, zstd, lz4 (legacy frames), gzip, bzip2 or
lzma. The result must be a 64-bit x86 ELF. Prints one line:

    compression=xz size=65906612 pvh=yes pvh_entry=0x1000000

pvh says whether a PT_NOTE segment carries XEN_ELFNOTE_PHYS32_ENTRY (type 18,
name "Xen"): the PVH entry point, given as a 32-bit physical address.
"""

import bz2
import gzip
import lzma
import shutil
import struct
import subprocess
import sys

XEN_ELFNOTE_PHYS32_ENTRY = 18


def die(msg):
    sys.exit(f"extract-vmlinux: error: {msg}")


def run_tool(argv, data):
    if shutil.which(argv[0]) is None:
        die(f"{argv[0]} is needed to decompress this kernel (Debian package: {argv[0]})")
    out = subprocess.run(argv, input=data, capture_output=True)
    if out.returncode != 0:
        die(f"{' '.join(argv)} failed: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout


# (name, magic, decompress(stream without the size suffix))
FORMATS = [
    ("xz", b"\xfd7zXZ\x00", lambda d: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d)),
    ("zstd", b"\x28\xb5\x2f\xfd", lambda d: run_tool(["zstd", "-dcq"], d)),
    ("lz4", b"\x02\x21\x4c\x18", lambda d: run_tool(["lz4", "-dcq"], d)),
    ("gzip", b"\x1f\x8b", gzip.decompress),
    ("bzip2", b"BZh", bz2.decompress),
    ("lzma", b"\x5d\x00\x00", lambda d: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(d)),
]


def payload(image):
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        die("not a bzImage (no HdrS boot protocol header)")
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        die(f"boot protocol {version >> 8}.{version & 0xff} has no payload fields (needs 2.08)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length < 8 or start + length > len(image):
        die(f"payload {start:#x}+{length:#x} lies outside the {len(image)}-byte image")
    return image[start : start + length]


def pvh_entry(elf):
    """The PVH entry address from the ELF's notes, or None."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, at)
            name = elf[at + 12 : at + 12 + namesz].rstrip(b"\0")
            desc_at = at + 12 + ((namesz + 3) & ~3)
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                width = "<I" if descsz == 4 else "<Q"
                return struct.unpack_from(width, elf, desc_at)[0]
            at = desc_at + ((descsz + 3) & ~3)
    return None


def main():
    if len(sys.argv) != 3:
        die("usage: extract-vmlinux.py BZIMAGE OUT")
    with open(sys.argv[1], "rb") as f:
        data = payload(f.read())
    (size,) = struct.unpack("<I", data[-4:])
    for name, magic, decompress in FORMATS:
        if data.startswith(magic):
            break
    else:
        die(f"unknown compression (payload starts {data[:6].hex()})")
    try:
        elf = decompress(data[:-4])
    except (lzma.LZMAError, OSError, EOFError) as e:
        die(f"{name} payload does not decompress: {e}")
    if len(elf) != size:
        die(f"{name} payload gave {len(elf)} bytes, the image says {size}")
    # 64-bit, little endian, x86-64 (e_machine 62).
    if elf[:6] != b"\x7fELF\x02\x01" or struct.unpack_from("<H", elf, 0x12)[0] != 62:
        die(f"the {name} payload is not a 64-bit x86 ELF")
    with open(sys.argv[2], "wb") as f:
        f.write(elf)
    entry = pvh_entry(elf)
    pvh = "no" if entry is None else f"yes pvh_entry={entry:#x}"
    print(f"compression={name} size={size} pvh={pvh}")


if __name__ == "__main__":
    main()
