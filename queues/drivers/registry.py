"""Driver registry: one per Store (no module-level mutable state), seeded with the built-ins.

Custom drivers register the same way as the built-ins: ``store.drivers.register(cls)``;
the class is checked against the interface in queues.drivers.base first.
"""
from queues.drivers.base import check_driver
from queues.drivers.fifo import Fifo
from queues.drivers.fifottl import FifoTtl
from queues.drivers.limfifottl import LimFifoTtl
from queues.drivers.utube import Utube
from queues.drivers.utubettl import UtubeTtl
from queues.errors import DriverError, UnknownDriver

BUILTIN = (Fifo, FifoTtl, LimFifoTtl, Utube, UtubeTtl)


class Registry:
    def __init__(self, builtins=BUILTIN):
        self._drivers = {}
        for cls in builtins:
            self.register(cls)

    def register(self, cls, replace=False):
        check_driver(cls)
        if cls.name in self._drivers and not replace:
            raise DriverError(f"a driver named {cls.name!r} is already registered")
        self._drivers[cls.name] = cls
        return cls

    def get(self, name):
        cls = self._drivers.get(name)
        if cls is None:
            raise UnknownDriver(f"unknown driver {name!r}; registered: {sorted(self._drivers)}")
        return cls

    def names(self):
        return sorted(self._drivers)
