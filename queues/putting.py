"""Tube.put and Tube.put_many: validation, unique keys, capacity, the put op.

Split from queues.tube to keep each file to one concern; Tube inherits this mixin.
"""
from queues import options as opt
from queues.errors import Draining, InvalidOption, NoSuchTube
from queues.states import READY
from queues.task import Task


class PutMixin:
    def put(self, data, pri=None, ttl=None, ttr=None, delay=None, utube=None, key=None, timeout=None):
        """Add a task; returns it. With ``key`` and a live task holding it, returns a copy of
        that task flagged ``existing`` instead. On a full tube (capacity) waits up to
        ``timeout`` seconds (default 0) for room, then raises TubeFull."""
        store = self.store
        if store.draining:
            raise Draining(f"the store is draining: put to tube {self.name!r} refused")
        if self._dropped:
            raise NoSuchTube(self.name)
        kind = type(data)
        # The general case is the short branch here (its own method): Python 3.11
        # specialises a comparison (the int one of the size check) only when the jump after
        # it is short, and a long body after it left it generic (~150 instructions a put).
        if not (pri is None and ttl is None and ttr is None and delay is None and key is None
                and (utube is None or (type(utube) is str and self._def_utube is not None
                                       and len(utube) <= 1024))
                and not self.driver.capacity
                and (kind is bytes or (kind is str and data.isascii()))
                and len(data) <= store.max_task_size):
            return self._put_checked(data, pri, ttl, ttr, delay, utube, key, timeout)
        # The common case, kept lean: defaults only (bar a str utube on a tube that has
        # them), data that needs no conversion; the same task _prepare/_timed would give.
        now = store._now()
        ttl = self._def_ttl
        if utube is None:
            utube = self._def_utube
        token = None
        if store._journaled:
            records = self._records
            if records is not None and self._def_fields is None:
                # no default fields: no utube either (a utube tube's defaults hold "")
                rec = records.put(store._next_id, data, now)
            else:
                rec = {"op": "put", "tube": self.name, "id": store._next_id, "created_at": now,
                       "data": data}  # the keys in OpRecords.put's order
                if self._def_fields is not None:
                    rec.update(self._def_fields)
                    if ttl is not None:
                        rec["expires_at"] = now + ttl
                if utube:
                    rec["utube"] = utube
            token = store._log(rec)  # may raise (WAL full, I/O): then nothing is applied
        # Straight to the transition _apply_put(rec) would make (replay builds the same
        # task from rec through _new_task): no op dict to read back, no tube lookup.
        task = store._put_task(self, Task(
            store._next_id, self.name, READY, data, self._def_pri, ttl, self._def_ttr,
            None, utube, None, now, None, None if ttl is None else now + ttl, store.clock))
        if self._waiters:
            store._notify(self, 1)
        if self._hooks:
            self._fire(task, "put")
        if token is not None:
            store._journal_wait(token)
        return task

    def _put_checked(self, data, pri, ttl, ttr, delay, utube, key, timeout):
        """put() with options, unique keys, a capacity, or data to check or convert."""
        store = self.store
        rec = self._prepare(data, pri, ttl, ttr, delay, utube, key)
        if key is not None:
            existing = self._existing(key)
            if existing is not None:
                return existing
        if self.driver.capacity and len(self._tasks) >= self.driver.capacity:
            store._wait_space(self, 1, timeout)
            if key is not None:
                existing = self._existing(key)
                if existing is not None:
                    return existing
        rec = self._timed(rec, store.clock.monotonic())
        rec["op"] = "put"
        rec["tube"] = self.name
        rec["id"] = store._next_id
        token = store._log(rec)
        task = store._apply_put(rec)
        if task.state == READY and self._waiters:
            store._notify(self, 1)
        if self._hooks:
            self._fire(task, "put")
        if token is not None:
            store._journal_wait(token)
        return task

    def put_many(self, items, timeout=None):
        """Put several tasks in one op. ``items``: dicts with "data" and any put option.
        All are validated first: a bad item fails the whole batch and nothing is put.
        Returns the tasks in order (existing ones flagged, as put does)."""
        store = self.store
        if store.draining:
            raise Draining(f"the store is draining: put to tube {self.name!r} refused")
        if self._dropped:
            raise NoSuchTube(self.name)
        if not isinstance(items, (list, tuple)):
            raise InvalidOption("put_many takes a list of items", "items")
        recs = []
        for item in items:
            if not isinstance(item, dict) or "data" not in item:
                raise InvalidOption("each put_many item is a dict with a 'data' key", "items")
            extra = set(item) - {"data", "pri", "ttl", "ttr", "delay", "utube", "key"}
            if extra:
                raise InvalidOption(f"unknown option {sorted(extra)[0]!r} in put_many item", sorted(extra)[0])
            recs.append(self._prepare(item["data"], item.get("pri"), item.get("ttl"), item.get("ttr"),
                                      item.get("delay"), item.get("utube"), item.get("key")))
        results = [None] * len(recs)
        fresh, first, dup_of = [], {}, {}
        for i, rec in enumerate(recs):
            key = rec["key"]
            if key is not None:
                if key in first:
                    dup_of[i] = first[key]
                    continue
                existing = self._existing(key)
                if existing is not None:
                    results[i] = existing
                    continue
                first[key] = i
            fresh.append(i)
        cap = self.driver.capacity
        if fresh and cap and len(self._tasks) + len(fresh) > cap:
            store._wait_space(self, len(fresh), timeout)
        now = store.clock.monotonic()
        batch = []
        next_id = store._next_id
        for i in fresh:
            rec = self._timed(recs[i], now)
            rec["id"] = next_id
            next_id += 1
            batch.append(rec)
        tasks = []
        token = None
        if batch:
            token = store._log({"op": "put_many", "tube": self.name, "tasks": batch})
            tasks = store._apply_put_many({"tube": self.name, "tasks": batch})
        for i, task in zip(fresh, tasks):
            results[i] = task
        for i, j in dup_of.items():
            twin = results[j].copy()
            twin.existing = True
            results[i] = twin
        ready = sum(1 for t in tasks if t.state == READY)
        if ready and self._waiters:
            store._notify(self, ready)
        if self._hooks:
            for task in tasks:
                self._fire(task, "put")
        if token is not None:
            store._journal_wait(token)
        return results

    def _existing(self, key):
        tid = self.keys.get(key)
        if tid is None:
            return None
        twin = self._tasks[tid].copy()
        twin.existing = True
        return twin

    def _prepare(self, data, pri, ttl, ttr, delay, utube, key):
        """Validate one put's arguments into a record (no clock read yet)."""
        allowed = self.put_options
        if pri is None:
            pri = self._def_pri
        elif "pri" in allowed:
            pri = opt.priority("pri", pri)
        else:
            raise self._unsupported("pri")
        if ttl is None:
            ttl = self._def_ttl
        elif "ttl" in allowed:
            ttl = opt.duration("ttl", ttl)
        else:
            raise self._unsupported("ttl")
        if ttr is None:
            ttr = self._def_ttr
        elif "ttr" in allowed:
            ttr = opt.duration("ttr", ttr)
        else:
            raise self._unsupported("ttr")
        if delay is not None:
            if "delay" not in allowed:
                raise self._unsupported("delay")
            delay = opt.duration("delay", delay)
            if delay == 0:
                delay = None
        if utube is not None:
            if "utube" not in allowed:
                raise self._unsupported("utube")
            utube = opt.utube("utube", utube)
        elif "utube" in allowed:
            utube = ""
        if key is not None:
            key = opt.unique_key("key", key)
        data = opt.data(data, self.store.max_task_size)
        return {"data": data, "pri": pri, "ttl": ttl, "ttr": ttr, "delay": delay,
                "utube": utube, "key": key}

    @staticmethod
    def _timed(rec, now):
        delay = rec["delay"]
        ttl = rec["ttl"]
        if delay is None:
            ready_at = None
            start = now
        else:
            ready_at = start = now + delay
        rec["created_at"] = now
        rec["ready_at"] = ready_at
        rec["expires_at"] = None if ttl is None else start + ttl
        return rec

    def _unsupported(self, option):
        return InvalidOption(f"tube {self.name!r} ({self.driver_name}) does not take option {option!r}", option)

