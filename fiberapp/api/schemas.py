"""Request-body and query validation, declared once and used twice.

Each body is a Schema of Fields. ``Schema.validate(obj)`` turns a parsed JSON value into
a dict of clean Python values or raises a typed ApiError naming the field (400), and
``Schema.json_schema()`` gives the same rules as JSON Schema for the OpenAPI document,
so the spec and the checks cannot drift apart.

The checks here are about shape and range - what the wire may carry. The store still
owns the meaning (a tube's driver decides whether ``utube`` applies, for instance) and
answers with its own typed errors. Bounds exist so that nothing a client sends reaches
the store, the WAL encoder or a timer in a form they cannot take (inf, NaN, a bool where
a number belongs, nesting deeper than msgpack packs).
"""
import math

from .errors import InvalidField, InvalidJson, MissingField, UnknownField

#: 100 years: tarantool/queue's "infinity" for ttl/ttr, and the largest duration we accept.
MAX_DURATION = 100 * 365.25 * 86400
#: Task data may nest this deep (msgpack refuses past 512; JSON past this is abuse).
MAX_DATA_DEPTH = 64
MAX_BATCH = 1000
MAX_LIST_LIMIT = 10_000
STATES = ("ready", "taken", "done", "buried", "delayed")


class Field:
    """One named field. ``check(value)`` returns the clean value or raises InvalidField."""

    json = {}

    def __init__(self, name, *, required=False, default=None, doc=""):
        self.name = name
        self.required = required
        self.default = default
        self.doc = doc

    def check(self, value):
        return value

    def json_schema(self):
        schema = dict(self.json)
        if self.doc:
            schema["description"] = self.doc
        return schema

    def bad(self, message):
        return InvalidField(self.name, message)


class Duration(Field):
    """Seconds, fractions allowed, 0 <= value <= MAX_DURATION."""

    def __init__(self, name, *, positive=False, **kw):
        super().__init__(name, **kw)
        self.positive = positive

    @property
    def json(self):
        low = {"exclusiveMinimum": 0} if self.positive else {"minimum": 0}
        return {"type": "number", **low, "maximum": MAX_DURATION}

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad("must be a number of seconds")
        value = float(value)
        if not math.isfinite(value) or value < 0 or value > MAX_DURATION:
            raise self.bad(f"must be between 0 and {MAX_DURATION:.0f} seconds")
        if self.positive and value == 0:
            raise self.bad("must be more than 0 seconds")
        return value


class Integer(Field):
    def __init__(self, name, *, minimum=0, maximum=2**32 - 1, **kw):
        super().__init__(name, **kw)
        self.minimum, self.maximum = minimum, maximum

    @property
    def json(self):
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad("must be an integer")
        if not self.minimum <= value <= self.maximum:
            raise self.bad(f"must be between {self.minimum} and {self.maximum}")
        return value


class String(Field):
    def __init__(self, name, *, max_length=200, enum=None, **kw):
        super().__init__(name, **kw)
        self.max_length = max_length
        self.enum = enum

    @property
    def json(self):
        if self.enum:
            return {"type": "string", "enum": list(self.enum)}
        return {"type": "string", "minLength": 1, "maxLength": self.max_length}

    def check(self, value):
        if not isinstance(value, str):
            raise self.bad("must be a string")
        if self.enum is not None:
            if value not in self.enum:
                raise self.bad(f"must be one of {', '.join(self.enum)}")
        elif not 1 <= len(value) <= self.max_length:
            raise self.bad(f"must be 1 to {self.max_length} characters")
        return value


class Data(Field):
    """Any JSON value, nested at most MAX_DATA_DEPTH deep."""

    json = {}

    def check(self, value):
        if not isinstance(value, (dict, list)):
            return value  # a scalar (the common put: a string) nests nothing; skip the walk
        if _depth_exceeds(value, MAX_DATA_DEPTH):
            raise self.bad(f"nests deeper than {MAX_DATA_DEPTH} levels")
        return value


class Options(Field):
    """A JSON object of driver options; the store checks names and types."""

    json = {"type": "object"}

    def check(self, value):
        if not isinstance(value, dict):
            raise self.bad("must be an object")
        if _depth_exceeds(value, 8):
            raise self.bad("nests too deep")
        return value


class TubeNames(Field):
    json = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "minItems": 1, "maxItems": 100}

    def check(self, value):
        if not isinstance(value, list) or not 1 <= len(value) <= 100:
            raise self.bad("must be a list of 1 to 100 tube names")
        for name in value:
            if not isinstance(name, str) or not 1 <= len(name) <= 200:
                raise self.bad("must hold tube names (strings of 1 to 200 characters)")
        return value


class Batch(Field):
    """A list of objects each validated by ``item`` (a Schema)."""

    def __init__(self, name, item, **kw):
        super().__init__(name, **kw)
        self.item = item

    def json_schema(self):
        return {"type": "array", "items": self.item.json_schema(), "minItems": 1, "maxItems": MAX_BATCH}

    def check(self, value):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
            raise self.bad(f"must be a list of 1 to {MAX_BATCH} objects")
        return [self.item.validate(v, where=f"{self.name}[{i}]") for i, v in enumerate(value)]


class Schema:
    """An object with known fields; unknown fields are refused (typos must not pass silently)."""

    def __init__(self, name, *fields, doc=""):
        self.name = name
        self.fields = {f.name: f for f in fields}
        self.doc = doc
        # Precomputed so validate() loops over what the body holds, not every field.
        self._required = tuple(f.name for f in fields if f.required)
        self._defaults = tuple((f.name, f.default) for f in fields if f.default is not None)

    def validate(self, obj, where=None):
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            if where:
                raise InvalidField(where, "must be an object")
            raise InvalidJson("the body must be a JSON object")
        out = {}
        fields = self.fields
        for key, value in obj.items():
            field = fields.get(key)
            if field is None:
                raise UnknownField(f"{where}.{key}" if where else key)
            if value is None and not isinstance(field, Data):
                continue  # an explicit null means "use the default"
            try:
                out[key] = field.check(value)
            except InvalidField as exc:
                if where:
                    raise InvalidField(f"{where}.{exc.field}", str(exc).split(": ", 1)[1]) from None
                raise
        for name in self._required:
            if name not in out:
                raise MissingField(f"{where}.{name}" if where else name)
        for name, default in self._defaults:
            if name not in out:
                out[name] = default
        return out

    def json_schema(self):
        schema = {
            "type": "object",
            "properties": {n: f.json_schema() for n, f in self.fields.items()},
            "additionalProperties": False,
        }
        required = [n for n, f in self.fields.items() if f.required]
        if required:
            schema["required"] = required
        if self.doc:
            schema["description"] = self.doc
        return schema


def _depth_exceeds(value, limit):
    """True if value nests more than ``limit`` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# -- the bodies -------------------------------------------------------------------------

EMPTY = Schema("Empty", doc="An empty object (or no body).")

CREATE_TUBE = Schema(
    "CreateTube",
    String("driver", required=True, max_length=64, doc="fifo, fifottl, limfifottl, utube, utubettl or a custom driver"),
    Options("options", doc="Driver options (ttl, ttr, pri, capacity, max_attempts, ...)"),
)

TASK_FIELDS = (
    Data("data", doc="Any JSON value"),
    Integer("pri", doc="Priority, 0 is most urgent"),
    Duration("ttl", doc="Seconds the task lives once ready"),
    Duration("ttr", doc="Seconds a consumer has to ack before the task returns to ready"),
    Duration("delay", doc="Seconds before the task becomes ready"),
    String("utube", doc="Sub-queue key (utube drivers)"),
    String("key", doc="Unique key: a put with a key a live task holds returns that task"),
)
TASK = Schema("TaskInput", *TASK_FIELDS)
PUT = Schema(
    "Put", *TASK_FIELDS, Batch("tasks", TASK, doc="Batch form: a list of task objects"),
    doc='One task ({"data": ...}) or a batch ({"tasks": [...]}).',
)

TAKE = Schema(
    "Take",
    Duration("timeout", doc="Seconds to wait for a task (0 or absent: do not wait)"),
    Integer("count", minimum=1, maximum=MAX_BATCH, doc="Take up to this many; the answer is then {\"tasks\": [...]}"),
)
TAKE_ANY = Schema(
    "TakeAny",
    TubeNames("tubes", required=True),
    Duration("timeout", doc="Seconds to wait for a task"),
)
RELEASE = Schema("Release", Duration("delay"), Integer("pri"))
TOUCH = Schema("Touch", Duration("delta", required=True, positive=True, doc="Seconds added to the running ttr"))
KICK = Schema("Kick", Integer("count", minimum=1, default=1))

LIST_QUERY = Schema(
    "ListQuery",
    String("state", enum=STATES),
    Integer("limit", minimum=1, maximum=MAX_LIST_LIMIT, default=100),
)

ALL = (EMPTY, CREATE_TUBE, TASK, PUT, TAKE, TAKE_ANY, RELEASE, TOUCH, KICK)


def query_args(schema, raw):
    """Validate query-string values (strings) against ``schema``: integers are parsed here."""
    obj = {}
    for key, value in raw.items():
        field = schema.fields.get(key)
        if isinstance(field, Integer):
            try:
                value = int(value, 10)
            except (TypeError, ValueError):
                raise InvalidField(key, "must be an integer") from None
        obj[key] = value
    return schema.validate(obj)
