"""Persistence: the durable life of one store in one data directory.

    store, persistence = open_store(data_dir, clock, runtime, wal_mode="write")
    persistence.start()          # checkpoint fiber (interval / WAL-size triggers)
    persistence.snapshot()       # {"lsn": ..., "file": ...}
    persistence.stats()          # figures for /metrics
    persistence.close()          # flush, fsync, stop the store, release the lock

Layout of a data directory::

    <data_dir>/lock                          flock: one server per directory
    <data_dir>/wal/<first lsn:020d>.wal      WAL segments
    <data_dir>/snap/<lsn:020d>.snap          snapshots (checkpoint_count kept)

Snapshots fork: the child holds a copy-on-write, point-in-time image of the store, dumps
and writes it with plain blocking calls and exits; the parent's loop only pays for the
fork itself and waits for the child cooperatively. The snapshot is named after the LSN
the image includes, so recovery replays only the records after it.
"""
import gc
import logging
import os
import time

import gevent
import gevent.event
import gevent.os

from . import snapshot as snapfile
from .disk import Disk
from .errors import SnapshotError, WalError
from .journal import MODES, Journal
from .lock import DataDirLock
from .recovery import Recovery
from .segment import SUFFIX as WAL_SUFFIX
from .segment import list_files
from .timeconv import wall_offset

log = logging.getLogger("fiberapp.persist")


class Persistence:
    def __init__(
        self,
        data_dir,
        clock,
        store_adapter,
        runtime=None,
        wal_mode="write",
        wal_max_size=64 << 20,
        checkpoint_interval=3600.0,
        checkpoint_count=2,
        checkpoint_wal_threshold=1 << 30,
        force_recovery=False,
        disk=None,
        snapshot_fork=True,
        logger=None,
    ):
        if wal_mode not in MODES:
            raise ValueError(f"wal_mode must be one of {', '.join(MODES)}, not {wal_mode!r}")
        if checkpoint_count < 1:
            raise ValueError("checkpoint_count must be at least 1")
        self.data_dir = data_dir
        self.wal_dir = os.path.join(data_dir, "wal")
        self.snap_dir = os.path.join(data_dir, "snap")
        self.clock = clock
        self.adapter = store_adapter
        self.runtime = runtime
        self.wal_mode = wal_mode
        self.wal_max_size = wal_max_size
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_count = checkpoint_count
        self.checkpoint_wal_threshold = checkpoint_wal_threshold
        self.force_recovery = force_recovery
        self.disk = disk or Disk()
        self.snapshot_fork = snapshot_fork and hasattr(os, "fork")
        self.log = logger or log
        self.store = None
        self.journal = None
        self.recovering = False
        self.progress = {}
        self.recovery = None
        self._lock = DataDirLock(data_dir)
        self._checkpointer = None
        self._snapshotting = None  # AsyncResult of the snapshot in progress
        self._last_snapshot = {"lsn": 0, "file": None, "time": None, "duration": None,
                               "size": None, "fork_stall": None, "started": None}
        self._last_snapshot_mono = None
        self._closed = False

    # -- start-up -------------------------------------------------------------------

    def open(self):
        """Lock the directory, recover the store and attach the WAL. Returns the store.

        Raises DataDirLocked, RecoveryError (WalCorrupt, WalGap, ...): nothing was changed.
        """
        os.makedirs(self.data_dir, exist_ok=True)
        self._lock.acquire()
        try:
            os.makedirs(self.wal_dir, exist_ok=True)
            os.makedirs(self.snap_dir, exist_ok=True)
            self.recovering = True
            self.progress = {"phase": "starting", "records": 0}
            recovery = Recovery(self.wal_dir, self.snap_dir, self.clock, self.disk,
                                force=self.force_recovery, logger=self.log, progress=self.progress)
            store, result = recovery.run(self.adapter.new, self.adapter.load, self.adapter.applier)
            self.recovery = result
            self._remove_stale_temporaries()
            self.journal = Journal(self.wal_dir, self.wal_mode, self.clock,
                                   next_lsn=result.last_lsn + 1, disk=self.disk,
                                   max_size=self.wal_max_size, logger=self.log)
            self.adapter.attach(store, self.journal)
            self.store = store
            if result.snapshot_path is not None:
                self._last_snapshot.update(lsn=result.snapshot_lsn, file=result.snapshot_path)
            self._last_snapshot_mono = self.clock.monotonic()
            released = self.adapter.release_orphans(store)
            self.log.info(
                "recovered lsn %d (snapshot %s + %d WAL records) in %.2f s; %s taken task(s) back to ready",
                result.last_lsn, result.snapshot_lsn, result.records, result.seconds, released)
            if result.skipped:
                # The damaged records stay in their files: a snapshot now means the next
                # start does not need --force-recovery again.
                self.log.warning("forced recovery skipped %d damaged item(s); taking a snapshot",
                                 len(result.skipped))
                self.snapshot()
        except BaseException:
            self.recovering = False
            self._lock.release()
            raise
        self.recovering = False
        return store

    def _remove_stale_temporaries(self):
        for name in os.listdir(self.snap_dir):
            if name.endswith(snapfile.TMP_SUFFIX):
                try:
                    self.disk.unlink(os.path.join(self.snap_dir, name))
                except OSError:
                    pass

    # -- checkpoints ----------------------------------------------------------------

    def start(self):
        """Start the checkpoint fiber (interval and WAL-size triggers)."""
        if self._checkpointer is None:
            self._checkpointer = self._spawn(self._checkpoint_loop, "persist.checkpoint")

    def _spawn(self, fn, name):
        if self.runtime is not None:
            return self.runtime.spawn(fn, name=name)
        g = gevent.spawn(fn)
        g.name = name
        return g

    def _checkpoint_loop(self):
        wake = gevent.event.Event()
        while not self._closed:
            # Sleep until the interval check or until the WAL passes the threshold.
            wake.clear()
            self.journal.threshold = (self.checkpoint_wal_threshold, wake.set)
            timer = self.clock.call_later(min(1.0, self.checkpoint_interval or 1.0), wake.set)
            try:
                wake.wait()
            finally:
                timer.cancel()
            if self._closed:
                return
            try:
                if self._checkpoint_due():
                    self.snapshot()
            except Exception:
                self.log.exception("checkpoint failed; will retry")
                self._last_snapshot_mono = self.clock.monotonic()

    def _checkpoint_due(self):
        journal = self.journal
        if journal is None or journal.lsn == self._last_snapshot["lsn"]:
            return False
        if journal.take_bytes_since_snapshot() >= self.checkpoint_wal_threshold:
            return True
        return bool(self.checkpoint_interval) and (
            self.clock.monotonic() - self._last_snapshot_mono >= self.checkpoint_interval)

    def snapshot(self):
        """Write a snapshot of the current state; returns {"lsn", "file"} once it is durable.

        A call while one runs waits for that one. Raises SnapshotError when it fails
        (the previous snapshots are untouched).
        """
        if self._snapshotting is not None:
            return self._snapshotting.get()
        journal = self.journal
        if journal.lsn == self._last_snapshot["lsn"] and self._last_snapshot["file"]:
            return {"lsn": self._last_snapshot["lsn"], "file": self._last_snapshot["file"]}
        pending = self._snapshotting = gevent.event.AsyncResult()
        try:
            result = self._snapshot()
        except BaseException as exc:
            pending.set_exception(exc if isinstance(exc, Exception) else SnapshotError(repr(exc)))
            raise
        else:
            pending.set(result)
            return result
        finally:
            self._snapshotting = None

    def wait_snapshot(self, timeout=None):
        """Wait for the snapshot in progress, if any (its errors are not raised here)."""
        pending = self._snapshotting
        if pending is not None:
            pending.wait(timeout)

    def _snapshot(self):
        journal, store = self.journal, self.store
        started = self.clock.monotonic()
        lsn = journal.lsn
        offset = wall_offset(self.clock)
        bytes_before = journal.take_bytes_since_snapshot()
        if self.snapshot_fork:
            tmp, stall = self._write_forked(store, lsn, offset)
        else:
            t0 = time.perf_counter()
            dump = self.adapter.dump(store)
            stall = time.perf_counter() - t0
            tmp = gevent.get_hub().threadpool.apply(
                snapfile.write_file, (self.disk, self.snap_dir, lsn, offset, dump))
        final = gevent.get_hub().threadpool.apply(snapfile.publish, (self.disk, self.snap_dir, tmp))
        # Records logged while the child wrote stay counted toward the next checkpoint.
        journal.consume_bytes_since_snapshot(bytes_before)
        journal.rotate()
        duration = self.clock.monotonic() - started
        self._last_snapshot.update(lsn=lsn, file=final, time=self.clock.time(), duration=duration,
                                   size=os.path.getsize(final), fork_stall=stall)
        self._last_snapshot_mono = self.clock.monotonic()
        self.log.info("snapshot %s (lsn %d) written in %.2f s (loop stall %.1f ms)",
                      final, lsn, duration, stall * 1000)
        self._collect_garbage()
        return {"lsn": lsn, "file": final}

    def _write_forked(self, store, lsn, offset):
        disk, snap_dir, adapter = self.disk, self.snap_dir, self.adapter
        lock_fd = self._lock.fd
        t0 = time.perf_counter()
        # The collector off and every existing object frozen across fork(): a collection
        # in the child would write the GC header of every object it scans, copying page
        # after page of the parent's heap (copy-on-write) for nothing; the child only reads
        # the store and exits. The parent unfreezes at once (both calls are O(1) list splices).
        # Skipped when something else froze objects (unfreeze would thaw them too).
        gc_enabled = gc.isenabled()
        freeze = gc.get_freeze_count() == 0
        gc.disable()
        if freeze:
            gc.freeze()
        pid = None
        try:
            pid = gevent.os.fork_and_watch()
        finally:
            if pid != 0:
                if freeze:
                    gc.unfreeze()
                if gc_enabled:
                    gc.enable()
        if pid == 0:  # the child: no gevent, no yielding, never returns
            code = 1
            try:
                if lock_fd is not None:
                    os.close(lock_fd)  # a stray child must not keep the directory locked
                # The writer yields the CPU to the server whenever both want it: at the
                # same priority it delayed the parent's loop by up to ~200 ms on a shared core.
                os.nice(19)
                snapfile.write_file(disk, snap_dir, lsn, offset, adapter.dump(store))
                code = 0
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        stall = time.perf_counter() - t0
        _, status = gevent.os.waitpid(pid, 0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            tmp = os.path.join(snap_dir, snapfile.snapshot_name(lsn)[:-5] + snapfile.TMP_SUFFIX)
            try:
                disk.unlink(tmp)
            except OSError:
                pass
            raise SnapshotError(f"snapshot writer (pid {pid}) failed with status {status}")
        tmp = os.path.join(snap_dir, snapfile.snapshot_name(lsn)[: -len(snapfile.SUFFIX)]
                           + snapfile.TMP_SUFFIX)
        return tmp, stall

    def _collect_garbage(self):
        """Keep checkpoint_count snapshots and the WAL the oldest of them needs."""
        snaps, _bad = snapfile.list_snapshots(self.snap_dir)
        keep = snaps[-self.checkpoint_count:]
        for _lsn, path in snaps[: -self.checkpoint_count]:
            self._unlink(path)
        if not keep:
            return
        oldest = keep[0][0]
        segments, _bad = list_files(self.wal_dir, WAL_SUFFIX)
        current = self.journal.current_segment()
        for (first, path), (next_first, _) in zip(segments, segments[1:]):
            # Every record in this segment is below next_first; all <= oldest are covered.
            if next_first <= oldest + 1 and path != current:
                self._unlink(path)

    def _unlink(self, path):
        try:
            self.disk.unlink(path)
            self.log.info("removed %s (covered by a newer snapshot)", path)
        except OSError as exc:
            self.log.warning("cannot remove %s: %s", path, exc)

    # -- figures and shutdown ---------------------------------------------------------

    def stats(self):
        j = self.journal
        lat = sorted(j.latencies) if j is not None else []

        def pct(p):
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

        snap = self._last_snapshot
        return {
            "wal_mode": self.wal_mode,
            "recovering": self.recovering,
            "lsn": j.lsn if j else self.progress.get("lsn", 0),
            "wal_records": j.records if j else 0,
            "wal_bytes": j.bytes_written if j else 0,
            "wal_bytes_since_snapshot": j.take_bytes_since_snapshot() if j else 0,
            # write mode hands each record to the OS on its own (one write per record)
            "wal_batches": (j.records if j.mode == "write" else j.batches) if j else 0,
            "wal_fsyncs": j.fsyncs if j else 0,
            "wal_write_errors": j.write_errors if j else 0,
            "wal_broken": str(j.broken) if j is not None and j.broken is not None else None,
            "commit_latency_p50": pct(0.50),
            "commit_latency_p99": pct(0.99),
            "last_snapshot_lsn": snap["lsn"],
            "last_snapshot_file": snap["file"],
            "last_snapshot_time": snap["time"],
            "last_snapshot_duration": snap["duration"],
            "last_snapshot_size": snap["size"],
            "last_snapshot_loop_stall": snap["fork_stall"],
            "snapshot_in_progress": self._snapshotting is not None,
        }

    def close(self):
        """Flush and fsync the WAL, stop the store and release the directory."""
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.kill(block=False)
            self._checkpointer = None
        try:
            if self._snapshotting is not None:
                try:
                    self._snapshotting.get(timeout=60)
                except Exception:
                    pass
            if self.store is not None:
                self.adapter.stop(self.store)
            if self.journal is not None:
                try:
                    self.journal.close()
                except WalError as exc:
                    self.log.error("WAL close: %s", exc)
        finally:
            self._lock.release()
