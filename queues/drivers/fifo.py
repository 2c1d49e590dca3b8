"""fifo: tasks are taken in id order; no priorities, deadlines or sub-queues.

A released task goes back by its id, so it is the first taken again (tarantool/queue's fifo).
"""
from queues.drivers.base import Driver, ReadyHeap


class Fifo(Driver):
    name = "fifo"
    put_options = frozenset()
    tube_options = {}
    ready_index = ReadyHeap
