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
from operator import itemgetter

from queues.errors import ReplayError
from queues.states import READY
from queues.task import FIELDS, Task, _row_of_task

FORMAT = 1

_first = itemgetter(0)
_HISTORY = FIELDS.index("history")


class TaskTable:
    """The tasks of a dump as a table: ``columns`` (FIELDS) and ``rows`` (one tuple of
    values per task, by id). What dump_tables() returns under "tasks"; it reads as the
    list of task dicts dump() has (each built when read)."""

    __slots__ = ("columns", "rows")

    # The columns that may hold dicts or lists (the payload aside): a reader moving
    # deadlines to a new clock need not scan the others.
    nested = ("history",)

    def __init__(self, rows):
        self.columns = FIELDS
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return (dict(zip(FIELDS, row)) for row in self.rows)


class SnapshotMixin:
    def _tube_records(self):
        out = []
        for name in sorted(self._tubes):
            tube = self._tubes[name]
            out.append({"name": name, "driver": tube.driver_name, "options": dict(tube.options),
                        "resume_at": tube.resume_at, "done": tube.done, "calls": dict(tube.calls)})
        return out

    def _task_rows(self):
        """Every live task's persisted values (a tuple in FIELDS order), by id; history
        entries copied, so the rows share nothing mutable with the live tasks."""
        tasks = []
        for tube in self._tubes.values():
            tasks.extend(tube._tasks.values())
        rows = list(map(_row_of_task, tasks))
        rows.sort(key=_first)
        histories = list(map(itemgetter(_HISTORY), rows))
        if histories.count(None) != len(histories):
            for i, history in enumerate(histories):
                if history is not None:
                    row = list(rows[i])
                    row[_HISTORY] = [dict(h) for h in history]
                    rows[i] = tuple(row)
        return rows

    def iter_snapshot_records(self):
        yield {"kind": "header", "format": FORMAT, "next_id": self._next_id}
        for rec in self._tube_records():
            rec["kind"] = "tube"
            yield rec
        for row in self._task_rows():
            rec = dict(zip(FIELDS, row))
            rec["kind"] = "task"
            yield rec

    def dump(self):
        return {"format": FORMAT, "next_id": self._next_id, "tubes": self._tube_records(),
                "tasks": [dict(zip(FIELDS, row)) for row in self._task_rows()]}

    def dump_tables(self):
        """dump() with the tasks as a TaskTable (columns + one tuple per task) instead of a
        dict per task: what a snapshot writer packs, at a fraction of dump()'s cost."""
        return {"format": FORMAT, "next_id": self._next_id, "tubes": self._tube_records(),
                "tasks": TaskTable(self._task_rows())}

    def restore(self, dump):
        """Replace the whole state with a dump() (the store must not be serving yet).

        dump["tasks"] may also be a table, an object with ``columns`` and ``rows`` (a
        TaskTable, or the table queues.persist.snapshot reads back): when the columns are
        FIELDS in order, each row becomes a task directly (Task.from_row), with no dict per
        task; any other table is read as the dicts it stands for."""
        self._restore_header({"kind": "header", "format": dump["format"], "next_id": dump["next_id"]})
        for tube in dump["tubes"]:
            self._restore_tube(tube)
        tasks = dump["tasks"]
        columns = getattr(tasks, "columns", None)
        if columns is not None and tuple(columns) == FIELDS:
            self._restore_rows(tasks.rows)
        else:
            clock = self.clock
            for rec in tasks:
                self._restore_task(Task.from_record(rec, clock))
        return self._restore_end(dump["next_id"])

    @classmethod
    def load(cls, dump, **kwargs):
        return cls(**kwargs).restore(dump)

    def restore_records(self, records):
        records = iter(records)
        header = next(records)
        self._restore_header(header)
        clock = self.clock
        for rec in records:
            kind = rec.get("kind")
            if kind == "tube":
                self._restore_tube(rec)
            elif kind == "task":
                self._restore_task(Task.from_record(rec, clock))
            else:
                raise ReplayError(f"unknown snapshot record kind {kind!r}")
        return self._restore_end(header["next_id"])

    # -- the steps of a restore -----------------------------------------------------

    def _restore_header(self, header):
        if header.get("kind") != "header" or header.get("format") != FORMAT:
            raise ReplayError(f"not a queue store snapshot of format {FORMAT}: {header!r}")
        self._tubes = {}
        self.sessions._clear()
        self._next_id = 1
        self._wake_at = float("inf")

    def _restore_tube(self, rec):
        tube = self._make_tube(rec["name"], rec["driver"], rec["options"])
        tube.resume_at = rec["resume_at"]
        tube.done = rec["done"]
        tube.calls.update(rec["calls"])
        self._tubes[tube.name] = tube

    def _restore_task(self, task):
        tube = self._tubes.get(task.tube)
        if tube is None:
            raise ReplayError(f"snapshot task {task.id} names unknown tube {task.tube!r}")
        self._insert(tube, task)

    def _restore_rows(self, rows):
        """The tasks of a table in FIELDS order: recovery's bulk path (a million rows).

        A driver with the optional ``load(tasks)`` (index many new READY tasks at once,
        return the earliest deadline it scheduled or None) gets its tube's READY tasks in
        one call at the end, instead of a ``changed(task, None)`` each; every other task
        goes through the store's one-task insert."""
        tubes = self._tubes
        from_row = Task.from_row
        insert = self._insert
        clock = self.clock
        name = tube = batch = None
        batches = []
        for row in rows:
            task = from_row(row, clock)
            if task.tube != name:
                name = task.tube
                tube = tubes.get(name)
                if tube is None:
                    raise ReplayError(f"snapshot task {task.id} names unknown tube {name!r}")
                batch = None
                if getattr(tube.driver, "load", None) is not None:
                    batch = next((b for t, b in batches if t is tube), None)
                    if batch is None:
                        batch = []
                        batches.append((tube, batch))
            if batch is not None and task.state == READY and task.key is None:
                tube._tasks[task.id] = task  # insertion order as insert() would give it
                batch.append(task)
            else:
                insert(tube, task)
        for tube, batch in batches:
            if not batch:
                continue
            tube.counts[READY] += len(batch)
            at = tube.driver.load(batch)
            if at is not None and at < self._wake_at:
                self._schedule(at)
            last = max(task.id for task in batch)
            if last >= self._next_id:
                self._next_id = last + 1

    def _restore_end(self, next_id):
        self._next_id = max(self._next_id, next_id)
        if self._ticker is not None:
            self._ticker.wake()
        return self
