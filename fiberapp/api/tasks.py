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
import base64
import operator

from fiberapp.http.errors import ClientDisconnected
from fiberapp.http.response import Response

from queues.task import FIELDS, TIME_FIELDS, Task

from . import schemas
from .context import reply, session_header
from .sessions import store_name
from .errors import InvalidField, MissingField

# Every persisted task field except "session": that is the owner's token, and showing it
# would let anyone ack for the owner. Read with one C-level attrgetter (the hot path of
# every task answer) instead of Task.to_dict(), whose output this matches otherwise.
_SHOWN = tuple(f for f in FIELDS if f != "session")
_read = operator.attrgetter(*_SHOWN)
_TIMES = tuple(i for i, f in enumerate(_SHOWN) if f in TIME_FIELDS)


def task_json(task, clock):
    """The task as JSON-ready dict: times as wall-clock seconds (``clock`` is the store's)."""
    values = list(_read(task))
    offset = clock.time() - clock.monotonic()
    for i in _TIMES:
        if values[i] is not None:
            values[i] += offset
    out = dict(zip(_SHOWN, values))
    if task.existing:
        out["existing"] = True
    data = out["data"]
    if isinstance(data, (bytes, bytearray)):
        # Fiber scripts may put bytes; JSON cannot carry them, so say how they are encoded.
        out["data"] = base64.b64encode(data).decode("ascii")
        out["data_encoding"] = "base64"
    return out


def put(api, req, tube):
    body = api.body(req, schemas.PUT)
    t = api.store.tube(tube)
    if "tasks" in body:
        if len(body) > 1:
            extra = sorted(k for k in body if k != "tasks")[0]
            raise InvalidField(extra, "cannot be given beside tasks (put each task's fields inside it)")
        for i, item in enumerate(body["tasks"]):
            if "data" not in item:
                raise MissingField(f"tasks[{i}].data")
        tasks = t.put_many(body["tasks"])
        return reply({"tasks": [task_json(x, api.store.clock) for x in tasks]}, 201)
    if "data" not in body:
        raise MissingField("data")
    data = body.pop("data")
    task = t.put(data, **body)
    if task.existing:
        return reply({"task": task_json(task, api.store.clock), "existing": True}, 200)
    return reply({"task": task_json(task, api.store.clock)}, 201)


def list_tasks(api, req, tube):
    q = schemas.query_args(schemas.LIST_QUERY, req.query)
    t = api.store.tube(tube)
    if q.get("state") == "done":
        return {"tasks": []}  # done tasks are counted, not kept (queues.states)
    return {"tasks": [task_json(x, api.store.clock) for x in t.tasks(state=q.get("state"), limit=q["limit"])]}


def peek(api, req, tube, id):
    return {"task": task_json(api.store.tube(tube).peek(id), api.store.clock)}


def delete(api, req, tube, id):
    t = api.store.tube(tube)
    task = t.peek(id)
    t.delete(id)
    return {"task": task_json(task, api.store.clock)}


def bury(api, req, tube, id):
    api.body(req, schemas.EMPTY)
    t = api.store.tube(tube)
    task = t.peek(id)
    t.bury(id)
    return {"task": task_json(task, api.store.clock)}


def ack(api, req, tube, id):
    api.body(req, schemas.EMPTY)
    return _owned(api, req, tube, id, lambda t, s: t.ack(id, session=s))


def release(api, req, tube, id):
    body = api.body(req, schemas.RELEASE)
    return _owned(api, req, tube, id, lambda t, s: t.release(id, session=s, **body))


def touch(api, req, tube, id):
    body = api.body(req, schemas.TOUCH)
    return _owned(api, req, tube, id, lambda t, s: t.touch(id, body["delta"], session=s))


def _owned(api, req, tube, id, call):
    """Run ``call(tube, session)`` for the request's session, keeping the session alive."""
    session, _ = api.session_of(req)
    t = api.store.tube(tube)
    task = t.peek(id)
    if session is None:
        result = call(t, None)
    else:
        api.sessions.enter(session)
        try:
            result = call(t, store_name(session))
        finally:
            api.sessions.leave(session)
    if isinstance(result, Task):
        task = result  # where it ended: a dead-lettered release answers the new record
    return {"task": task_json(task, api.store.clock)}


def take(api, req, tube):
    body = api.body(req, schemas.TAKE)
    t = api.store.tube(tube)
    timeout = body.get("timeout", 0.0)
    count = body.get("count")
    if count is None:
        session, task = _waiting(api, req, timeout, lambda s, wait: t.take(wait, session=s))
        if task is None:
            return _nothing(session)
        return reply({"task": task_json(task, api.store.clock)}, 200, session_header(session))
    session, tasks = _waiting(api, req, timeout, lambda s, wait: t.take_many(count, timeout=wait, session=s))
    if not tasks:
        return _nothing(session)
    return reply({"tasks": [task_json(x, api.store.clock) for x in tasks]}, 200, session_header(session))


def take_any(api, req):
    body = api.body(req, schemas.TAKE_ANY)
    store = api.store
    for name in body["tubes"]:
        store.tube(name)  # 404 for a missing tube before waiting on the others
    session, task = _waiting(api, req, body.get("timeout", 0.0),
                             lambda s, wait: store.take_any(body["tubes"], wait, session=s))
    if task is None:
        return _nothing(session)
    return reply({"task": task_json(task, api.store.clock)}, 200, session_header(session))


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
