"""WAL segment files: naming, listing, and reading with damage classification.

A segment is ``<wal_dir>/<first lsn, 20 digits>.wal``: a 16-byte file header followed by
records (record.py). The writer preallocates space, so a segment may end in zero bytes
that were reserved but never written; a zero tail is a clean end, not damage.

Damage rules (the reader is read-only; recovery decides what to change):
- a bad record followed by no valid record, in the newest segment, is a torn tail: the
  crash happened mid-write; it is reported as ``torn`` and recovery cuts it off. The
  caller says which segment is the newest: recovery and ``wal cat|verify`` pass the newest
  one holding a record (recovery.last_holding), since later ones may hold none yet;
- any other bad record (bad magic, checksum mismatch, undecodable operation, or a bad
  tail in an older segment) raises WalCorrupt naming the file and offset, unless
  ``force`` is set, in which case it is reported through ``on_skip`` and the reader
  resynchronises on the next valid record.
"""
import os
import zlib
from dataclasses import dataclass

import msgpack

from .errors import WalCorrupt
from .record import BODY_PREFIX, FRAME, HEADER_SIZE, MAGIC, MAGIC_BYTES, MAX_BODY, VERSION, BadRecord, decode_at

FILE_HEADER = b"fiberapp-wal 1\n\x00"
SUFFIX = ".wal"


def segment_name(first_lsn):
    return f"{first_lsn:020d}{SUFFIX}"


def parse_name(name, suffix):
    """The LSN a file name carries, or None when it is not one of ours."""
    if not name.endswith(suffix):
        return None
    stem = name[: -len(suffix)]
    if len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def list_files(directory, suffix):
    """[(lsn, path)] sorted by lsn, for the well-named files; [path] of badly named ones."""
    good, bad = [], []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return good, bad
    for name in names:
        if not name.endswith(suffix):
            continue
        lsn = parse_name(name, suffix)
        path = os.path.join(directory, name)
        if lsn is None:
            bad.append(path)
        else:
            good.append((lsn, path))
    good.sort()
    return good, bad


@dataclass
class Damage:
    path: str
    offset: int
    reason: str
    kind: str  # "torn" (cut off) or "skipped" (force recovery)


class SegmentReader:
    """Iterate over the records of one segment: yields (offset, lsn, wall_offset, op).

    After iteration: ``end`` is the offset just past the last valid record and
    ``torn`` the Damage of a torn tail (or None).
    """

    def __init__(self, path, data, newest=False, force=False, on_skip=None, covered=0):
        self.path = path
        self.covered = covered  # records <= covered are in a snapshot: damage there is moot
        self.data = data
        self.newest = newest
        self.force = force
        self.on_skip = on_skip
        self.end = 0
        self.torn = None

    def __iter__(self):
        data, path = self.data, self.path
        n = len(data)
        if data[: len(FILE_HEADER)] != FILE_HEADER:
            if self.newest and _header_cut_short(data):
                # The crash came while the file header itself was being written (after
                # the file was created and its space reserved: the rest is zeros).
                self.torn = Damage(path, 0, "incomplete file header", "torn")
                return
            self._fail(0, "bad segment file header")
            return
        off = len(FILE_HEADER)
        view = memoryview(data)  # records are decoded without copying their bytes
        # The fast path for sound records: the checks of decode_at inlined, header and body
        # prefix read with one struct call, and ``end`` kept in a local (written to
        # self.end when iteration stops, however it stops). Recovery spends a good part of
        # its time in this loop.
        frame, crc32, unpackb = FRAME.unpack_from, zlib.crc32, msgpack.unpackb
        body_min, frame_size = BODY_PREFIX.size, FRAME.size
        end = 0
        try:
            while off < n:
                if n - off >= frame_size:
                    magic, length, crc, version, lsn, wall_offset = frame(view, off)
                    stop = off + HEADER_SIZE + length
                    if magic == MAGIC and body_min <= length <= MAX_BODY and stop <= n \
                            and version == VERSION and crc32(view[off + HEADER_SIZE:stop]) == crc:
                        try:
                            op = unpackb(view[off + frame_size:stop], raw=False, strict_map_key=False)
                        except Exception:
                            op = None
                        if type(op) is dict:
                            yield off, lsn, wall_offset, op
                            off = end = stop
                            continue
                try:
                    lsn, wall_offset, op, nxt = decode_at(view, off)
                except BadRecord as exc:
                    if data.count(0, off) == n - off:
                        break  # reserved, never written: the clean end
                    resume = _next_valid(data, off + 1)
                    if resume is not None and decode_at(data, resume)[0] <= self.covered + 1:
                        off = resume  # every damaged record is older than the snapshot
                        continue
                    if resume is None and self.newest:
                        end = off
                        self.torn = Damage(path, off, exc.reason, "torn")
                        return
                    if not self._fail(off, exc.reason):
                        return
                    if resume is None:
                        end = off
                        return
                    off = resume
                    continue
                yield off, lsn, wall_offset, op
                off = end = nxt
            end = off if off <= n else n
            # A zero tail: end is where the zeros start.
            end = min(end, _zero_tail_start(data, end))
        finally:
            self.end = end

    def _fail(self, offset, reason):
        """Raise, or (force) report the skip and return True to go on."""
        if not self.force:
            raise WalCorrupt(self.path, offset, reason)
        if self.on_skip is not None:
            self.on_skip(Damage(self.path, offset, reason, "skipped"))
        return True


def _header_cut_short(data):
    """True when data is a beginning of FILE_HEADER followed by zeros only."""
    size = len(FILE_HEADER)
    if data.count(0, size) != max(0, len(data) - size):
        return False
    return FILE_HEADER.startswith(bytes(data[:size]).rstrip(b"\0"))


def _next_valid(data, start):
    """Offset of the next decodable record at or after start, or None."""
    pos = data.find(MAGIC_BYTES, start)
    while pos != -1:
        try:
            decode_at(data, pos)
            return pos
        except BadRecord:
            pos = data.find(MAGIC_BYTES, pos + 1)
    return None


def _zero_tail_start(data, start):
    return start if data.count(0, start) == len(data) - start else len(data)
