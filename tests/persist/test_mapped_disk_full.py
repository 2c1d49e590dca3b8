"""Write mode through the mapping on a full disk (from the review: the suite covered the
refusal with pwrite only, since a FaultyDisk turns the mapping off unless mapped=True)."""
import errno

import pytest

from fiberapp.runtime.clock import FakeClock
from queues.persist.errors import WalDiskFull
from queues.persist.journal import Journal

from .faults import FaultyDisk
from .test_journal import read_all


def test_write_mode_mapped_disk_full_refuses_the_op_and_resumes(tmp_path):
    disk = FaultyDisk()
    j = Journal(str(tmp_path), "write", FakeClock(), disk=disk, reserve_chunk=4096, mapped=True)
    j.log({"op": "a"})
    assert j._seg.map is not None
    disk.fail("fallocate", errno.ENOSPC)
    with pytest.raises(WalDiskFull):
        for _ in range(1000):
            j.log({"op": "b", "pad": "x" * 100})
    logged = j.lsn  # the refused record used no LSN
    disk.heal()
    j.log({"op": "d"})
    j.close()
    records = read_all(str(tmp_path))
    assert [lsn for lsn, _ in records] == list(range(1, logged + 2))
    assert records[-1][1] == {"op": "d"}
