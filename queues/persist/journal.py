"""The WAL writer: the store's journal, with group commit.

Contract with the store (queues/store.py): ``log(op) -> token`` is called before
``apply(op)`` and never yields; if it raises (a WalError) the operation is not applied.
``wait(token)`` is called afterwards from the same fiber and returns once the record is
as durable as ``mode`` promises:

- ``none``  : nothing is written; wait() returns at once (snapshots still work);
- ``write`` : the record has been handed to the OS (write(2)) - it survives the process
              being killed, not the machine losing power;
- ``fsync`` : the record is on disk (fdatasync) - it survives a power loss.

How records travel. log() encodes the record, reserves disk space for it (fallocate, so
the later write cannot fail for lack of space: a full disk fails the operation before it
is applied, as beanstalkd's reservation does) and appends it to a pending list. In write
mode the first wait() writes every pending record with one pwrite. In fsync mode wait()
hands the pending records, as one batch, to a flusher fiber that does pwrite + fdatasync
in the hub's threadpool; records logged meanwhile form the next batch (group commit), so
one ~85 us thread hand-off and one fsync serve every fiber that logged in between. The
event loop never blocks on an fsync.

A failed write or fsync (EIO, or ENOSPC despite the reservation) breaks the journal: the
callers whose records were in the failed batch get WalIOError from wait() (their
operations are applied in memory: the outcome is "applied, not yet durable"), later
log() calls fail with WalIOError (not applied) and start a repair that re-writes the
failed records from the last durable offset and fsyncs. When it succeeds, memory and
disk agree again and writes resume.
"""
import collections
import errno
import os
import time as _time
import zlib

import gevent
import gevent.event

from .disk import Disk
from .errors import WalClosed, WalDiskFull, WalError, WalIOError
from .record import BODY_PREFIX, HEADER, MAGIC, VERSION, Encoder
from .segment import FILE_HEADER, segment_name

MODES = ("none", "write", "fsync")

_prefix = BODY_PREFIX.pack
_header = HEADER.pack
_crc32 = zlib.crc32


def _clock_reads(clock):
    """(time, monotonic) functions for clock: the time module's own for the system clock
    (same values, no Python-level method call per record), the clock's methods otherwise."""
    cls = type(clock)
    if cls.__name__ == "SystemClock" and cls.__module__ == "fiberapp.runtime.clock":
        return _time.time, _time.monotonic
    return clock.time, clock.monotonic


class _Segment:
    __slots__ = ("path", "fd", "first_lsn", "end", "written", "reserved", "sealed", "dir_synced")

    def __init__(self, path, fd, first_lsn, end):
        self.path = path
        self.fd = fd
        self.first_lsn = first_lsn
        self.end = end  # bytes assigned to records (written or pending)
        self.written = end  # bytes handed to the OS
        self.reserved = end  # bytes allocated on disk
        self.sealed = False  # no more records will be added
        self.dir_synced = False


class _Group:
    """Pending records bound for one segment."""

    __slots__ = ("seg", "offset", "chunks", "last_lsn", "data")

    def __init__(self, seg, offset):
        self.seg = seg
        self.offset = offset
        self.chunks = []
        self.last_lsn = 0
        self.data = None


class _Batch:
    __slots__ = ("last_lsn", "event", "error", "opened_at")

    def __init__(self, opened_at):
        self.last_lsn = None  # set when the flusher takes it
        self.event = gevent.event.Event()
        self.error = None
        self.opened_at = opened_at


class Journal:
    # __slots__: Journal has more attributes than CPython keeps in a shared-key instance
    # dict (30), past which every self.x on the hot path is a hashed lookup; slots make
    # them fixed offsets (-4% instructions per logged record, cachegrind).
    __slots__ = (
        "wal_dir", "mode", "clock", "disk", "max_size", "reserve_chunk", "commit_timeout",
        "repair_interval", "logger", "lsn", "_committed_lsn", "_pack", "_time", "_monotonic",
        "_pwrite", "_none", "_inline", "_seg", "_sealed", "_rotate", "_pending", "_spare",
        "_open_batch",
        "_inflight", "_flusher", "_broken", "_failed", "_repairing", "_last_repair", "_closed",
        "_since_snapshot_bytes", "threshold", "bytes_written", "batches", "fsyncs", "records",
        "write_errors", "latencies",
    )

    def __init__(
        self,
        wal_dir,
        mode,
        clock,
        next_lsn=1,
        disk=None,
        max_size=64 << 20,
        reserve_chunk=4 << 20,
        commit_timeout=60.0,
        repair_interval=1.0,
        logger=None,
    ):
        if mode not in MODES:
            raise ValueError(f"wal_mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.wal_dir = wal_dir
        self.mode = mode
        self.clock = clock
        self.disk = disk or Disk()
        self.max_size = int(max_size)
        self.reserve_chunk = int(reserve_chunk)
        self.commit_timeout = commit_timeout
        self.repair_interval = repair_interval
        self.logger = logger
        self.lsn = next_lsn - 1  # last LSN assigned
        self._committed_lsn = self.lsn  # written (write mode) / fsynced (fsync mode)
        # The hot path (log + wait in write mode) is a few hundred bytecodes per record; the
        # bindings below keep method lookups and Python-level wrappers off it. Measured
        # with cachegrind (bench/RESULTS.md, persist section).
        self._pack = Encoder().pack  # record framing is record.py's; inlined in log()
        self._time, self._monotonic = _clock_reads(clock)
        # os.pwrite itself when the disk is the plain pass-through; a test's FaultyDisk
        # (a subclass overriding pwrite) keeps going through its own method.
        self._pwrite = os.pwrite if type(self.disk).pwrite is Disk.pwrite else self.disk.pwrite
        self._none = mode == "none"
        self._inline = mode == "write"  # write mode writes from the waiting fiber
        self._seg = None
        self._sealed = []
        self._rotate = False
        self._pending = []
        self._spare = None  # a written _Group that log() may reuse (write mode)
        self._open_batch = None
        self._inflight = None
        self._flusher = None
        self._broken = None
        self._failed = []
        self._repairing = None
        self._last_repair = None
        self._closed = False
        self._since_snapshot_bytes = 0
        self.threshold = None  # (bytes, callback): called once when crossed
        # figures for stats()
        self.bytes_written = 0
        self.batches = 0
        self.fsyncs = 0
        self.records = 0
        self.write_errors = 0
        self.latencies = collections.deque(maxlen=4096)

    # -- the store's seam ---------------------------------------------------------

    def log(self, op):
        if self._broken is not None or self._closed or self._none:
            return self._log_special(op)
        lsn = self.lsn + 1
        seg = self._seg
        if seg is None or self._rotate or seg.end >= self.max_size:
            seg = self._new_segment(lsn)
        pending = self._pending
        if pending and pending[-1].seg is seg:
            group = pending[-1]
            new_group = None
        else:
            # One wall-clock offset per batch: its records are microseconds apart.
            offset = self._time() - self._monotonic()
            group = new_group = self._spare
            if group is None:
                group = new_group = _Group(seg, offset)
            else:  # write mode recycles the group wait() just wrote (no __init__ call)
                self._spare = None
                group.seg = seg
                group.offset = offset
                group.chunks = []
        # record.Encoder.encode, inlined (one Python call less per record).
        body = _prefix(VERSION, lsn, group.offset) + self._pack(op)
        rec = _header(MAGIC, len(body), _crc32(body)) + body
        size = len(rec)
        end = seg.end + size
        if end > seg.reserved:
            self._reserve(seg, size)  # may raise WalDiskFull: nothing changed yet
        seg.end = end
        if new_group is not None:
            pending.append(new_group)
        group.chunks.append(rec)
        group.last_lsn = self.lsn = lsn
        self.records += 1
        self._since_snapshot_bytes += size
        threshold = self.threshold
        if threshold is not None and self._since_snapshot_bytes >= threshold[0]:
            self.threshold = None
            threshold[1]()  # must not block: it wakes the checkpoint fiber
        return lsn

    def _log_special(self, op):
        if self._closed:
            raise WalClosed("the WAL is closed")
        if self._broken is not None:
            self._start_repair()
            raise WalIOError(f"WAL write failed ({self._broken}); repairing, try again")
        self.lsn += 1  # mode none: count, write nothing
        return self.lsn

    def wait(self, token):
        if token <= self._committed_lsn or self._none:
            return
        if self._inline:
            pending = self._pending
            if len(pending) == 1 and self._broken is None:
                # The common case, written out here (one Python call less per record):
                # one group for the open segment, usually one record, one pwrite.
                group = pending[0]
                seg = group.seg
                if not seg.sealed:
                    chunks = group.chunks
                    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    try:
                        n = self._pwrite(seg.fd, data, seg.written)
                    except OSError:
                        n = -1
                    if n == len(data):
                        self._pending = []
                        self._spare = group  # nothing else holds it now: log() reuses it
                        seg.written += n
                        self.bytes_written += n
                        self.batches += 1
                        self._committed_lsn = group.last_lsn
                        return
                    group.data = data  # short write or error: the general path rewrites it
                    group.chunks = None
                    self._flush_inline()
                    pending = ()
            if pending and self._broken is None:
                self._flush_inline()
            if token <= self._committed_lsn:
                return
            raise WalIOError(f"WAL write failed: {self._broken}")
        batch = self._inflight
        if batch is None or token > batch.last_lsn:
            batch = self._open_batch
            if batch is None:
                if self._broken is not None:
                    raise WalIOError(f"WAL write failed: {self._broken}")
                batch = self._open_batch = _Batch(self.clock.monotonic())
            if self._flusher is None:
                self._flusher = gevent.spawn(self._flush_loop)
                self._flusher.name = "wal-flusher"
        if not batch.event.wait(self.commit_timeout):
            raise WalError(f"WAL commit did not complete within {self.commit_timeout} s")
        if batch.error is not None:
            raise WalIOError(f"WAL write failed: {batch.error}")

    # -- segments -----------------------------------------------------------------

    def _new_segment(self, first_lsn):
        path = os.path.join(self.wal_dir, segment_name(first_lsn))
        disk = self.disk
        try:
            fd = disk.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        except OSError as exc:
            raise self._os_error(exc, "create WAL segment " + path) from None
        seg = _Segment(path, fd, first_lsn, 0)
        try:
            self._reserve(seg, len(FILE_HEADER))
            disk.pwrite_all(fd, FILE_HEADER, 0)
        except (OSError, WalError) as exc:
            try:
                disk.close(fd)
                disk.unlink(path)
            except OSError:
                pass
            if isinstance(exc, WalError):
                raise
            raise self._os_error(exc, "write WAL segment header") from None
        seg.end = seg.written = len(FILE_HEADER)
        if self._seg is not None:
            self._seg.sealed = True
            self._sealed.append(self._seg)
            self._finalize_sealed()
        self._seg = seg
        self._rotate = False
        return seg

    def _reserve(self, seg, size):
        want = max(seg.end + size, seg.reserved + self.reserve_chunk)
        try:
            self.disk.fallocate(seg.fd, seg.reserved, want - seg.reserved)
        except OSError as exc:
            # Try just what this record needs before giving up.
            try:
                need = seg.end + size - seg.reserved
                if need <= 0:
                    return
                self.disk.fallocate(seg.fd, seg.reserved, need)
                want = seg.end + size
            except OSError:
                raise self._os_error(exc, "reserve WAL space") from None
        seg.reserved = want

    def _os_error(self, exc, what):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return WalDiskFull(f"disk full: cannot {what}: {exc}")
        return WalIOError(f"I/O error: cannot {what}: {exc}")

    def rotate(self):
        """Start a new segment with the next record (after a snapshot: old ones can go)."""
        if self._seg is not None and self._seg.end > len(FILE_HEADER):
            self._rotate = True

    def current_segment(self):
        return self._seg.path if self._seg is not None else None

    # -- writing ------------------------------------------------------------------

    def _write_groups(self, groups, sync):
        """Blocking: write (and maybe fsync) groups in order.

        Runs in the calling fiber (write mode) or a hub thread (fsync mode, repair).
        Returns (groups completed, exception or None). A group's bytes count as written
        only once the whole group (and its fsync) succeeded, so a retry rewrites it.
        """
        disk = self.disk
        done = 0
        try:
            for group in groups:
                seg = group.seg
                if group.data is None:
                    group.data = b"".join(group.chunks)
                    group.chunks = None
                disk.pwrite_all(seg.fd, group.data, seg.written)
                if sync:
                    if not seg.dir_synced:
                        disk.fsync_dir(self.wal_dir)
                        seg.dir_synced = True
                    disk.fdatasync(seg.fd)
                seg.written += len(group.data)
                done += 1
        except OSError as exc:
            return done, exc
        return done, None

    def _finalize_sealed(self):
        """Close sealed segments whose records are all written (in the loop, never
        while a thread writes them), dropping their unused reservation."""
        keep = []
        for seg in self._sealed:
            if seg.written < seg.end:
                keep.append(seg)
                continue
            self._finalize_now(seg)
        self._sealed = keep

    def _finalize_now(self, seg):
        if seg.fd is None:
            return
        try:
            self.disk.ftruncate(seg.fd, seg.end)
        except OSError as exc:  # the records are safe; only the reservation leaks
            self._warn("cannot trim WAL segment %s: %s", seg.path, exc)
        try:
            self.disk.close(seg.fd)
        except OSError:
            pass
        seg.fd = None

    def _account(self, groups, sync):
        for group in groups:
            self.bytes_written += len(group.data)
        self.batches += 1
        if sync:
            self.fsyncs += 1

    def _flush_inline(self):
        """Write every pending group (write mode), breaking the journal on an error.
        wait() has the common case (one group, one pwrite) written out before this."""
        groups, self._pending = self._pending, []
        done, exc = self._write_groups(groups, sync=False)
        self._account(groups[:done], False)
        if done:
            self._committed_lsn = groups[done - 1].last_lsn
        if exc is not None:
            self._break(exc, groups[done:])
        if self._sealed:
            self._finalize_sealed()

    def _flush_loop(self):
        pool = gevent.get_hub().threadpool
        try:
            while self._pending and self._broken is None:
                groups, self._pending = self._pending, []
                batch, self._open_batch = self._open_batch, None
                if batch is None:
                    batch = _Batch(self.clock.monotonic())
                batch.last_lsn = groups[-1].last_lsn
                self._inflight = batch
                done, exc = pool.apply(self._write_groups, (groups, True))
                self._inflight = None
                self._account(groups[:done], True)
                if done:
                    self._committed_lsn = groups[done - 1].last_lsn
                if self._sealed:
                    self._finalize_sealed()
                if exc is not None:
                    batch.error = exc
                    batch.event.set()
                    self._break(exc, groups[done:])
                    break
                self.latencies.append(self.clock.monotonic() - batch.opened_at)
                batch.event.set()
        finally:
            self._flusher = None
            # Whoever waits on a batch that will never be flushed must not hang.
            if self._open_batch is not None and (self._broken is not None or not self._pending):
                stale, self._open_batch = self._open_batch, None
                stale.error = self._broken or WalClosed("the WAL is closed")
                stale.event.set()

    def _break(self, exc, failed):
        self.write_errors += 1
        self._broken = exc
        self._failed = failed + self._pending
        self._pending = []
        self._warn("WAL write failed, writes stop until it is repaired: %s", exc)

    def _start_repair(self):
        if self._repairing is not None:
            return
        now = self.clock.monotonic()
        if self._last_repair is not None and now - self._last_repair < self.repair_interval:
            return
        self._last_repair = now
        self._repairing = gevent.spawn(self._repair)
        self._repairing.name = "wal-repair"

    def _repair(self):
        pool = gevent.get_hub().threadpool
        try:
            groups = self._failed
            done, exc = pool.apply(self._write_groups, (groups, True))
            self._account(groups[:done], True)
            if done:
                self._committed_lsn = groups[done - 1].last_lsn
            self._failed = groups[done:]
            if self._sealed:
                self._finalize_sealed()
            if exc is not None:
                self._broken = exc
                self._warn("WAL repair failed: %s", exc)
            else:
                self._broken = None
                self._info("WAL repaired; writes resume at lsn %d", self.lsn + 1)
        except OSError as exc:
            self._broken = exc
            self._warn("WAL repair failed: %s", exc)
        finally:
            self._repairing = None

    def wait_repair(self, timeout=None):
        """Wait for a repair in progress (if any); True when the journal works again."""
        repairing = self._repairing
        if repairing is not None:
            repairing.join(timeout)
        return self._broken is None

    @property
    def broken(self):
        return self._broken

    # -- lifecycle ----------------------------------------------------------------

    def sync(self):
        """Write and fsync everything logged so far (cooperative; used by close)."""
        if self.mode == "none" or self._broken is not None:
            return
        if self._pending:
            self.wait(self.lsn) if self.mode == "fsync" else self._flush_inline()
        seg = self._seg
        if seg is not None and seg.fd is not None and self._broken is None:
            gevent.get_hub().threadpool.apply(self.disk.fdatasync, (seg.fd,))

    def close(self):
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._closed = True
            seg, self._seg = self._seg, None
            if seg is not None and not self._pending and not self._failed:
                self._finalize_now(seg)
            elif seg is not None and seg.fd is not None:
                self.disk.close(seg.fd)
                seg.fd = None
            for seg in self._sealed:
                if seg.fd is not None:
                    self.disk.close(seg.fd)
                    seg.fd = None

    def take_bytes_since_snapshot(self, reset=False):
        value = self._since_snapshot_bytes
        if reset:
            self._since_snapshot_bytes = 0
        return value

    def _warn(self, msg, *args):
        if self.logger is not None:
            self.logger.warning(msg, *args)

    def _info(self, msg, *args):
        if self.logger is not None:
            self.logger.info(msg, *args)
