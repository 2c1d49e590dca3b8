"""One server per data directory: an exclusive flock on ``<data_dir>/lock``.

flock (not a pid file) so the kernel releases it when the holder dies, even by SIGKILL:
a crashed server never blocks its own restart. The holder's pid is written into the
file only to make the refusal message useful.
"""
import errno
import fcntl
import os

from .errors import DataDirLocked


class DataDirLock:
    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, "lock")
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise DataDirLocked(
                    f"data directory {os.path.dirname(self.path)} is in use by another server{who}"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the last descriptor drops the flock
