"""Durability for the queue store: WAL with group commit, snapshots, crash recovery.

Entry point for the app::

    store, persistence = open_store(data_dir, clock, runtime, wal_mode="write", ...)
    persistence.start()

See persistence.py for the object, journal.py for what each wal_mode guarantees.
"""
from .errors import (  # noqa: F401
    DataDirLocked,
    RecoveryError,
    SnapshotCorrupt,
    SnapshotError,
    WalClosed,
    WalCorrupt,
    WalDiskFull,
    WalError,
    WalGap,
    WalIOError,
)
from .persistence import Persistence  # noqa: F401
from .store_adapter import QueueStoreAdapter


def open_store(data_dir, clock, runtime=None, wal_mode="write", wal_max_size=64 << 20,
               checkpoint_interval=3600.0, checkpoint_count=2, checkpoint_wal_threshold=1 << 30,
               force_recovery=False, disk=None, snapshot_fork=True, logger=None, adapter=None,
               on_persistence=None, **store_options):
    """Recover the store in data_dir and attach its WAL; returns (store, persistence).

    store_options (max_task_size, ...) go to the Store constructor. Raises DataDirLocked
    or a RecoveryError without changing any file. The checkpoint fiber is not started:
    call persistence.start() once the app runs.

    on_persistence(persistence), if given, is called before recovery starts, so the
    caller can show ``persistence.recovering`` / ``persistence.progress`` on /health while
    a long recovery runs (it yields to the loop every 10,000 records).

    wal_mode "none" keeps nothing: the store starts empty, the directory is not touched
    and persistence is None (what the app expects; snapshots need write or fsync).
    """
    if wal_mode == "none" and adapter is None:
        return QueueStoreAdapter(clock, **store_options).new(), None
    adapter = adapter or QueueStoreAdapter(clock, **store_options)
    persistence = Persistence(
        data_dir, clock, adapter, runtime=runtime, wal_mode=wal_mode, wal_max_size=wal_max_size,
        checkpoint_interval=checkpoint_interval, checkpoint_count=checkpoint_count,
        checkpoint_wal_threshold=checkpoint_wal_threshold, force_recovery=force_recovery,
        disk=disk, snapshot_fork=snapshot_fork, logger=logger)
    if on_persistence is not None:
        on_persistence(persistence)
    store = persistence.open()
    return store, persistence
