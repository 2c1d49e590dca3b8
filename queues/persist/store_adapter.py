"""How persistence drives a store. Recovery and snapshots only need these seven calls;
QueueStoreAdapter maps them onto queues.store.Store, and the generic tests use a tiny
store of their own through the same interface.
"""
from queues.persist.record import OpRecords


class QueueStoreAdapter:
    def __init__(self, clock, **store_options):
        self.clock = clock
        self.store_options = store_options

    def new(self):
        from queues.store import Store

        return Store(clock=self.clock, journal=None, **self.store_options)

    def load(self, dump):
        from queues.store import Store

        return Store.load(dump, clock=self.clock, journal=None, **self.store_options)

    def applier(self, store):
        """The function recovery calls with each operation."""
        return store.apply

    def attach(self, store, journal):
        # A journal that takes encoded ops gets the hot ones (put, take, ack) as bytes.
        encoded = getattr(journal, "encoded_ops", False)
        store.attach_journal(journal, op_records=OpRecords if encoded else None)

    def release_orphans(self, store):
        return store.release_orphans()

    def dump(self, store):
        # The snapshot writer's form: the same bytes as dump(), without a dict per task.
        return store.dump_tables()

    def stop(self, store):
        stop = getattr(store, "stop", None)
        if stop is not None:
            stop()
