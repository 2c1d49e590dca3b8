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


# -- encoded hot ops ------------------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True).pack
# msgpack's forms of a non-negative int below 2**32, smallest first: (marker, struct code)
_UINT_FORMS = ((b"", "B"), (b"\xcc", "B"), (b"\xcd", "H"), (b"\xce", "I"))
# The "data" key and the header of a value of n bytes, n < 256: bin (bytes) and str forms
_BIN_HEADS = tuple(b"\xa4data\xc4" + bytes((n,)) for n in range(256))
_STR_HEADS = tuple(b"\xa4data" + (bytes((0xa0 | n,)) if n < 32 else b"\xd9" + bytes((n,))) for n in range(256))
_DATA16 = struct.Struct(">5sBH").pack  # the "data" key, bin 16 / str 16 marker, length
# Ids up to 2**30 - 1 are built here (bigger ones by the packer): CPython 3.11 specialises
# an int comparison only for ints of one 30-bit digit, the bound included.
_ID_MAX = (1 << 30) - 1
_SESSIONS_KEPT = 4096  # OpRecords' packed session names; then it starts again (names come and go with fibers)


def _by_uint_form(head, rest):
    """For each of _UINT_FORMS: (pack, head + marker), pack a Struct that packs head, the
    id in that form, then ``rest`` (struct codes of what follows the id)."""
    return tuple((struct.Struct(">%ds%s%s" % (len(head) + len(marker), code, rest)).pack, head + marker)
                 for marker, code in _UINT_FORMS)


class OpRecords:
    """The msgpack encodings of one tube's put, take and ack ops, built without the dict.

    A journal that declares ``encoded_ops = True`` takes, in ``log(op)``, either an op dict
    or ``bytes``: the op already encoded. These three methods return exactly the bytes
    ``msgpack.Packer(use_bin_type=True).pack`` gives for the dict the store would build
    (same keys in the same order, msgpack's own smallest int and str forms; a test holds
    them to it), so the WAL's records, recovery and ``wal cat`` do not change. They spare
    the op dict and the generic packer: everything up to the id (map header, "op", "tube",
    the tube's name, the "id" key and the id's marker) is packed once per tube and id
    form, and one struct call packs it with the id and the fixed-size fields after it;
    the one variable-size field (data, session) comes last, appended. What this does not
    cover (an id of 2**30 or more, data other than bytes or str or of 64 KiB or more, a
    time that is not a float) goes through the dict and the packer, so the result is the
    same whatever the op.

    ``tid`` is a task id (a positive int). The store uses these only for ops whose dict
    would hold no other key (see PutMixin.put, Tube.take, Tube.ack).
    """

    __slots__ = ("tube", "_put_bin8", "_put", "_take", "_ack", "_sessions")

    def __init__(self, tube):
        self.tube = tube
        # str session name -> its packed form. Only str: True, 1 and 1.0 are one dict key
        # but three different msgpack values (the in-process API does not check the type).
        self._sessions = {}
        name = _packb(tube)
        put = b"\x85\xa2op\xa3put\xa4tube" + name + b"\xa2id"
        self._put_bin8 = _by_uint_form(put, "12sd6sB")  # created_at, and the header of bin 8 data
        self._put = _by_uint_form(put, "12sd")
        self._take = _by_uint_form(b"\x85\xa2op\xa4take\xa4tube" + name + b"\xa2id", "10sd")
        self._ack = _by_uint_form(b"\x83\xa2op\xa3ack\xa4tube" + name + b"\xa2id", "")

    # Each method does what it does not build first: a short branch after a comparison
    # keeps it specialised in CPython 3.11 (see tube.Tube.take).

    def put(self, tid, data, created_at):
        """{"op": "put", "tube": tube, "id": tid, "created_at": created_at, "data": data}"""
        kind = type(data)
        if tid > _ID_MAX or type(created_at) is not float or not (kind is bytes or kind is str):
            return _packb({"op": "put", "tube": self.tube, "id": tid, "created_at": created_at, "data": data})
        form = 3 if tid > 65535 else 2 if tid > 255 else 1 if tid > 127 else 0
        if kind is bytes and len(data) < 256:  # the commonest: one struct call, one concatenation
            pack, head = self._put_bin8[form]
            return pack(head, tid, b"\xaacreated_at\xcb", created_at, b"\xa4data\xc4", len(data)) + data
        if kind is bytes:
            raw, heads, marker16 = data, _BIN_HEADS, 0xc5
        else:
            raw, heads, marker16 = data.encode(), _STR_HEADS, 0xda
        n = len(raw)
        if n >= 65536:
            return _packb({"op": "put", "tube": self.tube, "id": tid, "created_at": created_at, "data": data})
        pack, head = self._put[form]
        return b"".join((pack(head, tid, b"\xaacreated_at\xcb", created_at),
                         heads[n] if n < 256 else _DATA16(b"\xa4data", marker16, n), raw))

    def take(self, tid, session, taken_at):
        """{"op": "take", "tube": tube, "id": tid, "taken_at": taken_at, "session": session}"""
        if tid > _ID_MAX or type(taken_at) is not float:
            return _packb({"op": "take", "tube": self.tube, "id": tid, "taken_at": taken_at, "session": session})
        if session.__class__ is str:
            sessions = self._sessions
            packed = sessions.get(session)
            if packed is None:
                if len(sessions) >= _SESSIONS_KEPT:
                    sessions.clear()
                packed = sessions[session] = b"\xa7session" + _packb(session)
        else:
            packed = b"\xa7session" + _packb(session)
        pack, head = self._take[3 if tid > 65535 else 2 if tid > 255 else 1 if tid > 127 else 0]
        return pack(head, tid, b"\xa8taken_at\xcb", taken_at) + packed

    def ack(self, tid):
        """{"op": "ack", "tube": tube, "id": tid}"""
        if tid > _ID_MAX:
            return _packb({"op": "ack", "tube": self.tube, "id": tid})
        pack, head = self._ack[3 if tid > 65535 else 2 if tid > 255 else 1 if tid > 127 else 0]
        return pack(head, tid)


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
