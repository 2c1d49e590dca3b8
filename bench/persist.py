"""Durability benchmarks: cycles/s per wal_mode, snapshot of N tasks, recovery of N tasks.

    .venv/bin/python -m bench.persist cycles  [--seconds 2] [--runs 3]
    .venv/bin/python -m bench.persist snapshot [--tasks 1000000]
    .venv/bin/python -m bench.persist recovery [--tasks 1000000]

cycles: put + take + ack of 100-byte tasks, in-process, wal_mode none / write / fsync,
with 1 and with 50 fibers, side by side in one run; median of --runs runs; per-operation
latency (call to return, i.e. including the commit wait) p50/p99, the WAL's commit latency
p99 (first record of a batch logged -> durable; fsync mode) and records per write (write
mode writes each record on its own) or per fdatasync (fsync mode). The peers (Tarantool + queue, beanstalkd) are not run here: their figures
on this kind of machine are in the task brief and quoted in bench/RESULTS.md.
snapshot: fill a store with --tasks tasks, then take a forked snapshot while a monitor
fiber measures how long the loop stalls (the longest gap between 1 ms ticks, and the sum
of the excess); reports time, file size, fork() time.
recovery: --tasks puts, a snapshot, then --tasks WAL records (take + release pairs), close,
and time the recovery of --tasks live tasks from snapshot + WAL; and from WAL alone.
"""
from fiberapp.runtime.patch import patch_all

patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from bench.common import cpu_pressure  # noqa: E402
from fiberapp.runtime.clock import SystemClock  # noqa: E402
from queues.persist import open_store  # noqa: E402

DATA = b"x" * 100
PEER_FLAGS = {"none": "(no binlog)", "write": "-b -F (binlog, no fsync)", "fsync": "-b -f0 (fsync every write)"}


def _pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def one_cycle_run(mode, fibers, seconds, base):
    data_dir = tempfile.mkdtemp(dir=base)
    try:
        store, persistence = open_store(data_dir, SystemClock(), wal_mode=mode,
                                        checkpoint_wal_threshold=1 << 40)
        tube = store.create_tube("bench", "fifo")
        lat = []
        stop = [False]
        counts = [0]
        perf = time.perf_counter

        def worker():
            rec = lat.append
            n = 0
            deadline = perf() + seconds
            while not stop[0]:
                if n % 64 == 0:
                    # none/write modes never yield inside an op: let the others run
                    gevent.sleep(0)
                    if perf() >= deadline:
                        break
                t0 = perf()
                tube.put(DATA)
                t1 = perf()
                task = tube.take(timeout=0)
                t2 = perf()
                if task is None:
                    n += 1
                else:
                    tube.ack(task.id)
                    t3 = perf()
                    n += 1
                    if n % 16 == 0:  # sample: keeps the measuring cheap
                        rec(t1 - t0)
                        rec(t2 - t1)
                        rec(t3 - t2)
                counts[0] += 1 if task is not None else 0

        gc.collect()
        started = perf()
        threads = [gevent.spawn(worker) for _ in range(fibers)]
        gevent.joinall(threads)
        elapsed = perf() - started
        stats = persistence.stats() if persistence is not None else {}
        if persistence is not None:
            persistence.close()
        return {"cycles_per_s": counts[0] / elapsed, "p50_ms": _pct(lat, 0.5) * 1e3,
                "p99_ms": _pct(lat, 0.99) * 1e3,
                "batch_p99_ms": (stats.get("commit_latency_p99") or 0) * 1e3,
                "records_per_batch": (stats["wal_records"] / stats["wal_batches"])
                if stats.get("wal_batches") else None}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def cycles(args):
    print(f"put+take+ack cycles/s, 100-byte tasks, {args.seconds:g} s per run, median of {args.runs}")
    print(f"{'wal_mode':8} {'fibers':>6} {'cycles/s':>10} {'op p50 ms':>10} {'op p99 ms':>10} "
          f"{'commit p99 ms':>13} {'rec/batch':>9}")
    for fibers in (1, 50):
        for mode in ("none", "write", "fsync"):
            runs = [one_cycle_run(mode, fibers, args.seconds, args.dir) for _ in range(args.runs)]
            med = sorted(runs, key=lambda r: r["cycles_per_s"])[len(runs) // 2]
            rpb = med["records_per_batch"]
            print(f"{mode:8} {fibers:>6} {med['cycles_per_s']:>10,.0f} {med['p50_ms']:>10.3f} "
                  f"{med['p99_ms']:>10.3f} {med['batch_p99_ms']:>13.3f} "
                  f"{'' if rpb is None else format(rpb, '.1f'):>9}   "
                  f"(runs: {', '.join(format(r['cycles_per_s'], ',.0f') for r in runs)})", flush=True)
            if args.peer and shutil.which("beanstalkd"):
                peer = sorted(beanstalk_run(mode, fibers, args.seconds, args.dir)["cycles_per_s"]
                              for _ in range(args.runs))
                median = peer[len(peer) // 2]
                print(f"{'':8} {'':>6} {median:>10,.0f}  beanstalkd 1.12 {PEER_FLAGS[mode]}, "
                      f"loopback, same client fibers: fiberapp/beanstalkd = "
                      f"{med['cycles_per_s'] / median:.2f}x", flush=True)


class Beanstalk:
    """The smallest beanstalkd client that can do put / reserve / delete (text protocol)."""

    def __init__(self, port):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("beanstalkd closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def put(self, data):
        self.sock.sendall(b"put 0 0 60 %d\r\n%s\r\n" % (len(data), data))
        line = self._line()
        assert line.startswith(b"INSERTED"), line
        return int(line.split()[1])

    def reserve(self):
        self.sock.sendall(b"reserve-with-timeout 0\r\n")
        line = self._line()
        if not line.startswith(b"RESERVED"):
            return None
        _, jid, size = line.split()
        while len(self.buf) < int(size) + 2:
            self.buf += self.sock.recv(65536)
        self.buf = self.buf[int(size) + 2:]
        return int(jid)

    def delete(self, jid):
        self.sock.sendall(b"delete %d\r\n" % jid)
        line = self._line()
        assert line == b"DELETED", line


def beanstalk_run(mode, fibers, seconds, base):
    """The same cycle against beanstalkd: none = no binlog, write = binlog without fsync
    (-F), fsync = binlog fsynced on every write (-f0). One connection per fiber."""
    import socket
    import subprocess

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    data_dir = tempfile.mkdtemp(dir=base)
    cmd = ["beanstalkd", "-l", "127.0.0.1", "-p", str(port)]
    if mode == "write":
        cmd += ["-b", data_dir, "-F"]
    elif mode == "fsync":
        cmd += ["-b", data_dir, "-f0"]
    proc = subprocess.Popen(cmd)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                gevent.sleep(0.01)  # the server is starting: a readiness poll, not a timing
        counts = [0]
        perf = time.perf_counter

        def worker():
            client = Beanstalk(port)
            deadline = perf() + seconds
            while perf() < deadline:
                client.put(DATA)
                jid = client.reserve()
                if jid is not None:
                    client.delete(jid)
                    counts[0] += 1

        started = perf()
        gevent.joinall([gevent.spawn(worker) for _ in range(fibers)], raise_error=True)
        return {"cycles_per_s": counts[0] / (perf() - started)}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


class StallMonitor:
    """A fiber ticking every 1 ms; a late tick is a loop stall."""

    def __init__(self, tick=0.001):
        self.tick = tick
        self.max_gap = 0.0
        self.excess = 0.0
        self._stop = False
        self._g = gevent.spawn(self._run)

    def _run(self):
        last = time.perf_counter()
        while not self._stop:
            gevent.sleep(self.tick)
            now = time.perf_counter()
            gap = now - last - self.tick
            last = now
            if gap > self.max_gap:
                self.max_gap = gap
            if gap > 0.002:
                self.excess += gap

    def stop(self):
        self._stop = True
        self._g.join()


def _fill(tube, n):
    t0 = time.perf_counter()
    put = tube.put
    for i in range(n):
        put(DATA)
        if i % 5000 == 0:
            gevent.sleep(0)
    return time.perf_counter() - t0


def snapshot(args):
    data_dir = tempfile.mkdtemp(dir=args.dir)
    try:
        store, p = open_store(data_dir, SystemClock(), wal_mode="write", checkpoint_wal_threshold=1 << 40)
        tube = store.create_tube("bench", "fifottl")
        fill = _fill(tube, args.tasks)
        gc.collect()
        import psutil

        rss = psutil.Process().memory_info().rss
        # The same monitor with no snapshot running: on a shared machine the loop is late
        # anyway when other processes take the CPU; the snapshot's share is the difference.
        base = StallMonitor()
        gevent.sleep(args.baseline)
        base.stop()
        print(f"baseline, no snapshot, {args.baseline:g} s: longest stall {base.max_gap * 1e3:.1f} ms, "
              f"stalls > 2 ms summed {base.excess * 1e3:.1f} ms "
              f"({base.excess / args.baseline * 1e3:.1f} ms per s)", flush=True)
        monitor = StallMonitor()
        gevent.sleep(0.05)
        import resource

        own0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        info = p.snapshot()
        took = time.perf_counter() - t0
        own1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        gevent.sleep(0.05)
        monitor.stop()
        st = p.stats()
        print(f"snapshot of {args.tasks:,} tasks (fill took {fill:.1f} s, RSS {rss / 2**20:,.0f} MiB): "
              f"{took:.2f} s, file {os.path.getsize(info['file']) / 2**20:,.1f} MiB, "
              f"fork() {st['last_snapshot_loop_stall'] * 1e3:.1f} ms, "
              f"longest loop stall {monitor.max_gap * 1e3:.1f} ms, "
              f"stalls > 2 ms summed {monitor.excess * 1e3:.1f} ms "
              f"({monitor.excess / took * 1e3:.1f} ms per s)")
        # What does not depend on the machine's load: the writer's CPU, and the page faults
        # the parent took while the child lived (copy-on-write faults stall the loop).
        print(f"  writer (child) CPU {kids1.ru_utime - kids0.ru_utime:.2f} s user + "
              f"{kids1.ru_stime - kids0.ru_stime:.2f} s system, {kids1.ru_minflt - kids0.ru_minflt:,} page faults; "
              f"parent: {own1.ru_minflt - own0.ru_minflt:,} page faults, CPU "
              f"{(own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) * 1e3:.0f} ms "
              f"(the stall monitor's ticks included); load {os.getloadavg()[0]:.1f}, "
              f"cpu pressure {cpu_pressure():.0f} %", flush=True)
        p.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _timed_recovery(data_dir):
    """Open (recover) the store in data_dir; returns store, persistence, wall s, CPU s, live tasks."""
    t0, c0 = time.perf_counter(), time.process_time()
    store, p = open_store(data_dir, SystemClock(), wal_mode="write", checkpoint_wal_threshold=1 << 40)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    live = sum(store.tube(t).statistics()["tasks"]["total"] for t in store.tubes())
    return store, p, took, cpu, live


def recovery(args):
    n = args.tasks
    data_dir = tempfile.mkdtemp(dir=args.dir)
    try:
        store, p = open_store(data_dir, SystemClock(), wal_mode="write", checkpoint_wal_threshold=1 << 40)
        tube = store.create_tube("bench", "fifottl")
        _fill(tube, n)
        p.close()
        del store, tube, p
        gc.collect()
        store, p, took, cpu, live = _timed_recovery(data_dir)
        print(f"recovery from WAL only: {p.recovery.records:,} records -> {live:,} live tasks in {took:.2f} s "
              f"(CPU {cpu:.2f} s)", flush=True)
        tube = store.tube("bench")
        p.snapshot()
        for i in range(n // 2):
            task = tube.take(timeout=0)
            tube.release(task.id)
            if i % 5000 == 0:
                gevent.sleep(0)
        p.close()
        del store, tube, p
        gc.collect()
        store, p, took, cpu, live = _timed_recovery(data_dir)
        print(f"recovery from snapshot (lsn {p.recovery.snapshot_lsn:,}) + {p.recovery.records:,} WAL records "
              f"-> {live:,} live tasks in {took:.2f} s (CPU {cpu:.2f} s; loading the snapshot "
              f"{p.recovery.snapshot_seconds:.2f} s, CPU {p.recovery.snapshot_cpu:.2f} s)")
        p.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def calibrate():
    """How fast this machine runs plain Python right now (other processes share it)."""
    t0 = time.perf_counter()
    x = 0
    for i in range(2_000_000):
        x += i
    took = time.perf_counter() - t0
    print(f"calibration: 2M-iteration Python loop took {took * 1e3:.0f} ms "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)


def main():
    parser = argparse.ArgumentParser(prog="bench.persist", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["cycles", "snapshot", "recovery", "all"], nargs="?", default="all")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--no-peer", dest="peer", action="store_false",
                        help="skip the beanstalkd runs in `cycles`")
    parser.add_argument("--baseline", type=float, default=10.0,
                        help="seconds of stall monitoring without a snapshot, for comparison")
    parser.add_argument("--dir", default=None, help="where the data directories go (default: TMPDIR)")
    args = parser.parse_args()
    calibrate()
    for name in ("cycles", "snapshot", "recovery"):
        if args.what in (name, "all"):
            globals()[name](args)


if __name__ == "__main__":
    main()
