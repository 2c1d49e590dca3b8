"""Logging: stdlib logging, plain or JSON lines, every record carrying the fiber name.

configure() is called by the app at start and again on reload (which reopens the log file,
so logrotate's postrotate can simply send SIGHUP).
"""
import logging
import sys
import time

import orjson

from fiberapp.runtime.fiber import current_fiber

_PLAIN = "%(asctime)s %(levelname)s [%(fiber)s] %(name)s: %(message)s"


class FiberFilter(logging.Filter):
    """Adds record.fiber: the running fiber's name, 'main' outside any fiber."""

    def filter(self, record):
        fiber = current_fiber()
        record.fiber = fiber.name if fiber is not None else "main"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, fiber, msg (+ exc when there is one)."""

    def format(self, record):
        doc = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "fiber": getattr(record, "fiber", "main"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure(level="INFO", fmt="plain", file=None, stream=None):
    """(Re)configure the root logger. Returns the handler installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fiberapp", False):
            root.removeHandler(handler)
            handler.close()
    if file:
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler._fiberapp = True
    handler.addFilter(FiberFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_PLAIN))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
