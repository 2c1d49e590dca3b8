"""A Disk whose calls fail on demand: ENOSPC, EIO and short writes, per method."""
import errno
import os

from queues.persist.disk import Disk


class FaultyDisk(Disk):
    """fail(method, errno_, times=None) makes the next `times` calls (None = all, until
    heal()) of `method` raise OSError(errno_). short_writes(n) makes pwrite write at
    most n bytes per call."""

    def __init__(self):
        self.faults = {}
        self.max_write = None
        self.calls = {}

    def fail(self, method, errno_, times=None):
        self.faults[method] = [errno_, times]

    def heal(self, method=None):
        if method is None:
            self.faults.clear()
        else:
            self.faults.pop(method, None)

    def short_writes(self, n):
        self.max_write = n

    def _check(self, method):
        self.calls[method] = self.calls.get(method, 0) + 1
        fault = self.faults.get(method)
        if fault is None:
            return
        code, times = fault
        if times is not None:
            if times <= 0:
                return
            fault[1] = times - 1
        raise OSError(code, f"injected {errno.errorcode[code]} in {method}")

    def open(self, path, flags, mode=0o644):
        self._check("open")
        return super().open(path, flags, mode)

    def pwrite(self, fd, data, offset):
        self._check("pwrite")
        if self.max_write is not None:
            data = bytes(data[: self.max_write])
        return super().pwrite(fd, data, offset)

    def fsync(self, fd):
        self._check("fsync")
        super().fsync(fd)

    def fdatasync(self, fd):
        self._check("fdatasync")
        super().fdatasync(fd)

    def fallocate(self, fd, offset, length):
        self._check("fallocate")
        super().fallocate(fd, offset, length)

    def ftruncate(self, fd, length):
        self._check("ftruncate")
        super().ftruncate(fd, length)

    def rename(self, src, dst):
        self._check("rename")
        super().rename(src, dst)


def tree_state(root):
    """{relative path: bytes} of every file under root (to prove nothing changed)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out
