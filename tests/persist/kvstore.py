"""A tiny store for testing the persistence layer apart from the queue store.

It follows the same seam as queues.store.Store: decisions are taken by the caller, one
apply(op) performs a change live and on replay, log() before apply, wait() after.
"""


class KVStore:
    def __init__(self, items=None):
        self.items = dict(items or {})
        self.journal = None

    def set(self, key, value, expires_at=None):
        op = {"op": "set", "key": key, "value": value, "expires_at": expires_at}
        return self._do(op)

    def delete(self, key):
        return self._do({"op": "del", "key": key})

    def _do(self, op):
        token = self.journal.log(op) if self.journal is not None else None
        self.apply(op)
        if token is not None:
            self.journal.wait(token)
        return token

    def apply(self, op):
        if op["op"] == "set":
            self.items[op["key"]] = {"value": op["value"], "expires_at": op["expires_at"]}
        elif op["op"] == "del":
            if op["key"] not in self.items:
                raise KeyError(op["key"])
            del self.items[op["key"]]
        else:
            raise ValueError(op)

    def dump(self):
        return {"items": {k: dict(v) for k, v in sorted(self.items.items())}}


class KVAdapter:
    def new(self):
        return KVStore()

    def load(self, dump):
        return KVStore(dump["items"])

    def applier(self, store):
        """The function recovery calls with each operation."""
        return store.apply

    def attach(self, store, journal):
        store.journal = journal

    def release_orphans(self, store):
        return 0

    def dump(self, store):
        return store.dump()

    def stop(self, store):
        pass
