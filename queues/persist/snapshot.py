"""Snapshot files: a point-in-time copy of the store, named by the LSN it includes.

``<snap_dir>/<lsn, 20 digits>.snap``, written as ``.snap.inprogress``, fsynced, renamed,
directory fsynced, so a reader only ever sees complete files. Layout::

    b"fiberapp-snap 1\\n"                      16 bytes
    lsn u64 | wall_offset f64 | body_len u64 | crc32(body) u32
    body = msgpack(tables(store.dump()))

The dump holds monotonic deadlines; wall_offset maps them back (timeconv.py).
A top-level list of dicts that all share one key order (the tasks) is stored as a table,
keys once and a list of values per row: a million tasks take ~2.5x less space and time
to pack than a million maps repeating 22 key names. Reading gives it back as a ``Table``:
a sequence of those dicts, built one by one as they are read, whose ``columns`` and
``rows`` a store that knows the columns uses directly (queues.snapshot.restore: no dict
per task at recovery).
"""
from collections.abc import Sequence
import os
import struct
import zlib

import msgpack

from .errors import SnapshotCorrupt
from .segment import list_files
from .timeconv import shift, shift_table

MAGIC = b"fiberapp-snap 1\n"
HEADER = struct.Struct("<QdQI")
SUFFIX = ".snap"
TMP_SUFFIX = ".snap.inprogress"


def snapshot_name(lsn):
    return f"{lsn:020d}{SUFFIX}"


def list_snapshots(snap_dir):
    """[(lsn, path)] oldest first, [path] badly named."""
    return list_files(snap_dir, SUFFIX)


TABLE = "\x00table"


def tables(dump):
    """The form a snapshot body packs: top-level lists of same-keyed dicts as tables."""
    if not isinstance(dump, dict):
        return dump
    out = {}
    for key, value in dump.items():
        if isinstance(value, Table) or (
                hasattr(value, "columns") and hasattr(value, "rows") and not isinstance(value, dict)):
            # already a table (a store's dump_tables(): columns + rows, no dict per row);
            # "nested" names the columns that may hold dicts or lists (see timeconv)
            out[key] = {TABLE: list(value.columns), "rows": value.rows}
            nested = getattr(value, "nested", None)
            if nested is not None:
                out[key]["nested"] = list(nested)
            continue
        if isinstance(value, list) and value and type(value[0]) is dict:
            keys = list(value[0])
            if all(type(row) is dict and list(row) == keys for row in value):
                out[key] = {TABLE: keys, "rows": [list(row.values()) for row in value]}
                continue
        out[key] = value
    return out


class Table(Sequence):
    """A list of dicts that share one key order, kept as ``columns`` (the keys) and
    ``rows`` (a sequence of values per dict). Reads as the list of dicts it stands for;
    each dict is built when it is read. Equal to a Table or a list of the same dicts."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns, rows):
        self.columns = columns
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [dict(zip(self.columns, row)) for row in self.rows[index]]
        return dict(zip(self.columns, self.rows[index]))

    def __iter__(self):
        columns = self.columns
        return (dict(zip(columns, row)) for row in self.rows)

    def __eq__(self, other):
        if isinstance(other, Table) and list(other.columns) == list(self.columns):
            return len(self.rows) == len(other.rows) and all(
                list(a) == list(b) for a, b in zip(self.rows, other.rows))
        if isinstance(other, (list, tuple, Table)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"<Table {len(self.rows)} rows of {list(self.columns)}>"


def expand(raw, delta):
    """The dump a snapshot holds, its deadlines moved by delta (timeconv.shift); its
    tables (see tables()) as Table sequences."""
    if not isinstance(raw, dict):
        return shift(raw, delta)
    out = {}
    for key, value in raw.items():
        if type(value) is dict and TABLE in value:
            keys = value[TABLE]
            out[key] = Table(keys, shift_table(keys, value["rows"], delta, value.get("nested")))
        else:
            out[key] = shift(value, delta)
    return out


# A table's rows are packed this many at a time, and the file written ~1 MiB at a time:
# the writer never holds the whole body (141 MiB for a million tasks) nor a copy of it.
CHUNK_ROWS = 4096
WRITE_SIZE = 1 << 20


def _array_header_size(n):
    return 1 if n <= 15 else 3 if n <= 0xFFFF else 5


def body_pieces(dump):
    """The body's msgpack bytes, piece by piece: the same bytes as
    ``msgpack.packb(tables(dump))``, but a table's rows are packed a chunk at a time."""
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    top = tables(dump)
    if not isinstance(top, dict):
        yield pack(top)
        return
    yield packer.pack_map_header(len(top))
    for key, value in top.items():
        yield pack(key)
        if type(value) is not dict or TABLE not in value:
            yield pack(value)
            continue
        yield packer.pack_map_header(len(value))
        for name, item in value.items():
            yield pack(name)
            if name != "rows":
                yield pack(item)
                continue
            yield packer.pack_array_header(len(item))
            for start in range(0, len(item), CHUNK_ROWS):
                chunk = item[start:start + CHUNK_ROWS]
                if type(chunk) is not list:
                    chunk = list(chunk)
                # the chunk packed as an array, without that array's own header
                yield memoryview(pack(chunk))[_array_header_size(len(chunk)):]


def encode(lsn, wall_offset, dump):
    body = b"".join(body_pieces(dump))
    return MAGIC + HEADER.pack(lsn, wall_offset, len(body), zlib.crc32(body)) + body


def write_file(disk, snap_dir, lsn, wall_offset, dump):
    """Blocking: write a complete snapshot under its temporary name and fsync it.

    The body is packed and written in pieces (CRC kept running), the header last.
    Returns the temporary path; publish() makes it visible. Safe in a forked child: it
    does no gevent I/O.
    """
    tmp = os.path.join(snap_dir, snapshot_name(lsn)[: -len(SUFFIX)] + TMP_SUFFIX)
    fd = disk.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        head = len(MAGIC) + HEADER.size
        pos, crc, pending, size = head, 0, [], 0
        for piece in body_pieces(dump):
            crc = zlib.crc32(piece, crc)
            pending.append(piece)
            size += len(piece)
            if size >= WRITE_SIZE:
                disk.pwrite_all(fd, b"".join(pending), pos)
                pos += size
                pending, size = [], 0
        if pending:
            disk.pwrite_all(fd, b"".join(pending), pos)
            pos += size
        disk.pwrite_all(fd, MAGIC + HEADER.pack(lsn, wall_offset, pos - head, crc), 0)
        disk.fsync(fd)
    finally:
        disk.close(fd)
    return tmp


def publish(disk, snap_dir, tmp):
    final = tmp[: -len(TMP_SUFFIX)] + SUFFIX
    disk.rename(tmp, final)
    disk.fsync_dir(snap_dir)
    return final


def read_file(disk, path):
    """(lsn, wall_offset, raw) of a snapshot, or SnapshotCorrupt; expand(raw, delta) gives
    the dump."""
    try:
        data = disk.read_file(path)
    except OSError as exc:
        raise SnapshotCorrupt(path, f"cannot read: {exc}") from None
    head = len(MAGIC) + HEADER.size
    if len(data) < head or data[: len(MAGIC)] != MAGIC:
        raise SnapshotCorrupt(path, "bad or truncated header")
    lsn, wall_offset, length, crc = HEADER.unpack_from(data, len(MAGIC))
    if len(data) != head + length:
        raise SnapshotCorrupt(path, f"size {len(data)} does not match the header's {head + length}")
    body = memoryview(data)[head:]
    if zlib.crc32(body) != crc:
        raise SnapshotCorrupt(path, "checksum mismatch")
    try:
        dump = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise SnapshotCorrupt(path, f"undecodable: {exc}") from None
    return lsn, wall_offset, dump
