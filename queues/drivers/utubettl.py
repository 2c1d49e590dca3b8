"""utubettl: utube's one-taken-task-per-key with fifottl's pri, ttl, ttr and delay."""
from queues.drivers.base import Deadlines, Driver, UtubeReady
from queues.drivers.fifottl import TTL_OPTIONS


class UtubeTtl(Driver):
    name = "utubettl"
    put_options = frozenset({"pri", "ttl", "ttr", "delay", "utube"})
    tube_options = dict(TTL_OPTIONS)
    ready_index = UtubeReady
    deadlines = Deadlines
