"""fifottl: priorities (0 most urgent, then id order), ttl, ttr and delay.

Tube options give the defaults for put: ``pri`` (0), ``ttl`` and ``ttr`` (None = infinite).
- ttl counts from the moment the task is ready (a put's delay is not counted);
- ttr counts from each take; when it lapses the task is ready again (attempt counted);
- a taken task does not expire under its consumer: its ttl is applied when it comes back.
"""
from queues import options as opt
from queues.drivers.base import Deadlines, Driver, ReadyHeap

TTL_OPTIONS = {
    "pri": opt.priority,
    "ttl": opt.duration,
    "ttr": opt.duration,
}


class FifoTtl(Driver):
    name = "fifottl"
    put_options = frozenset({"pri", "ttl", "ttr", "delay"})
    tube_options = dict(TTL_OPTIONS)
    ready_index = ReadyHeap
    deadlines = Deadlines
