"""The WAL writer: the store's journal, with group commit.

Contract with the store (queues/store.py): ``log(op) -> token`` is called before
``apply(op)`` and never yields; if it raises (a WalError) the operation is not applied.
``wait(token)`` is called afterwards from the same fiber and returns once the record is
as durable as ``mode`` promises:

- ``none``  : nothing is written; wait() returns at once (snapshots still work);
- ``write`` : the record has been handed to the OS (write(2)) - it survives the process
              being killed, not the machine losing power;
- ``fsync`` : the record is on disk (fdatasync) - it survives a power loss.

How records travel. log() encodes the record and reserves disk space for it (fallocate,
so the later write cannot fail for lack of space: a full disk fails the operation before
it is applied, as beanstalkd's reservation does).

- write mode: log() itself hands the record to the OS, before the op is applied, and
  returns None (the store then makes no wait() call). The record is stored into a shared
  mapping of the segment (_map: the page cache, no system call) or, on a disk without
  mappings, written with one pwrite. With one record per call there is nothing to batch,
  so the cheapest hand-over wins. A record that cannot be written fails log() (WalIOError,
  WalDiskFull): the op is not applied, the LSN not used.
- fsync mode: log() appends the record to a pending list; wait() parks the fiber in the
  hub (see wait) and, if the disk is idle, schedules _submit, which hands every pending
  record, as one batch, to the WAL's own thread (pwrite + fdatasync); records logged
  meanwhile form the next batch (group commit), so one thread hand-off and one fdatasync
  serve every fiber that logged in between. _flushed (in the hub) wakes the batch's
  fibers. The event loop never blocks on the disk.

In fsync mode, a failed write or fsync (EIO, or ENOSPC despite the reservation) breaks the journal: the
callers whose records were in the failed batch get WalIOError from wait() (their
operations are applied in memory: the outcome is "applied, not yet durable"), later
log() calls fail with WalIOError (not applied) and start a repair that re-writes the
failed records from the last durable offset and fsyncs. When it succeeds, memory and
disk agree again and writes resume.
"""
import collections
import copy
import errno
import functools
import os
import time as _time
import zlib

import gevent
from gevent import getcurrent as _getcurrent

from .disk import Disk
from .errors import WalClosed, WalDiskFull, WalError, WalIOError
from .record import BODY_PREFIX, HEADER, HEADER_SIZE, MAGIC, VERSION, Encoder
from .segment import FILE_HEADER, segment_name
from .wal_thread import WalThread

# What a completed batch switches into its waiters when their records are durable (a
# failed one switches an exception): not None, which a greenlet that ends switches into
# its parent - a fiber parked in wait() must not take that for its record being on disk.
COMMITTED = object()

MODES = ("none", "write", "fsync")
INF = float("inf")
ZERO_AHEAD = 128 << 10  # fsync mode keeps written zeros this far past its records
_ZEROS = bytes(64 << 10)  # immutable

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
    __slots__ = ("path", "fd", "first_lsn", "end", "written", "reserved", "sealed", "dir_synced",
                 "map", "zeroed")

    def __init__(self, path, fd, first_lsn, end):
        self.path = path
        self.fd = fd
        self.first_lsn = first_lsn
        self.end = end  # bytes assigned to records (written or pending)
        self.written = end  # bytes handed to the OS
        self.reserved = end  # bytes allocated on disk
        self.sealed = False  # no more records will be added
        self.dir_synced = False
        self.map = None  # write mode: a shared mapping of [0, reserved) (see Journal._map)
        self.zeroed = end  # fsync mode: [0, zeroed) holds written bytes (see _zero_ahead)


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
    """One write + fdatasync in the WAL thread, and the fibers waiting for it."""

    __slots__ = ("groups", "last_lsn", "waiters", "opened_at", "timer", "expired")

    def __init__(self, groups, waiters, opened_at):
        self.groups = groups
        self.last_lsn = groups[-1].last_lsn
        self.waiters = waiters  # parked fibers (greenlets), switched with None or an exception
        self.opened_at = opened_at  # when its first record was logged
        self.timer = None
        self.expired = False  # commit_timeout passed with the batch still in the thread


class Journal:
    # log(op) takes an op dict or its msgpack encoding (bytes, exactly what the packer
    # would give: record.OpRecords builds the store's common put / take / ack that way,
    # without the dict); the store adapter passes such encoders to a journal declaring it.
    encoded_ops = True

    # __slots__: Journal has more attributes than CPython keeps in a shared-key instance
    # dict (30), past which every self.x on the hot path is a hashed lookup; slots make
    # them fixed offsets (-4% instructions per logged record, cachegrind).
    __slots__ = (
        "wal_dir", "mode", "clock", "disk", "max_size", "reserve_chunk", "commit_timeout",
        "repair_interval", "logger", "lsn", "_committed_lsn", "_pack", "_time", "_monotonic",
        "_none", "_direct", "_mapped", "_seg", "_sealed", "_rotate", "_pending",
        "_waiters", "_scheduled", "_pending_since", "_hub", "_thread", "_wake", "_wake_error",
        "_syncing",
        "_inflight", "_broken", "_failed", "_repairing", "_last_repair", "_closed",
        "_logged", "_mark", "_threshold", "_threshold_at", "_bytes_written", "_lsn0", "_fsync",
        "batches", "fsyncs",
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
        mapped=None,
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
        self._none = mode == "none"
        self._direct = mode == "write"  # write mode writes in log() (cleared by close())
        # Write mode stores records into a shared mapping of the segment (see _map) when
        # the disk is the plain pass-through; a test's FaultyDisk gets pwrite calls, which
        # is where it injects its faults. mapped=False forces pwrite.
        if mapped is None:
            mapped = type(self.disk).pwrite is Disk.pwrite
        self._mapped = bool(mapped) and mode == "write"
        self._seg = None
        self._sealed = []
        self._rotate = False
        self._pending = []
        self._waiters = []  # fibers parked on records not yet in a batch (fsync mode)
        self._wake = []  # fibers of a completed batch not yet woken (see _flushed)
        self._wake_error = COMMITTED
        self._syncing = []  # write mode: threadpool jobs syncing sealed segments
        self._pending_since = None  # monotonic time of the first pending record
        self._scheduled = False  # a _submit callback is queued
        self._hub = None  # the hub and the WAL thread, made at the first wait()
        self._thread = None
        self._inflight = None  # the _Batch being written and fsynced
        self._broken = None
        self._failed = []
        self._repairing = None
        self._last_repair = None
        self._closed = False
        # Bytes logged since the journal opened; those since the last snapshot are
        # _logged - _mark. The hot path compares _logged with _threshold_at only.
        self._logged = 0
        self._mark = 0
        self._threshold = None
        self._threshold_at = INF
        self._lsn0 = self.lsn
        self._fsync = mode == "fsync"
        # figures for stats()
        self._bytes_written = 0  # fsync mode: bytes written by the thread
        self.batches = 0
        self.fsyncs = 0
        self.write_errors = 0
        self.latencies = collections.deque(maxlen=4096)

    # -- the store's seam ---------------------------------------------------------

    def log(self, op):
        if self._direct:
            # write mode: the record goes to the OS here, before the op is applied, and
            # log() returns None, so the store makes no wait() call at all. A record that
            # cannot be written raises (WalDiskFull / WalIOError) and the op is not applied.
            lsn = self.lsn + 1
            seg = self._seg
            if seg is None or self._rotate or seg.end >= self.max_size:
                seg = self._new_segment(lsn)
            # record.Encoder.encode, inlined (one Python call less per record).
            body = _prefix(VERSION, lsn, self._time() - self._monotonic()) + (
                op if op.__class__ is bytes else self._pack(op))
            rec = _header(MAGIC, len(body), _crc32(body)) + body
            start = seg.end
            end = start + len(rec)
            if end > seg.reserved:
                self._reserve(seg, end - start)  # may raise WalDiskFull: nothing changed yet
            mapped = seg.map
            if mapped is not None:
                mapped[start:end] = rec  # a store into the page cache: see _map()
            else:
                self._write_direct(seg, rec, start)
            # Only what the next call needs is updated here: seg.written catches up when
            # the segment is sealed; records and bytes_written are derived (properties).
            seg.end = end
            self.lsn = lsn
            logged = self._logged = self._logged + end - start
            if logged >= self._threshold_at:
                self._crossed()
            return None
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
            if not pending:
                self._pending_since = self._monotonic()
            # One wall-clock offset per batch: its records are microseconds apart.
            group = new_group = _Group(seg, self._time() - self._monotonic())
        # record.Encoder.encode, inlined (one Python call less per record).
        body = _prefix(VERSION, lsn, group.offset) + (op if op.__class__ is bytes else self._pack(op))
        length = len(body)
        size = HEADER_SIZE + length
        end = seg.end + size
        if end > seg.reserved:
            self._reserve(seg, size)  # may raise WalDiskFull: nothing changed yet
        seg.end = end
        if new_group is not None:
            pending.append(new_group)
        # Header and body go into the group as two pieces (joined once per batch): no
        # per-record concatenation.
        chunks = group.chunks
        chunks.append(_header(MAGIC, length, _crc32(body)))
        chunks.append(body)
        group.last_lsn = self.lsn = lsn
        logged = self._logged = self._logged + size
        if logged >= self._threshold_at:
            self._crossed()
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
        if token is None or token <= self._committed_lsn or not self._fsync:
            return  # write mode: log() wrote it; none: nothing to wait for
        # fsync mode. The fiber parks itself in the hub and the batch's completion
        # switches back into it with None or an exception: no Event and no per-call
        # timeout (one batch timer covers commit_timeout for every waiter), and not even a
        # gevent Waiter (7 990 -> 6 660 instructions per park + wake, bench/RESULTS.md).
        hub = self._hub
        if hub is None:
            hub = self._hub = gevent.get_hub()
            # The WAL's own thread: one batch is in flight at a time, nothing else queues
            # in front of it, and submitting never blocks (it may happen in the hub).
            self._thread = WalThread(hub, self._flushed)
        fiber = _getcurrent()
        if fiber is hub:
            raise RuntimeError("Journal.wait() cannot block the hub")
        batch = self._inflight
        if batch is not None and token <= batch.last_lsn:
            batch.waiters.append(fiber)
        else:
            if self._broken is not None:
                raise WalIOError(f"WAL write failed: {self._broken}")
            self._waiters.append(fiber)
            if batch is None and not self._scheduled:
                # The disk is idle: a batch goes once the fibers that can run now have
                # logged their records (see _submit).
                self._scheduled = True
                hub.loop.run_callback(self._submit)
        try:
            wake = self._wake
            if wake:
                outcome = wake.pop().switch(self._wake_error)
            else:
                outcome = hub.switch()
            while outcome is not COMMITTED and not isinstance(outcome, BaseException):
                # Not the batch: a greenlet whose parent is this fiber ended, and greenlet
                # switched here with its return value. Still a waiter: park again.
                outcome = hub.switch()
        except BaseException:
            # Killed (or a Timeout) while parked: no batch may switch into this fiber
            # later, wherever it is parked by then (a Waiter would have absorbed that).
            self._forget(fiber)
            raise
        if outcome is not COMMITTED:
            # A copy per waiter: one instance raised in many fibers would pile up their
            # tracebacks (and keep their frames alive) on the shared object.
            raise copy.copy(outcome)

    def _forget(self, fiber):
        for waiters in (self._waiters, self._inflight.waiters if self._inflight else (), self._wake):
            for i, parked in enumerate(waiters):
                if parked is fiber:
                    del waiters[i]
                    return

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
        if self._mapped:
            self._map(seg)
        if self._direct and self._seg is not None:
            self._seg.written = self._seg.end  # write mode does not count it per record
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
        if seg.map is not None:
            self._map(seg)

    def _map(self, seg):
        """(Re)map [0, reserved) of seg, shared, for write mode's stores.

        Why: a record stored into a MAP_SHARED mapping of the file is in the page cache
        (the mapping's pages are the file's cached pages) the moment the copy completes,
        just as after write(2): it survives the process being killed, not a power loss;
        an fdatasync of the file writes it out like written data. The copy costs a
        fraction of a pwrite system call (bench/RESULTS.md, persist section). Only the
        reserved (fallocated) range is mapped and written, so a store can never need a
        block the disk does not have (no SIGBUS on a full disk). When mapping fails the
        segment is written with pwrite instead.
        """
        old, seg.map = seg.map, None
        if old is not None:
            old.close()
        try:
            seg.map = self.disk.map(seg.fd, seg.reserved)
        except (OSError, ValueError) as exc:
            self._warn("cannot map WAL segment %s, writing with pwrite: %s", seg.path, exc)

    def _write_direct(self, seg, rec, offset):
        """write mode without a mapping: one pwrite (looping over short writes). On an
        error the record counts as not written (the caller raises, the op is not
        applied) and the next record is written over whatever part of it reached the file."""
        try:
            self.disk.pwrite_all(seg.fd, rec, offset)
        except OSError as exc:
            self.write_errors += 1
            self._warn("WAL write failed (the operation is refused): %s", exc)
            raise self._os_error(exc, "write WAL record") from None

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

        Runs in the WAL thread (fsync mode) or a hub thread (repair).
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
                    end = seg.written + len(group.data)
                    if seg.zeroed < end + ZERO_AHEAD // 2:
                        self._zero_ahead(seg, end)
                    if not seg.dir_synced:
                        disk.fsync_dir(self.wal_dir)
                        seg.dir_synced = True
                    disk.fdatasync(seg.fd)
                seg.written += len(group.data)
                done += 1
        except OSError as exc:
            return done, exc
        return done, None

    def _zero_ahead(self, seg, end):
        """Overwrite the reserved space just past end with zeros (fsync mode, WAL thread).

        Why: fallocate leaves "unwritten" extents; the first write into one makes ext4
        convert the extent, a metadata change that each fdatasync must then commit to its
        journal. Into space that already holds written zeros, an fdatasync only flushes
        data. Measured: a 7.5 KB pwrite + fdatasync 154-174 us median into fallocated
        space, 93-128 us with zeros written 64-128 KiB ahead, the zero writes included
        (bench/RESULTS.md, persist). Only reserved space is zeroed (the file never grows
        here); records overwrite the zeros later. A failure only stops the zeroing.
        """
        start = max(seg.zeroed, end)
        limit = min(seg.reserved, end + ZERO_AHEAD)
        try:
            while start < limit:
                n = min(len(_ZEROS), limit - start)
                self.disk.pwrite_all(seg.fd, memoryview(_ZEROS)[:n], start)
                start += n
        except OSError:
            start = seg.reserved + (1 << 62)  # give up on this segment: it is only speed
        seg.zeroed = start

    def _finalize_sealed(self):
        """Close sealed segments whose records are all written (in the loop, never
        while a thread writes them), dropping their unused reservation."""
        keep = []
        for seg in self._sealed:
            if seg.written < seg.end:
                keep.append(seg)
                continue
            self._finalize_now(seg, sync=self.mode == "write")
        self._sealed = keep

    def _finalize_now(self, seg, sync=False):
        """Trim seg to its records and close it; with sync (a write-mode segment sealed
        by rotation), fdatasync it first, in a threadpool thread."""
        if seg.map is not None:
            seg.map.close()
            seg.map = None
        if seg.fd is None:
            return
        try:
            self.disk.ftruncate(seg.fd, seg.end)
        except OSError as exc:  # the records are safe; only the reservation leaks
            self._warn("cannot trim WAL segment %s: %s", seg.path, exc)
        fd, seg.fd = seg.fd, None
        if sync:
            # Write mode promises nothing against a power loss, but only the newest
            # segment's tail may be lost then: a sealed segment left to the kernel's
            # writeback could come back with holes while later segments are whole, and
            # recovery would stop at the hole (--force-recovery). So a sealed segment is
            # fdatasynced (and its directory entry made durable) off the loop, once.
            job = gevent.get_hub().threadpool.spawn(self._sync_sealed, fd)
            job.rawlink(functools.partial(self._sealed_synced, seg.path))
            self._syncing = [j for j in self._syncing if not j.ready()] + [job]
            return
        try:
            self.disk.close(fd)
        except OSError:
            pass

    def _sync_sealed(self, fd):
        """In a threadpool thread: make a sealed write-mode segment durable and close it.
        Returns the OSError, if any (logged by the loop: no logging from this thread)."""
        disk = self.disk
        try:
            disk.fsync_dir(self.wal_dir)
            disk.fdatasync(fd)
            return None
        except OSError as exc:
            return exc
        finally:
            try:
                disk.close(fd)
            except OSError:
                pass

    def _sealed_synced(self, path, job):
        exc = job.value if job.successful() else job.exception
        if exc is not None:
            self.write_errors += 1
            self._warn("cannot fdatasync sealed WAL segment %s (its records survive a crash of "
                       "the server, not yet a power loss): %s", path, exc)

    def _account(self, groups, sync):
        for group in groups:
            self._bytes_written += len(group.data)
        self.batches += 1
        if sync:
            self.fsyncs += 1

    def _submit(self):
        """Start writing and fsyncing every pending record in the WAL thread (fsync mode).

        A callback in the hub, scheduled by the first wait() while the disk is idle, and
        after a batch completed with records pending. Deferring it to a callback lets
        every fiber that is ready to run (e.g. all those the last batch woke) log its
        record first, so they share one fdatasync. Submitting at once instead, so that
        the next fdatasync overlaps with their work, was measured and is not faster: the
        fibers split into two alternating batches (twice the fdatasyncs and hand-offs),
        and the thread cannot start while the loop is busy - it needs the GIL to start
        the pwrite and again after each call, and gevent runs ready callbacks for up to
        sys.getswitchinterval() (5 ms) before it polls or lets the GIL go. Neither a
        shorter switch interval, nor halves with sched_yield(), nor a child process that
        fdatasyncs without our GIL made the overlap pay on one core: the second batch's
        flight stretches until the loop idles, and each extra fdatasync costs ~160 us
        (bench/RESULTS.md, persist, perf pass 3).
        The loop never blocks: the thread does the pwrite and the fdatasync.
        """
        self._scheduled = False
        if self._inflight is not None or not self._pending or self._broken is not None:
            if self._thread is None:  # closed: a fiber that waits now waits for nothing
                self._closed_waiters()
            return
        groups, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        batch = self._inflight = _Batch(groups, waiters, self._pending_since)
        self._pending_since = None
        if self.commit_timeout is not None:
            batch.timer = self._hub.loop.timer(self.commit_timeout)
            batch.timer.start(self._timed_out, batch)
        self._thread.submit(self._write_groups, (groups, True))

    def _flushed(self, ok, value):
        """In the hub, when the thread is done with the batch in flight."""
        batch, self._inflight = self._inflight, None
        if batch.timer is not None:
            batch.timer.close()
        groups = batch.groups
        if ok:
            done, exc = value
        else:  # the function itself failed (not an OSError): nothing is known to be written
            done, exc = 0, value
        self._account(groups[:done], True)
        if done:
            self._committed_lsn = groups[done - 1].last_lsn
        if self._sealed:
            self._finalize_sealed()
        waiters = batch.waiters
        if exc is not None:
            self._break(exc, groups[done:])
            error = WalIOError(f"WAL write failed: {exc}")
            # The records after the failed batch are not written either.
            waiters = waiters + self._waiters
            self._waiters = []
        else:
            error = None
            if batch.opened_at is not None:
                self.latencies.append(self._monotonic() - batch.opened_at)
            if self._pending and not self._scheduled:
                self._scheduled = True
                self._hub.loop.run_callback(self._submit)
        self._wake_waiters(waiters, error)
        if self._thread is None:  # close() gave up on this batch: the files close now
            self._closed_waiters()
            self._close_files()

    def _wake_waiters(self, waiters, error):
        """Switch error (None or an exception) into each of waiters, from the hub.

        The fibers wake one another: _flushed switches into the first, and each woken
        fiber that parks again in wait() switches straight into the next one instead of
        back to the hub (one greenlet switch per wake instead of two). A fiber that
        blocks on anything else switches to the hub, which goes on with the list here.
        """
        if error is None:
            error = COMMITTED
        wake = waiters[::-1]
        self._wake, self._wake_error = wake, error
        failure = None
        while wake:
            try:
                wake.pop().switch(error)
            except Exception as exc:  # (a raw greenlet that died raising: the hub is its
                failure = exc         # parent) the others still get their wake-up, and
                                      # _flushed its end. Not BaseException: what is
                                      # thrown into the hub itself (HubDestroyed,
                                      # GreenletExit) must stop the loop here.
        self._wake_error = COMMITTED
        if failure is not None:  # reported as the hub reports a failed callback, after
            self._hub.handle_error(self, type(failure), failure, failure.__traceback__)

    def _timed_out(self, batch):
        batch.expired = True
        waiters, batch.waiters = batch.waiters, []
        self._wake_waiters(waiters, WalError(f"WAL commit did not complete within {self.commit_timeout} s"))

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
        """Write and fsync everything logged so far (cooperative; used by close).

        Raises WalError when a batch is still in the WAL thread after commit_timeout, and
        WalIOError (WalDiskFull) when the final fdatasync fails."""
        if self.mode == "none" or self._broken is not None:
            return
        if self._fsync and not self._drain():
            raise WalError(f"WAL sync: a batch was still being written after {self.commit_timeout} s")
        seg = self._seg
        if seg is not None and seg.fd is not None and self._broken is None:
            try:
                gevent.get_hub().threadpool.apply(self.disk.fdatasync, (seg.fd,))
            except OSError as exc:
                self.write_errors += 1
                raise self._os_error(exc, "fdatasync WAL segment " + seg.path) from None
        for job in self._syncing:  # write mode: sealed segments still being synced
            job.wait()
        self._syncing = []

    def _drain(self):
        """Wait (cooperatively) until no record is pending, scheduled or in flight.

        Returns False when a batch is still in the WAL thread after commit_timeout (the
        disk hangs): that batch cannot be waited for any longer. A failed batch ends
        the wait too (the journal is broken; its callers got WalIOError)."""
        if self._repairing is not None:  # it writes through the segments' files
            self._repairing.join()
        while self._broken is None and (self._inflight is not None or self._committed_lsn < self.lsn):
            batch = self._inflight
            if batch is not None and batch.expired:
                return False
            # The batch in flight first: its waiters get commit_timeout (pending ones do not).
            try:
                self.wait(batch.last_lsn if batch is not None else self.lsn)
            except WalError:
                if batch is not None and self._inflight is batch:
                    return False
        return True

    def close(self):
        """Refuse new records, write and fsync those logged so far, then stop the WAL
        thread and close the files (cooperative: the caller yields while it waits).

        From the first line on, log() raises WalClosed (the operation is not applied), so
        a fiber cannot slip a record in while close() waits. Records logged before are
        all written and fsynced (pending, scheduled and in-flight batches) before the
        thread stops and the files close. Should a batch still be in the WAL thread
        after commit_timeout (a hung disk), close() stops waiting and raises WalError:
        the records logged after that batch are not written (their callers get
        WalClosed), the thread stops after it and its files are closed when it completes
        - never under the thread.
        """
        if self._closed:
            return
        self._closed = True  # log() refuses from here on (WalClosed)
        self._direct = False  # write mode: log() takes the general path, which raises
        try:
            self.sync()
        finally:
            thread, self._thread = self._thread, None
            if thread is not None:
                thread.close()  # after its job, if one runs: that job's result still comes back
            if self._pending or self._waiters:  # given up on (or interrupted): never written
                self._failed = self._failed + self._pending  # (and so the file is not trimmed)
                self._pending = []
                if self._waiters:
                    self._hub.loop.run_callback(self._closed_waiters)
            if self._inflight is None:
                self._close_files()
            # else: _flushed closes the files once the thread is done with the batch

    def _closed_waiters(self):
        """In the hub (parked fibers are switched from there): the fibers waiting for
        records that will not be written, the journal being closed, get WalClosed."""
        waiters, self._waiters = self._waiters, []
        self._wake_waiters(waiters, WalClosed("the WAL was closed before this record was written"))

    def _close_files(self):
        seg, self._seg = self._seg, None
        if seg is not None and seg.map is not None:
            seg.map.close()
            seg.map = None
        if seg is not None and not self._pending and not self._failed:
            self._finalize_now(seg)
        elif seg is not None and seg.fd is not None:
            self.disk.close(seg.fd)
            seg.fd = None
        for seg in self._sealed:
            if seg.map is not None:
                seg.map.close()
                seg.map = None
            if seg.fd is not None:
                self.disk.close(seg.fd)
                seg.fd = None

    # -- figures --------------------------------------------------------------------

    @property
    def records(self):
        """Records logged since the journal opened (none mode logs none)."""
        return 0 if self._none else self.lsn - self._lsn0

    @property
    def bytes_written(self):
        return self._logged if self.mode == "write" else self._bytes_written

    @property
    def threshold(self):
        """(bytes, callback): callback() is called once, from log(), when the bytes logged
        since the last snapshot reach bytes; it must not block. None: no threshold."""
        return self._threshold

    @threshold.setter
    def threshold(self, value):
        self._threshold = value
        self._threshold_at = INF if value is None else self._mark + value[0]

    def _crossed(self):
        threshold, self.threshold = self._threshold, None
        if threshold is not None:
            threshold[1]()  # must not block: it wakes the checkpoint fiber

    def take_bytes_since_snapshot(self, reset=False):
        value = self._logged - self._mark
        if reset:
            self._mark = self._logged
            self.threshold = self._threshold
        return value

    def consume_bytes_since_snapshot(self, n):
        """A snapshot covered n of the bytes counted since the last one: stop counting them."""
        self._mark += max(0, min(n, self._logged - self._mark))
        self.threshold = self._threshold

    def _warn(self, msg, *args):
        if self.logger is not None:
            self.logger.warning(msg, *args)

    def _info(self, msg, *args):
        if self.logger is not None:
            self.logger.info(msg, *args)
