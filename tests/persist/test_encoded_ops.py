"""Journal.log takes an op dict or its msgpack encoding (bytes): the same records result."""
import msgpack
import pytest

from fiberapp.runtime.clock import FakeClock
from queues.persist.journal import Journal

from .test_journal import read_all

OPS = [
    {"op": "put", "tube": "t", "id": 1, "created_at": 1.5, "data": b"x" * 100},
    {"op": "take", "tube": "t", "id": 1, "taken_at": 2.5, "session": "s"},
    {"op": "ack", "tube": "t", "id": 1},
]


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("mode,mapped", [("write", True), ("write", False), ("fsync", None)])
def test_an_encoded_op_is_logged_byte_for_byte_as_its_dict(tmp_path, mode, mapped):
    assert Journal.encoded_ops  # the store adapter hands encoded ops only to such a journal
    packb = msgpack.Packer(use_bin_type=True).pack
    dirs = []
    for encoded in (False, True):
        d = tmp_path / ("bytes" if encoded else "dicts")
        d.mkdir()
        j = Journal(str(d), mode, FakeClock(), mapped=mapped)
        for op in OPS * 3:
            j.wait(j.log(packb(op) if encoded else op))
        j.close()
        dirs.append(d)
    assert [op for _lsn, op in read_all(str(dirs[1]))] == OPS * 3
    assert _files(dirs[0]) == _files(dirs[1])
