"""utube: fifo per sub-queue key (put's ``utube``, default ""), at most one taken task per key.

The next task of a key becomes takeable only after the taken one is acked, released, buried
or deleted. Buried tasks do not block their key.
"""
from queues.drivers.base import Driver, UtubeReady


class Utube(Driver):
    name = "utube"
    put_options = frozenset({"utube"})
    tube_options = {}
    ready_index = UtubeReady
