"""Moving persisted deadlines between clocks.

In memory every deadline (a key ending in ``_at``) is a monotonic reading. A record or
snapshot stores the wall-clock offset (time() - monotonic()) that was in force when it
was written, so ``value + offset`` is the wall-clock deadline. At recovery the value
becomes ``value + (offset_written - offset_now)``: the same wall-clock instant on the new
monotonic clock. A task delayed until 12:00 stays due at 12:00 however long the server
was down or recovery took (beanstalkd #62), and nothing moves when the offset did not
change.

The task payload is never touched: a value under the key ``data`` is the user's, and a
user's ``{"created_at": 5}`` must come back as 5. (queues.ops says "every ``*_at`` key at
any depth is a time"; that holds everywhere except inside ``data``.)
"""
from operator import itemgetter

PAYLOAD = "data"


def wall_offset(clock):
    return clock.time() - clock.monotonic()


def shift(value, delta):
    """Move every numeric ``*_at`` entry of value (dicts and lists, recursively, never
    inside ``data``) by delta, IN PLACE; returns value. Callers pass freshly decoded
    records, which nobody else holds."""
    if delta == 0:
        return value
    if type(value) is dict:
        _shift_dict(value, delta)
    elif type(value) is list:
        _shift_list(value, delta)
    return value


def _shift_dict(d, delta):
    for key, item in d.items():
        kind = type(item)
        if kind is float or kind is int:
            if key.endswith("_at"):
                d[key] = item + delta
        elif kind is dict:
            if key != PAYLOAD:
                _shift_dict(item, delta)
        elif kind is list:
            if key != PAYLOAD:
                _shift_list(item, delta)


def _shift_list(items, delta):
    for item in items:
        kind = type(item)
        if kind is dict:
            _shift_dict(item, delta)
        elif kind is list:
            _shift_list(item, delta)


def shift_table(keys, rows, delta, nested=None):
    """shift() for a table (snapshot.py): the same rule, column by column, IN PLACE on
    freshly decoded rows (lists; other rows are copied to lists first). Returns the rows.

    ``nested``: the columns that may hold dicts or lists (the writer knows; None: any
    column may, and each is scanned). A column that is all None costs one C-level count;
    a deadline column, one pass over the rows: a million rows whose clock moved take
    ~0.3 s instead of the ~1.5 s that transposing the whole table cost."""
    if delta == 0 or not rows:
        return rows
    if type(rows[0]) is not list:
        rows = [list(row) for row in rows]
    n = len(rows)
    times = []
    for i, key in enumerate(keys):
        if key == PAYLOAD:
            continue
        at = key.endswith("_at")
        if not at and nested is not None and key not in nested:
            continue
        col = list(map(itemgetter(i), rows))
        if col.count(None) == n:
            continue
        types = set(map(type, col))
        if at and (float in types or int in types):
            times.append(i)
        if dict in types or list in types:
            for item in col:
                if type(item) is dict:
                    _shift_dict(item, delta)
                elif type(item) is list:
                    _shift_list(item, delta)
    for i in times:
        for row in rows:
            value = row[i]
            if type(value) is float or type(value) is int:
                row[i] = value + delta
    return rows


def to_wall(value, offset):
    """A copy of value with ``*_at`` numbers as wall-clock times (for display)."""
    if type(value) is dict:
        out = {}
        for key, item in value.items():
            if key == PAYLOAD:
                out[key] = item
            elif type(item) in (int, float) and key.endswith("_at"):
                out[key] = item + offset
            else:
                out[key] = to_wall(item, offset)
        return out
    if type(value) is list:
        return [to_wall(item, offset) for item in value]
    return value
