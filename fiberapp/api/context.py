"""Api: what every handler receives - the pieces it translates HTTP into calls on.

Handlers are plain functions ``handler(api, request, **path_params)`` returning a
Response (or a dict for 200). They are tested in-process by building an Api over a
store and calling them with ``Request.build(...)``; no socket needed.
"""
import orjson

from fiberapp.http.response import JSON, Response

from .auth import TokenCheck
from .encode import TaskEncoder
from .errors import InvalidJson, Unavailable
from .sessions import HEADER as SESSION_HEADER
from .sessions import SessionTracker, check_token, new_token


class Api:
    """The API's dependencies and the small helpers every handler shares.

    Either give the pieces (store, runtime, ...) or ``app``: an object with ``store``,
    ``persistence``, ``runtime``, ``clock``, ``registry``, ``config`` and ``health()``
    attributes, read at request time, because the app installs the routes before its
    store has recovered. Until there is a store, queue routes answer 503 "recovering".

    store       the queue store (queues.store.Store)
    runtime     the fiber runtime (fibers listing, spawning the session reaper)
    clock       the runtime's clock (session expiry)
    persistence optional: snapshot(), stats(), recovering
    registry    prometheus CollectorRegistry served at /metrics
    health      optional callable -> "ok" | a reason (503) | (status, body)
    session_ttl seconds of silence after which an HTTP session ends
    """

    def __init__(self, store=None, runtime=None, *, app=None, clock=None, persistence=None,
                 registry=None, health=None, session_ttl=60.0, api_token=None):
        # api_token: None/empty = no auth; else /api/v1 needs "Authorization: Bearer <token>"
        self._app = app
        self._store = store
        self._persistence = persistence
        self.runtime = runtime if runtime is not None else getattr(app, "runtime", None)
        self.clock = (clock or getattr(app, "clock", None) or getattr(self.runtime, "clock", None)
                      or getattr(store, "clock", None))
        self.registry = registry
        self.health = health if health is not None else getattr(app, "health", None)
        self.token = TokenCheck(api_token)
        self.sessions = SessionTracker(lambda: self.store.sessions, self.clock, session_ttl)
        self.routes = []        # the RouteSpecs installed, in order
        self.matchers = []      # (method, Route) per spec: 405 answers for /api/v1/*
        self.openapi_doc = b""  # the OpenAPI document, encoded once at install
        self._fibers = []
        self._encoder = None    # TaskEncoder for the store's clock (see encoder())
        self._last_body = None  # (schema, raw body, validated copy): see body()

    def add_fiber(self, fiber):
        """Own a fiber: stop() cancels it."""
        self._fibers.append(fiber)

    def stop(self):
        """Cancel the API's fibers (session reaper, loop-lag probe). Idempotent."""
        self.sessions.stop()
        fibers, self._fibers = self._fibers, []
        for fiber in fibers:
            fiber.cancel()

    @property
    def store(self):
        store = self._app.store if self._app is not None else self._store
        if store is None:
            raise Unavailable("the queue store is not ready yet (recovering)", code="recovering")
        return store

    @property
    def has_store(self):
        return (self._app.store if self._app is not None else self._store) is not None

    @property
    def persistence(self):
        return self._app.persistence if self._app is not None else self._persistence

    def encoder(self, store):
        """The TaskEncoder for ``store``'s clock (built once; again if the store changes)."""
        enc = self._encoder
        if enc is None or enc.clock is not store.clock:
            enc = self._encoder = TaskEncoder(store.clock)
        return enc

    # -- request helpers ------------------------------------------------------------------

    def body(self, req, schema):
        """Parse the JSON body (empty = {}) and validate it against ``schema``.

        A consumer sends the same small body again and again ({"timeout": 0} on every
        take): the last one validated is remembered with its result, when the result holds
        only scalars, and a request carrying the same bytes for the same schema gets a
        copy of it without parsing or validating again (the answer is a function of the
        bytes).
        """
        raw = req.body
        last = self._last_body
        if last is not None and last[0] is schema and last[1] == raw:
            return dict(last[2])
        out = schema.validate(parse_json(raw))
        if len(raw) <= 256:
            for value in out.values():
                if type(value) not in _SCALARS:
                    break
            else:
                self._last_body = (schema, raw, dict(out))
        return out

    def session_of(self, req, create=False):
        """(name, fresh): the session named by the header; with create, a new one if absent.

        The raw header pairs are scanned here (take and ack read this one header on every
        request): no dict of all headers, no per-header lower() unless the length fits.
        """
        value = None
        for name, raw in req.raw_headers:
            if len(name) == 18 and (name == _SESSION_RAW or name.lower() == _SESSION_LOWER):
                if value is not None:
                    value = req.header(SESSION_HEADER)  # repeated: joined, as header() does
                    break
                value = raw.decode("latin-1")
        if value:
            return check_token(value.strip()), False
        if create:
            return new_token(), True
        return None, False


def parse_json(raw):
    """The body's JSON value; None for an empty (or all-whitespace) body."""
    try:
        return _loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        if raw.isspace():
            return None
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None


def reply(obj, status=200, headers=None):
    return json_reply(orjson.dumps(obj), status, headers)


def json_reply(body, status=200, headers=None):
    """A Response for JSON bytes. Response(...) without its Python __init__, whose checks
    (str bodies, a None content type) do not apply here: on every task answer."""
    resp = _new_object(Response)
    resp.status = status
    resp.body = body
    resp.content_type = JSON
    resp.headers = headers if headers is not None else ()
    return resp


_loads = orjson.loads
_SCALARS = (str, int, float, bool, type(None))
_SESSION_RAW = SESSION_HEADER.encode("latin-1")
_SESSION_LOWER = _SESSION_RAW.lower()
_new_object = object.__new__


def session_header(name):
    return [(SESSION_HEADER, name)]
