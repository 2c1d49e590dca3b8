"""WAL record framing: one store operation per record.

Layout (little-endian)::

    header  magic u32 | body_len u32 | crc32(body) u32
    body    version u8 | lsn u64 | wall_offset f64 | msgpack(op)

- magic lets a reader that lost its place (force recovery) find the next record;
- the CRC covers the version, the LSN, the offset and the operation, so a flipped bit
  anywhere in the body is detected; a damaged length is detected by the CRC of the
  wrong span (or by running past the end of the file);
- version is the body format; readers dispatch on it (only 1 exists);
- wall_offset is clock.time() - clock.monotonic() when the record was made. Operations
  carry monotonic deadlines (keys ending in ``_at``); ``mono + wall_offset`` is the
  wall-clock time, and recovery maps it back with ``mono + (wall_offset - offset_now)``.
  Storing the offset instead of rewriting every ``_at`` value keeps the hot path to one
  msgpack call, loses nothing (the wall-clock time is exactly recoverable, ``wal cat``
  prints it), and leaves values untouched when the offset did not change.
"""
import struct
import zlib

import msgpack

MAGIC = 0xFA1B0C01
VERSION = 1
HEADER = struct.Struct("<III")
BODY_PREFIX = struct.Struct("<BQd")
HEADER_SIZE = HEADER.size
# HEADER followed by BODY_PREFIX: the reader's fast path reads both with one call.
FRAME = struct.Struct("<IIIBQd")
MAGIC_BYTES = struct.pack("<I", MAGIC)
# A body longer than this is certainly a damaged length field, not a record.
MAX_BODY = 64 << 20


class Encoder:
    """Builds records; one per journal (the Packer keeps a reusable buffer)."""

    __slots__ = ("pack",)

    def __init__(self):
        # One Packer reused: its buffer is kept between calls. journal.Journal.log inlines
        # encode() with this pack.
        self.pack = msgpack.Packer(use_bin_type=True).pack

    def encode(self, lsn, wall_offset, op):
        body = BODY_PREFIX.pack(VERSION, lsn, wall_offset) + self.pack(op)
        return HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


class BadRecord(Exception):
    """Internal to the reader: the bytes at an offset are not a valid record."""

    def __init__(self, reason, incomplete=False):
        super().__init__(reason)
        self.reason = reason
        self.incomplete = incomplete


def decode_at(data, offset):
    """Decode the record at offset in data (bytes or a memoryview of them).

    Returns (lsn, wall_offset, op, next_offset). Raises BadRecord, with incomplete=True
    when the bytes simply run out (what a crash mid-write leaves).
    """
    end = len(data)
    if end - offset < HEADER_SIZE:
        raise BadRecord("incomplete record header", incomplete=True)
    magic, length, crc = HEADER.unpack_from(data, offset)
    if magic != MAGIC:
        raise BadRecord("bad record magic 0x%08x" % magic)
    if length < BODY_PREFIX.size or length > MAX_BODY:
        raise BadRecord("bad record length %d" % length)
    start = offset + HEADER_SIZE
    stop = start + length
    if stop > end:
        raise BadRecord("record runs past end of file", incomplete=True)
    body = data[start:stop]
    if zlib.crc32(body) != crc:
        raise BadRecord("checksum mismatch")
    version, lsn, wall_offset = BODY_PREFIX.unpack_from(body, 0)
    if version != VERSION:
        raise BadRecord("unknown record version %d" % version)
    try:
        op = msgpack.unpackb(body[BODY_PREFIX.size:], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise BadRecord("undecodable operation: %s" % exc) from None
    if not isinstance(op, dict):
        raise BadRecord("operation is not a map")
    return lsn, wall_offset, op, stop
