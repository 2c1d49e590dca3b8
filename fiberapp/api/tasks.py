"""Handlers for tasks: put (one or a batch), list, peek, delete, take, ack, release,
bury, touch.

Sessions: take, ack, release and touch act for the session named by the
X-Fiberapp-Session header. A take without one gets a fresh session, returned in the same
header. While a request runs its session is "in flight" and cannot expire. ack, release
or touch without the header act for no session, so the store refuses them (409
not_owner): a task belongs to the session that took it. In the store, HTTP sessions are
named ``http.<token>`` (sessions.store_name), apart from fiber scripts' sessions.

Long polls: a take that may wait asks the HTTP server to throw ClientDisconnected into
its fiber if the client hangs up; the store guarantees that a cancelled waiter takes
nothing. A session created for that one request is ended at once.

Single-task operations answer with the task as it is after the operation: the Task
object is looked up first and the store changes it in place (or, for a release that
dead-letters it, returns its new record in the dead-letter tube).
"""
from fiberapp.http.errors import ClientDisconnected
from fiberapp.http.response import JSON, Response

from queues.task import Task

from . import schemas
from .context import json_reply, parse_json, session_header
from .encode import task_json  # noqa: F401  (the dict form; tests and callers use it)
from .errors import InvalidField, MissingField
from .sessions import STORE_PREFIX, store_name

_SCALARS = (str, int, float, bool, type(None))
_ABSENT = object()
_EXISTING = b',"existing":true}'
_new_object = object.__new__


def put(api, req, tube):
    obj = parse_json(req.body)
    if type(obj) is dict and len(obj) == 1 and "data" in obj and type(obj["data"]) in _SCALARS:
        # The common put, {"data": <scalar>}: nothing for the schema to check (a scalar
        # nests nothing) and nothing but the data to pass on. Api.store, Api.encoder and
        # json_reply written out: each Python call here costs ~1,000 instructions.
        app = api._app
        store = api._store if app is None else app.store
        if store is None:
            store = api.store  # raises Unavailable (recovering)
        task = store.tube(tube).put(obj["data"])
        enc = api._encoder
        if enc is None or enc.clock is not store.clock:
            enc = api.encoder(store)
        if task.existing:
            return json_reply(enc.one(task, suffix=_EXISTING), 200)
        resp = _new_object(Response)
        resp.status = 201
        resp.body = enc.one(task)
        resp.content_type = JSON
        resp.headers = ()
        return resp
    else:
        body = schemas.PUT.validate(obj)
        store = api.store
        t = store.tube(tube)
        if "tasks" in body:
            if len(body) > 1:
                extra = sorted(k for k in body if k != "tasks")[0]
                raise InvalidField(extra, "cannot be given beside tasks (put each task's fields inside it)")
            for i, item in enumerate(body["tasks"]):
                if "data" not in item:
                    raise MissingField(f"tasks[{i}].data")
            tasks = t.put_many(body["tasks"])
            return json_reply(api.encoder(store).many(tasks), 201)
        if "data" not in body:
            raise MissingField("data")
        task = t.put(body.pop("data"), **body)
    if task.existing:
        return json_reply(api.encoder(store).one(task, suffix=_EXISTING), 200)
    return json_reply(api.encoder(store).one(task), 201)


def list_tasks(api, req, tube):
    q = schemas.query_args(schemas.LIST_QUERY, req.query)
    store = api.store
    t = store.tube(tube)
    if q.get("state") == "done":
        return {"tasks": []}  # done tasks are counted, not kept (queues.states)
    return json_reply(api.encoder(store).many(t.tasks(state=q.get("state"), limit=q["limit"])))


def peek(api, req, tube, id):
    store = api.store
    return json_reply(api.encoder(store).one(store.tube(tube).peek(id)))


def delete(api, req, tube, id):
    store = api.store
    t = store.tube(tube)
    task = t.peek(id)
    t.delete(id)
    return json_reply(api.encoder(store).one(task))


def bury(api, req, tube, id):
    api.body(req, schemas.EMPTY)
    store = api.store
    t = store.tube(tube)
    task = t.peek(id)
    t.bury(id)
    return json_reply(api.encoder(store).one(task))


def ack(api, req, tube, id):
    """_owned written out for ack (every consumer's hot path): Tube.ack returns the task
    and raises what peek would for a missing one, so there is no separate lookup."""
    if req.body:
        api.body(req, schemas.EMPTY)
    session, _ = api.session_of(req)
    store = api.store
    t = store.tube(tube)
    if session is None:
        task = t.ack(id, session=None)
    else:
        sessions = api.sessions
        sessions.enter(session)
        try:
            task = t.ack(id, session=STORE_PREFIX + session)
        finally:
            sessions.leave(session)
    return json_reply(api.encoder(store).one(task))


def release(api, req, tube, id):
    body = api.body(req, schemas.RELEASE)
    return _owned(api, req, tube, id, _release, body)


def touch(api, req, tube, id):
    body = api.body(req, schemas.TOUCH)
    return _owned(api, req, tube, id, _touch, body)


def _release(t, id, session, body):
    return t.release(id, session=session, **body)


def _touch(t, id, session, body):
    return t.touch(id, body["delta"], session=session)


def _owned(api, req, tube, id, call, body):
    """Run ``call(tube, id, session, body)`` for the request's session, keeping the
    session alive."""
    session, _ = api.session_of(req)
    store = api.store
    t = store.tube(tube)
    task = t.peek(id)
    if session is None:
        result = call(t, id, None, body)
    else:
        sessions = api.sessions
        sessions.enter(session)
        try:
            result = call(t, id, store_name(session), body)
        finally:
            sessions.leave(session)
    if isinstance(result, Task):
        task = result  # where it ended: a dead-lettered release answers the new record
    return json_reply(api.encoder(store).one(task))


def take(api, req, tube):
    body = api.body(req, schemas.TAKE)
    store = api.store
    t = store.tube(tube)
    timeout = body.get("timeout", 0.0)
    count = body.get("count")
    if count is None:
        if timeout:
            session, task = _waiting(api, req, timeout, lambda s, wait: t.take(wait, session=s))
        else:
            session, task = _take_now(api, req, t)
        if task is None:
            return _nothing(session)
        return json_reply(api.encoder(store).one(task), 200, session_header(session))
    session, tasks = _waiting(api, req, timeout, lambda s, wait: t.take_many(count, timeout=wait, session=s))
    if not tasks:
        return _nothing(session)
    return json_reply(api.encoder(store).many(tasks), 200, session_header(session))


def take_any(api, req):
    body = api.body(req, schemas.TAKE_ANY)
    store = api.store
    for name in body["tubes"]:
        store.tube(name)  # 404 for a missing tube before waiting on the others
    session, task = _waiting(api, req, body.get("timeout", 0.0),
                             lambda s, wait: store.take_any(body["tubes"], wait, session=s))
    if task is None:
        return _nothing(session)
    return json_reply(api.encoder(store).one(task), 200, session_header(session))


def _take_now(api, req, t):
    """_waiting for a take that does not wait (no disconnect watch to arm), written out:
    the polling consumer's hot path."""
    session, fresh = api.session_of(req, create=True)
    sessions = api.sessions
    sessions.enter(session)
    task = None
    try:
        task = t.take(0, session=STORE_PREFIX + session)
    finally:
        sessions.leave(session)
        if fresh and task is None:
            sessions.end_now(session)  # see _waiting
    return session, task


def _nothing(session):
    return Response(b"", 204, session_header(session))


def _waiting(api, req, timeout, call):
    """Run a take that may wait: session in flight, cancelled if the client hangs up.

    ``call(session, timeout)`` is tried without waiting first; only if that finds nothing
    and the client is willing to wait is the disconnect watch armed (a watcher per
    request costs more than the take itself on the fast path).
    """
    session, fresh = api.session_of(req, create=True)
    api.sessions.enter(session)
    got = None
    hung_up = False
    try:
        owner = store_name(session)
        got = call(owner, 0)
        if got or not timeout:
            return session, got
        watch = req.cancel_on_disconnect()
        try:
            got = call(owner, timeout)
            return session, got
        finally:
            watch.cancel()
    except ClientDisconnected:
        hung_up = True
        raise
    finally:
        api.sessions.leave(session)
        if fresh and (hung_up or not got):
            # A fresh session that owns nothing (or whose client hung up: nobody can name
            # it again) ends now rather than after session_ttl: a client polling without
            # the header must not leave one session per request behind. If it sends the
            # id back anyway, the session simply opens again.
            api.sessions.end_now(session)
