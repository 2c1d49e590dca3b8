"""Start-up recovery: the newest valid snapshot, then every WAL record after its LSN.

Recovery reads before it changes anything: the whole snapshot + WAL chain is checked and
replayed first; only when that succeeded is a torn tail cut off (the one change it
makes). Any error before that leaves every file as it was.

Fall-backs and refusals:
- a damaged snapshot is skipped with a warning and the previous one is used (its WAL is
  kept by checkpoint_count), or the empty state if the WAL starts at LSN 1;
- LSNs must follow each other: a hole (a missing segment, or a snapshot fallback whose
  WAL was removed) raises WalGap naming where it is;
- a damaged record raises WalCorrupt(file, offset) - except a torn tail of the newest
  segment holding records, which is cut off with a warning;
- segments after the last one holding a record hold nothing (the crash came while they
  were being started: a file header, a cut one, or none, then zeros): they are removed;
- with force=True holes and damaged records are logged one by one and skipped.
"""
import gc
import logging
import os
import time
from dataclasses import dataclass, field

import gevent

from . import snapshot as snapfile
from .errors import RecoveryError, SnapshotCorrupt, WalCorrupt, WalGap
from .segment import FILE_HEADER, SegmentReader, list_files
from .segment import SUFFIX as WAL_SUFFIX
from .timeconv import shift, wall_offset

log = logging.getLogger("fiberapp.persist")

# Let the loop run (the HTTP server answers /health with 503) this often during replay.
YIELD_EVERY = 10_000
# Offsets closer than this are the same clock (time() - monotonic() read at two instants
# jitters by microseconds; NTP slews by milliseconds over hours): deadlines are restored
# to the millisecond, and a restart on the same boot skips the rewrite of every record.
CLOCK_EPSILON = 0.001
_CHUNK = 1 << 20


def holds_no_record(path):
    """True when the segment file at path holds no record: the file header (or a
    beginning of it, or nothing) followed by zeros only. A segment is started (created,
    space reserved, header written) before the records of the previous one are all
    written - in fsync mode they may still be pending - so after a crash the previous
    segment can end in a torn record while this one holds nothing yet.

    Reads only up to the first byte that says otherwise (a segment holding records says
    so at its first record). A file that cannot be read counts as holding something:
    replay then reads it and reports the error.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(FILE_HEADER))
            if not FILE_HEADER.startswith(head.rstrip(b"\0")):
                return False
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return True
                if chunk.count(0) != len(chunk):
                    return False
    except OSError:
        return False


def last_holding(paths):
    """Index in paths (segment files, oldest first) of the last one that holds a record,
    or -1. Every segment up to it is read as usual; a torn tail counts as torn (cut off,
    never acknowledged) in it - the newest segment that holds records - and in no older one."""
    for i in range(len(paths) - 1, -1, -1):
        if not holds_no_record(paths[i]):
            return i
    return -1


@dataclass
class RecoveryResult:
    snapshot_lsn: int = 0
    snapshot_path: str = None
    last_lsn: int = 0
    records: int = 0
    torn: list = field(default_factory=list)
    empty: list = field(default_factory=list)  # segments past the last record: removed
    skipped: list = field(default_factory=list)
    fallbacks: list = field(default_factory=list)
    seconds: float = 0.0
    snapshot_seconds: float = 0.0  # of seconds: reading and loading the snapshot
    snapshot_cpu: float = 0.0      # the process's CPU time for that part


class Recovery:
    """One recovery run. ``progress`` is a dict the /health endpoint may read at any time."""

    def __init__(self, wal_dir, snap_dir, clock, disk, force=False, logger=None, progress=None):
        self.wal_dir = wal_dir
        self.snap_dir = snap_dir
        self.clock = clock
        self.disk = disk
        self.force = force
        self.log = logger or log
        self.progress = progress if progress is not None else {}
        self.result = RecoveryResult()
        self._just_skipped = False

    def run(self, new_store, load_store, apply):
        """Returns (store, RecoveryResult).

        new_store() -> an empty store; load_store(dump) -> a store holding dump;
        apply(store) -> a function replaying one operation on store.
        """
        started, cpu = time.monotonic(), time.process_time()
        result = self.result
        now_offset = wall_offset(self.clock)
        # The cyclic collector off while the store is rebuilt: every young collection
        # would scan objects that all survive (a quarter of replay CPU, measured). At the
        # end they go straight to the oldest generation (freeze + unfreeze: two O(1) list
        # splices) instead of all sitting in generation 0, where the first collection
        # after start-up would scan every one of them. Skipped when something else froze
        # objects (unfreeze would thaw them too).
        gc_enabled = gc.isenabled()
        gc.disable()
        try:
            store = self._load_snapshot(new_store, load_store, now_offset)
            result.snapshot_seconds = time.monotonic() - started
            result.snapshot_cpu = time.process_time() - cpu
            segments = self._segments()
            self._replay(store, apply, segments, now_offset)
        finally:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            if gc_enabled:
                gc.enable()
        self._cut_torn_tail()
        result.seconds = time.monotonic() - started
        self.progress.update(phase="done", records=result.records, lsn=result.last_lsn)
        return store, result

    # -- snapshot -----------------------------------------------------------------

    def _load_snapshot(self, new_store, load_store, now_offset):
        result = self.result
        snaps, bad = snapfile.list_snapshots(self.snap_dir)
        for path in bad:
            self._damage(RecoveryError(f"{path}: not a snapshot name this server writes"))
        for lsn, path in reversed(snaps):
            self.progress.update(phase="snapshot", file=path)
            try:
                snap_lsn, offset, dump = snapfile.read_file(self.disk, path)
                if snap_lsn != lsn:
                    raise SnapshotCorrupt(path, f"holds lsn {snap_lsn}, its name says {lsn}")
            except SnapshotCorrupt as exc:
                self.log.warning("%s; falling back to the previous snapshot", exc)
                result.fallbacks.append(str(exc))
                continue
            self.log.info("recovering from snapshot %s (lsn %d)", path, lsn)
            delta = offset - now_offset
            store = load_store(snapfile.expand(dump, delta if abs(delta) >= CLOCK_EPSILON else 0))
            result.snapshot_lsn = result.last_lsn = lsn
            result.snapshot_path = path
            return store
        return new_store()

    # -- WAL ------------------------------------------------------------------------

    def _segments(self):
        segments, bad = list_files(self.wal_dir, WAL_SUFFIX)
        for path in bad:
            self._damage(RecoveryError(f"{path}: not a WAL segment name this server writes"))
        # Segments after the last one holding a record are not replayed but removed once
        # recovery succeeded: left on disk, such a segment's name (an LSN above the
        # recovered ones) would later tell garbage collection, which takes a segment's end
        # from the next file's name, that the segment before it ends there.
        last = last_holding([path for _first, path in segments])
        self.result.empty = [path for _first, path in segments[last + 1:]]
        segments = segments[:last + 1]
        # Start at the last segment that begins at or before the first needed LSN.
        need = self.result.snapshot_lsn + 1
        start = 0
        for i, (first, _path) in enumerate(segments):
            if first <= need:
                start = i
        return segments[start:]

    def _replay(self, store, apply, segments, now_offset):
        result = self.result
        expected = result.snapshot_lsn + 1
        records = result.records
        last_report = time.monotonic()
        # The clock delta of the records' wall_offset: the same for long runs of records,
        # so it is worked out again only when the offset changes.
        seen_offset, delta = None, 0
        try:
            for i, (first, path) in enumerate(segments):
                newest = i == len(segments) - 1  # the newest holding a record (see _segments)
                try:
                    data = self.disk.read_file(path)
                except OSError as exc:
                    self._damage(WalCorrupt(path, 0, f"cannot read: {exc}"))
                    continue
                self.progress.update(phase="wal", file=path)
                reader = SegmentReader(path, data, newest=newest, force=self.force, on_skip=self._skipped,
                                       covered=result.snapshot_lsn)
                apply_op = apply(store)
                for offset, lsn, rec_offset, op in reader:
                    if lsn != expected:
                        if lsn < expected:
                            continue  # already in the snapshot (or a duplicate after a skip)
                        if self._just_skipped:  # force recovery: the hole is the data just skipped
                            self.log.error("force recovery: WAL records %d..%d were in the skipped data",
                                           expected, lsn - 1)
                        else:
                            self._damage(WalGap(
                                f"{path}: WAL records {expected}..{lsn - 1} are missing before offset "
                                f"{offset} (a segment was removed or lost)"))
                    if self._just_skipped:
                        self._just_skipped = False
                    if rec_offset != seen_offset:
                        seen_offset = rec_offset
                        delta = rec_offset - now_offset
                        if -CLOCK_EPSILON < delta < CLOCK_EPSILON:
                            delta = 0
                    try:
                        apply_op(shift(op, delta) if delta else op)
                    except Exception as exc:  # a record that does not fit the state is damage too
                        self._damage(WalCorrupt(path, offset, f"cannot apply lsn {lsn}: {exc!r}"))
                        expected = lsn + 1
                        continue
                    expected = lsn + 1
                    records += 1
                    if records % YIELD_EVERY == 0:
                        result.records = records
                        self.progress.update(records=records, lsn=lsn)
                        now = time.monotonic()
                        if now - last_report >= 2.0:
                            last_report = now
                            self.log.info("recovery: %d WAL records replayed (lsn %d, %s)",
                                          records, lsn, path)
                        gevent.sleep(0)
                if reader.torn is not None:
                    result.torn.append((reader.torn, reader.end))
        finally:
            result.records = records
        result.last_lsn = expected - 1
        if result.last_lsn < result.snapshot_lsn:
            result.last_lsn = result.snapshot_lsn

    def _cut_torn_tail(self):
        unlinked = False
        for damage, end in self.result.torn:
            self.log.warning("%s: torn last record at offset %d (%s): cut off",
                             damage.path, damage.offset, damage.reason)
            if end == 0:  # not even the file header made it: the file holds nothing
                self.disk.unlink(damage.path)
                unlinked = True
                continue
            fd = self.disk.open(damage.path, os.O_RDWR)
            try:
                self.disk.ftruncate(fd, end)
                self.disk.fsync(fd)
            finally:
                self.disk.close(fd)
        for path in self.result.empty:
            self.log.warning("%s: holds no record (a segment started, never written to): removed", path)
            self.disk.unlink(path)
            unlinked = True
        if unlinked:
            self.disk.fsync_dir(self.wal_dir)

    def _skipped(self, damage):
        self.log.error("force recovery: skipping damaged WAL data in %s at offset %d: %s",
                       damage.path, damage.offset, damage.reason)
        self.result.skipped.append(damage)
        self._just_skipped = True

    def _damage(self, exc):
        if not self.force:
            raise exc
        self.log.error("force recovery: %s; skipped", exc)
        self.result.skipped.append(str(exc))
