"""The disk seam: every file-system call the WAL and snapshots make goes through a Disk.

Why a seam: full disks, I/O errors and short writes are rare in production and impossible
to provoke on demand, so tests replace this object (tests/persist/faults.py) and inject
ENOSPC, EIO or short writes at exactly the call they want. Production code never calls
os.write/os.fsync on WAL or snapshot files directly.

Contract: each method behaves like the os function of the same name (raising OSError with
the errno), except that write() may return fewer bytes than given (a short write, as the
OS may) and callers must loop; write_all() does that loop.
"""
import mmap
import os


class Disk:
    """Plain pass-through to the os module."""

    def open(self, path, flags, mode=0o644):
        return os.open(path, flags, mode)

    def close(self, fd):
        os.close(fd)

    def pwrite(self, fd, data, offset):
        return os.pwrite(fd, data, offset)

    def pwrite_all(self, fd, data, offset):
        """Write all of data at offset, looping over short writes."""
        view = memoryview(data)
        while view:
            n = self.pwrite(fd, view, offset)
            if n <= 0:  # a zero-byte write would loop for ever: treat as an I/O error
                raise OSError(5, "write returned 0")
            view = view[n:]
            offset += n

    def fsync(self, fd):
        os.fsync(fd)

    def fdatasync(self, fd):
        os.fdatasync(fd)

    def fallocate(self, fd, offset, length):
        """Reserve space so later writes into [offset, offset+length) cannot hit ENOSPC."""
        os.posix_fallocate(fd, offset, length)

    def map(self, fd, length):
        """A shared, writable mapping of the first length bytes of fd (an mmap.mmap)."""
        return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def ftruncate(self, fd, length):
        os.ftruncate(fd, length)

    def rename(self, src, dst):
        os.rename(src, dst)

    def unlink(self, path):
        os.unlink(path)

    def fsync_dir(self, path):
        """Make a create/rename/unlink in directory path durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path):
        with open(path, "rb") as f:
            return f.read()
