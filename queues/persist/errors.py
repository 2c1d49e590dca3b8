"""Typed errors of the persistence layer; all derive from queues' root, QueueError.

Write-path errors (WalError) reach the client of the operation that could not be logged.
Start-up errors (RecoveryError, DataDirLocked) stop the server before it serves anything:
the caller prints the message and exits non-zero; no file has been changed.
"""
from queues.errors import QueueError


class WalError(QueueError):
    """The operation could not be made durable as the wal_mode promises."""


class WalDiskFull(WalError):
    """No space could be reserved for the record: the operation was NOT applied.

    Writes resume by themselves once space returns; reads keep working meanwhile.
    """


class WalIOError(WalError):
    """Writing or syncing the WAL failed.

    Raised by log() while the WAL is being repaired (the operation was NOT applied),
    and by wait() to the callers whose records were in the batch that failed: those
    operations were already applied in memory and are re-written by the repair, so
    their outcome is "applied, durability was late" - treat like a timeout.
    """


class WalClosed(WalError):
    """The journal was closed (server shutting down)."""


class RecoveryError(QueueError):
    """The data directory cannot be recovered without --force-recovery."""


class WalCorrupt(RecoveryError):
    def __init__(self, path, offset, reason):
        super().__init__(f"{path}: damaged WAL record at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalGap(RecoveryError):
    """LSNs are missing between two records (a segment was removed or lost)."""


class SnapshotCorrupt(RecoveryError):
    def __init__(self, path, reason):
        super().__init__(f"{path}: damaged snapshot: {reason}")
        self.path = path
        self.reason = reason


class SnapshotError(QueueError):
    """A snapshot could not be written (the previous ones are untouched)."""


class DataDirLocked(QueueError):
    """Another server already uses this data directory."""
