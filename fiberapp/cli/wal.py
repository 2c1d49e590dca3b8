"""`fiberapp wal cat` and `fiberapp wal verify`: read-only tools for WAL and snapshot files.

They open files directly and never take the data-directory lock, so they work beside a
running server (a record being written at that moment shows up as a torn tail).
No patching and no app imports here: the lead's CLI registers this group.
"""
import base64
import os
import sys

import click
import orjson

from queues.persist import snapshot as snapfile
from queues.persist.disk import Disk
from queues.persist.errors import SnapshotCorrupt, WalCorrupt
from queues.persist.recovery import last_holding
from queues.persist.segment import SUFFIX as WAL_SUFFIX
from queues.persist.segment import SegmentReader, list_files
from queues.persist.timeconv import to_wall


def _jsonable(value):
    """Bytes are shown as text when they are UTF-8, else as {"base64": ...}."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _segments_of(path):
    if os.path.isdir(path):
        wal_dir = os.path.join(path, "wal") if os.path.isdir(os.path.join(path, "wal")) else path
        segments, bad = list_files(wal_dir, WAL_SUFFIX)
        return [p for _lsn, p in segments], bad
    return [path], []


def _mentions_tube(op, tube):
    if op.get("tube") == tube:
        return True
    task = op.get("task")
    return isinstance(task, dict) and task.get("tube") == tube


@click.group("wal")
def wal():
    """Inspect and check WAL segments and snapshots."""


@wal.command("cat")
@click.argument("path", type=click.Path(exists=True))
@click.option("--from-lsn", type=int, default=None, help="First LSN to print.")
@click.option("--to-lsn", type=int, default=None, help="Last LSN to print.")
@click.option("--tube", default=None, help="Only operations on this tube.")
def cat(path, from_lsn, to_lsn, tube):
    """Print WAL records as JSON lines (PATH: a segment, a wal/ dir or a data dir).

    Each line: {"lsn", "file", "offset", "op"}; deadlines (`*_at`) in the op are shown
    as wall-clock seconds since the epoch (task data is shown as it is).
    """
    paths, _bad = _segments_of(path)
    disk = Disk()
    out = sys.stdout.buffer
    last = last_holding(paths)  # a torn tail is torn there; the segments after it are empty
    for i, seg in enumerate(paths):
        if i > last:
            click.echo(f"warning: {seg}: holds no record (start-up removes such a segment)", err=True)
            continue
        reader = SegmentReader(seg, disk.read_file(seg), newest=i == last)
        try:
            for offset, lsn, wall_offset, op in reader:
                if from_lsn is not None and lsn < from_lsn:
                    continue
                if to_lsn is not None and lsn > to_lsn:
                    return
                if tube is not None and not _mentions_tube(op, tube):
                    continue
                line = {"lsn": lsn, "file": seg, "offset": offset, "op": to_wall(op, wall_offset)}
                out.write(orjson.dumps(line, default=_jsonable, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        except WalCorrupt as exc:
            out.flush()
            raise click.ClickException(str(exc))
        if reader.torn is not None:
            click.echo(f"warning: {seg}: torn last record at offset {reader.torn.offset} "
                       f"({reader.torn.reason})", err=True)
    out.flush()


@wal.command("verify")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
def verify(data_dir):
    """Check every checksum in DATA_DIR's WAL segments and snapshots; exit 1 on damage.

    Prints one line per file (records, LSN range, status) and a summary. A torn tail of
    the newest segment holding records is reported but is not damage (start-up cuts it
    off), nor are segments after it that hold no record (start-up removes them).
    """
    wal_dir = os.path.join(data_dir, "wal") if os.path.isdir(os.path.join(data_dir, "wal")) else data_dir
    snap_dir = os.path.join(data_dir, "snap")
    disk = Disk()
    problems = 0
    segments, bad = list_files(wal_dir, WAL_SUFFIX)
    for path in bad:
        click.echo(f"{path}: BAD NAME")
        problems += 1
    prev_last = None
    last = last_holding([path for _first, path in segments])
    for i, (first, path) in enumerate(segments):
        if i > last:
            click.echo(f"{path}: 0 records: holds no record (start-up removes such a segment)")
            continue
        damages = []
        reader = SegmentReader(path, disk.read_file(path), newest=i == last,
                               force=True, on_skip=damages.append)
        count, lo, hi, order_ok = 0, None, None, True
        for _offset, lsn, _wo, _op in reader:
            if hi is not None and lsn != hi + 1:
                order_ok = False
            count += 1
            lo = lsn if lo is None else lo
            hi = lsn
        status = "ok"
        if damages:
            problems += len(damages)
            status = "DAMAGED: " + "; ".join(f"offset {d.offset}: {d.reason}" for d in damages)
        elif not order_ok:
            problems += 1
            status = "DAMAGED: LSNs out of order"
        elif lo is not None and lo != first:
            problems += 1
            status = f"DAMAGED: first record has lsn {lo}, the file name says {first}"
        elif reader.torn is not None:
            status = f"torn tail at offset {reader.torn.offset} (cut off at next start)"
        if prev_last is not None and lo is not None and lo != prev_last + 1:
            problems += 1
            status += f"; GAP: lsn {prev_last + 1}..{lo - 1} missing before this file"
        click.echo(f"{path}: {count} records, lsn {lo}..{hi}: {status}")
        if hi is not None:
            prev_last = hi
    snaps, bad_snaps = snapfile.list_snapshots(snap_dir)
    for path in bad_snaps:
        click.echo(f"{path}: BAD NAME")
        problems += 1
    for lsn, path in snaps:
        try:
            snap_lsn, _offset, _dump = snapfile.read_file(disk, path)
            click.echo(f"{path}: snapshot lsn {snap_lsn}: ok")
        except SnapshotCorrupt as exc:
            problems += 1
            click.echo(f"{path}: DAMAGED: {exc.reason}")
    click.echo(f"{len(segments)} segment(s), {len(snaps)} snapshot(s), {problems} problem(s)")
    if problems:
        sys.exit(1)
