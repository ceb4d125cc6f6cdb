"""A FUSE file system with one file whose fsync is slow.

    slowfs.py BACKING_FILE MOUNTPOINT FSYNC_SECONDS

MOUNTPOINT/disk.img passes reads, writes and size changes through to
BACKING_FILE; fsync and fdatasync sleep FSYNC_SECONDS, then sync the
backing file. Prints "slowfs: ready" once mounted, and runs in the
foreground until SIGTERM or SIGINT, which unmount. Needs Debian's
python3-fusepy (libfuse2); resources/tests/slowfs.sh installs it.
Used by tests/hostile_guest.rs: a disk image here makes ember's
virtio-block FLUSH slow.
"""

import errno
import os
import stat
import sys
import time

try:
    # Debian names fusepy's module fusepy (python3-fuse owns "fuse").
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:
    from fuse import FUSE, FuseOSError, Operations

NAME = "/disk.img"


class SlowFs(Operations):
    def __init__(self, backing, delay):
        self.backing = backing
        self.delay = delay
        self.fd = os.open(backing, os.O_RDWR)

    def init(self, path):
        print("slowfs: ready", flush=True)

    def getattr(self, path, fh=None):
        now = time.time()
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2,
                        st_atime=now, st_mtime=now, st_ctime=now)
        if path != NAME:
            raise FuseOSError(errno.ENOENT)
        st = os.fstat(self.fd)
        return dict(st_mode=stat.S_IFREG | 0o644, st_nlink=1,
                    st_size=st.st_size, st_atime=st.st_atime,
                    st_mtime=st.st_mtime, st_ctime=st.st_ctime)

    def readdir(self, path, fh):
        if path != "/":
            raise FuseOSError(errno.ENOTDIR)
        return [".", "..", NAME[1:]]

    def open(self, path, flags):
        if path != NAME:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path, length, fh=None):
        os.ftruncate(self.fd, length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        time.sleep(self.delay)
        if datasync:
            os.fdatasync(self.fd)
        else:
            os.fsync(self.fd)
        return 0


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: slowfs.py BACKING_FILE MOUNTPOINT FSYNC_SECONDS")
    backing, mountpoint, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    FUSE(SlowFs(backing, delay), mountpoint, foreground=True, nothreads=False)


if __name__ == "__main__":
    main()
