"""Moving persisted deadlines between clocks.

In memory every deadline (a key ending in ``_at``) is a monotonic reading. A record or
snapshot stores the wall-clock offset (time() - monotonic()) that was in force when it
was written, so ``value + offset`` is the wall-clock deadline. At recovery the value
becomes ``value + (offset_written - offset_now)``: the same wall-clock instant on the new
monotonic clock. A task delayed until 12:00 stays due at 12:00 however long the server
was down or recovery took (beanstalkd #62), and nothing moves when the offset did not
change.
"""


def wall_offset(clock):
    return clock.time() - clock.monotonic()


def shift(value, delta):
    """A copy of value with every numeric ``*_at`` entry moved by delta (recursively)."""
    if delta == 0:
        return value
    return _shift(value, delta)


def _shift(value, delta):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (
                type(key) is str
                and key.endswith("_at")
                and isinstance(item, (int, float))
                and not isinstance(item, bool)
            ):
                out[key] = item + delta
            elif isinstance(item, (dict, list)):
                out[key] = _shift(item, delta)
            else:
                out[key] = item
        return out
    if isinstance(value, list):
        return [_shift(item, delta) if isinstance(item, (dict, list)) else item for item in value]
    return value
