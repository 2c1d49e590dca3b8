"""Validation of names, durations, priorities, task data and tube options.

Everything a client sends passes through here before the store decides anything, so a bad
value is refused with a typed error naming it and nothing has changed.
"""
import math
import re

import orjson

from queues.errors import InvalidData, InvalidName, InvalidOption, TaskTooLarge

NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,200}\Z")
MAX_PRI = (1 << 32) - 1
# A duration at or beyond this is "infinite" (tarantool/queue uses 100 years the same way).
INFINITE = 100 * 365 * 86400.0


def name(value, what="tube"):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidName(
            f"invalid {what} name {value!r}: 1-200 characters of letters, digits and -_."
        )
    return value


def duration(option, value, allow_none=True):
    """Seconds (int or float, fractions allowed) >= 0; None (when allowed) or >= 100 years
    means infinite and comes back as None."""
    if value is None:
        if allow_none:
            return None
        raise InvalidOption(f"option {option!r} is required", option)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(
            f"option {option!r} must be a number of seconds, not {type(value).__name__}", option
        )
    value = float(value)
    if math.isnan(value) or value < 0:
        raise InvalidOption(f"option {option!r} must be >= 0 seconds, got {value!r}", option)
    if value >= INFINITE:
        return None
    return value


def timeout(option, value):
    """A wait: None = forever, else seconds >= 0."""
    return duration(option, value, allow_none=True)


def priority(option, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"option {option!r} must be an integer, not {type(value).__name__}", option)
    if not 0 <= value <= MAX_PRI:
        raise InvalidOption(f"option {option!r} must be in 0..{MAX_PRI} (0 is most urgent)", option)
    return value


def count(option, value, minimum=0, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"option {option!r} must be an integer, not {type(value).__name__}", option)
    if value < minimum:
        raise InvalidOption(f"option {option!r} must be >= {minimum}", option)
    return value


def utube(option, value):
    """Sub-queue key: any str or int, kept as a string (as tarantool/queue does)."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidOption(f"option {option!r} must be a string, not {type(value).__name__}", option)
    value = str(value)
    if len(value) > 1024:
        raise InvalidOption(f"option {option!r} is longer than 1024 characters", option)
    return value


def unique_key(option, value):
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 1024:
        raise InvalidOption(f"option {option!r} must be a non-empty string of at most 1024 characters", option)
    return value


def data(value, max_size):
    """Validate task data and return the value to store.

    bytes and str are kept as they are; containers are copied through JSON so the stored
    value cannot be changed by the caller afterwards and equals what a WAL replay produces
    (tuples become lists). Size is the UTF-8/JSON size.
    """
    kind = type(value)
    if kind is bytes:
        size = len(value)
    elif kind is str:
        size = len(value)
        if not value.isascii():
            try:  # lone surrogates cannot be stored (nor logged): refuse them here
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidData("task data is not valid Unicode (lone surrogate)") from None
    elif value is None or kind is bool or kind is int or kind is float:
        if kind is float and not math.isfinite(value):
            raise InvalidData(f"task data {value!r} is not JSON-serialisable")
        if kind is int and not -(1 << 63) <= value < (1 << 64):
            raise InvalidData("task data integer does not fit in 64 bits")
        return value
    else:
        try:
            encoded = orjson.dumps(value)
        except TypeError as exc:
            raise InvalidData(f"task data is neither bytes nor JSON-serialisable: {exc}") from None
        size = len(encoded)
        if size > max_size:
            raise TaskTooLarge(f"task data is {size} bytes, the maximum is {max_size}")
        return orjson.loads(encoded)
    if size > max_size:
        raise TaskTooLarge(f"task data is {size} bytes, the maximum is {max_size}")
    return value


def common_tube_options():
    """Options every tube accepts: name -> validator(option, value) -> stored value."""
    return {
        "max_attempts": lambda o, v: count(o, v, minimum=1),
        "dead_letter": lambda o, v: None if v is None else name(v),
    }


def check_options(schema, given, what):
    """Validate ``given`` against ``schema`` (name -> validator); unknown names are refused."""
    out = {}
    for key, value in given.items():
        check = schema.get(key)
        if check is None:
            raise InvalidOption(f"unknown option {key!r} for {what}; known: {sorted(schema)}", key)
        out[key] = check(key, value)
    return out
