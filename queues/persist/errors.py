"""Typed errors of the persistence layer; all derive from queues' root, QueueError.

Each carries ``code`` and ``http_status`` as queues.errors' classes do: 503, because every
one of them means "the store cannot do this durably right now", never "your request was
wrong".

Write-path errors (WalError) reach the client of the operation that could not be logged.
Start-up errors (RecoveryError, DataDirLocked) stop the server before it serves anything:
the caller prints the message and exits non-zero; no file has been changed.
"""
from queues.errors import QueueError


class WalError(QueueError):
    """The operation could not be made durable as the wal_mode promises."""

    code = "wal_error"
    http_status = 503


class WalDiskFull(WalError):
    """No space could be reserved for the record: the operation was NOT applied.

    Writes resume by themselves once space returns; reads keep working meanwhile.
    """

    code = "wal_disk_full"
    http_status = 503


class WalIOError(WalError):
    """Writing or syncing the WAL failed.

    Raised by log() while the WAL is being repaired (the operation was NOT applied),
    and by wait() to the callers whose records were in the batch that failed: those
    operations were already applied in memory and are re-written by the repair, so
    their outcome is "applied, durability was late" - treat like a timeout.
    """

    code = "wal_io_error"
    http_status = 503


class WalClosed(WalError):
    """The journal was closed (server shutting down)."""

    code = "wal_closed"
    http_status = 503


class RecoveryError(QueueError):
    """The data directory cannot be recovered without --force-recovery."""

    code = "recovery_error"
    http_status = 503


class WalCorrupt(RecoveryError):
    code = "wal_corrupt"
    http_status = 503

    def __init__(self, path, offset, reason):
        super().__init__(f"{path}: damaged WAL record at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalGap(RecoveryError):
    """LSNs are missing between two records (a segment was removed or lost)."""

    code = "wal_gap"
    http_status = 503


class SnapshotCorrupt(RecoveryError):
    code = "snapshot_corrupt"
    http_status = 503

    def __init__(self, path, reason):
        super().__init__(f"{path}: damaged snapshot: {reason}")
        self.path = path
        self.reason = reason


class SnapshotError(QueueError):
    """A snapshot could not be written (the previous ones are untouched)."""

    code = "snapshot_error"
    http_status = 503


class DataDirLocked(QueueError):
    """Another server already uses this data directory."""

    code = "data_dir_locked"
    http_status = 503
