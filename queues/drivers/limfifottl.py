"""limfifottl: fifottl with a ``capacity`` (0 = unlimited) counting tasks in every state.

A put on a full tube waits (without polling: it is woken when a task leaves) up to the put's
``timeout`` (default 0) and then fails with TubeFull.
"""
from queues import options as opt
from queues.drivers.fifottl import FifoTtl


class LimFifoTtl(FifoTtl):
    name = "limfifottl"
    tube_options = dict(FifoTtl.tube_options, capacity=lambda o, v: opt.count(o, v, allow_none=False))

    def __init__(self, options):
        super().__init__(options)
        self.capacity = self.options.get("capacity", 0)
