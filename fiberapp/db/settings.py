"""Validation of the [pg] and [redis] config tables.

from_config() receives a plain dict (a TOML table). Each value is checked here, once,
and a wrong or unknown key raises DbConfigError naming it ("pg.max_size: ..."), so a
typo in a config file is reported instead of silently ignored.
"""
from fiberapp.db.errors import DbConfigError

REQUIRED = object()


class Section:
    """Reads typed values out of one config table; done() rejects what was not read."""

    def __init__(self, table, prefix):
        if not isinstance(table, dict):
            raise DbConfigError(prefix, f"must be a table, got {type(table).__name__}")
        self._table = dict(table)
        self._seen = set()
        self.prefix = prefix

    def _get(self, key, default):
        self._seen.add(key)
        if key in self._table:
            return self._table[key]
        if default is REQUIRED:
            raise DbConfigError(self._key(key), "is required")
        return default

    def _key(self, key):
        return f"{self.prefix}.{key}"

    def string(self, key, default=REQUIRED):
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise DbConfigError(self._key(key), f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, key, default, minimum=0):
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DbConfigError(self._key(key), f"must be an integer, got {value!r}")
        if value < minimum:
            raise DbConfigError(self._key(key), f"must be >= {minimum}, got {value!r}")
        return value

    def boolean(self, key, default):
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise DbConfigError(self._key(key), f"must be true or false, got {value!r}")
        return value

    def seconds(self, key, default, allow_zero=False):
        """A duration in seconds (int or float). 0 means "no limit" where allow_zero."""
        value = self._get(key, default)
        if value is None and allow_zero:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise DbConfigError(self._key(key), f"must be a number of seconds, got {value!r}")
        if value < 0 or (value == 0 and not allow_zero):
            limit = ">= 0" if allow_zero else "> 0"
            raise DbConfigError(self._key(key), f"must be {limit} seconds, got {value!r}")
        return float(value)

    def done(self, ignore_tables=False):
        """Raise on the first key that was never read (a typo, most likely)."""
        for key, value in self._table.items():
            if key in self._seen or (ignore_tables and isinstance(value, dict)):
                continue
            raise DbConfigError(self._key(key), "unknown key")
