"""`wal cat` and `wal verify` on real data directories."""
import os

import orjson
from click.testing import CliRunner

from fiberapp.cli.wal import wal
from fiberapp.runtime.clock import FakeClock
from queues.persist import Persistence

from .kvstore import KVAdapter
from .test_recovery import _flip_bit_in_record, segments


def make_dir(path):
    clock = FakeClock(start=100.0, wall=1_700_000_000.0)
    p = Persistence(str(path), clock, KVAdapter(), wal_max_size=800)
    store = p.open()
    for i in range(30):
        store.set(f"k{i}", i, expires_at=clock.monotonic() + i)
        if i == 10:
            p.snapshot()
    store.set("bin", b"\xff\x00")
    p.close()


def test_cat_prints_json_lines_with_filters_and_wall_clock_deadlines(tmp_path):
    make_dir(tmp_path)
    result = CliRunner().invoke(wal, ["cat", str(tmp_path), "--from-lsn", "5", "--to-lsn", "31"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.output.splitlines()]
    assert [line["lsn"] for line in lines] == list(range(5, 32))
    assert lines[0]["op"] == {"op": "set", "key": "k4", "value": 4, "expires_at": 1_700_000_004.0}
    assert lines[-1]["op"]["value"] == {"base64": "/wA="}
    assert all(os.path.exists(line["file"]) for line in lines)


def test_cat_of_one_segment(tmp_path):
    make_dir(tmp_path)
    seg = segments(tmp_path)[0]
    result = CliRunner().invoke(wal, ["cat", seg])
    assert result.exit_code == 0
    assert {orjson.loads(line)["file"] for line in result.output.splitlines()} == {seg}


def test_verify_ok_then_damaged(tmp_path):
    make_dir(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(wal, ["verify", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "0 problem(s)" in ok.output and "snapshot lsn 11: ok" in ok.output
    seg = segments(tmp_path)[0]
    offset = _flip_bit_in_record(seg, 1)
    bad = runner.invoke(wal, ["verify", str(tmp_path)])
    assert bad.exit_code == 1
    assert f"{seg}:" in bad.output and f"offset {offset}: checksum mismatch" in bad.output
