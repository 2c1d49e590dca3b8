"""dump() / restore(): the whole store state as plain msgpack-able data.

Recovery = restore(snapshot) then apply(op) for every later WAL record, then
release_orphans(). The dump is canonical: tubes sorted by name, tasks by id, so two stores
with the same history dump equal values (the property tests compare them).

Streaming form: ``iter_snapshot_records()`` yields
    {"kind": "header", "format": 1, "next_id": n}
    {"kind": "tube", "name", "driver", "options", "resume_at", "done", "calls"}  per tube
    {"kind": "task", <every persisted Task field>}                              per task
and ``restore_records(records)`` reads them back. The records are built from live objects
as they are yielded: a consistent snapshot needs the iteration to finish without yielding
to the hub (or the caller copies). As in ops, keys ending in ``_at`` are monotonic times.
In-memory only, never dumped: hooks, waiters, drain mode, session bindings of fibers.
"""
from operator import attrgetter

from queues.errors import ReplayError
from queues.task import Task

FORMAT = 1


class SnapshotMixin:
    def iter_snapshot_records(self):
        yield {"kind": "header", "format": FORMAT, "next_id": self._next_id}
        for name in sorted(self._tubes):
            tube = self._tubes[name]
            yield {"kind": "tube", "name": name, "driver": tube.driver_name,
                   "options": dict(tube.options), "resume_at": tube.resume_at,
                   "done": tube.done, "calls": dict(tube.calls)}
        tasks = []
        for tube in self._tubes.values():
            tasks.extend(tube._tasks.values())
        tasks.sort(key=attrgetter("id"))
        for task in tasks:
            rec = task.record()
            rec["kind"] = "task"
            if rec["history"] is not None:
                rec["history"] = [dict(h) for h in rec["history"]]
            yield rec

    def dump(self):
        records = self.iter_snapshot_records()
        header = next(records)
        out = {"format": header["format"], "next_id": header["next_id"], "tubes": [], "tasks": []}
        for rec in records:
            kind = rec.pop("kind")
            (out["tubes"] if kind == "tube" else out["tasks"]).append(rec)
        return out

    def restore(self, dump):
        """Replace the whole state with a dump() (the store must not be serving yet)."""
        def records():
            yield {"kind": "header", "format": dump["format"], "next_id": dump["next_id"]}
            for tube in dump["tubes"]:
                yield dict(tube, kind="tube")
            for task in dump["tasks"]:
                yield dict(task, kind="task")
        self.restore_records(records())
        return self

    @classmethod
    def load(cls, dump, **kwargs):
        return cls(**kwargs).restore(dump)

    def restore_records(self, records):
        records = iter(records)
        header = next(records)
        if header.get("kind") != "header" or header.get("format") != FORMAT:
            raise ReplayError(f"not a queue store snapshot of format {FORMAT}: {header!r}")
        self._tubes = {}
        self.sessions._clear()
        self._next_id = 1
        self._wake_at = float("inf")
        for rec in records:
            kind = rec.get("kind")
            if kind == "tube":
                tube = self._make_tube(rec["name"], rec["driver"], rec["options"])
                tube.resume_at = rec["resume_at"]
                tube.done = rec["done"]
                tube.calls.update(rec["calls"])
                self._tubes[tube.name] = tube
            elif kind == "task":
                tube = self._tubes.get(rec["tube"])
                if tube is None:
                    raise ReplayError(f"snapshot task {rec.get('id')} names unknown tube {rec['tube']!r}")
                self._insert(tube, Task.from_record(rec, self.clock))
            else:
                raise ReplayError(f"unknown snapshot record kind {kind!r}")
        self._next_id = max(self._next_id, header["next_id"])
        if self._ticker is not None:
            self._ticker.wake()
        return self
