"""What a script's handler lets escape becomes a typed status, never a 500."""
from fiberapp.db.errors import DbUnavailable, QueryTimeout
from fiberapp.http.request import Request
from fiberapp.http.router import Router
from fiberapp.wiring import map_errors
from queues.errors import NoSuchTask, TubeFull


def _status(exc):
    router = Router()
    map_errors(router)

    def handler(request):
        raise exc

    router.add("GET", "/x", handler)
    resp = router.dispatch(Request.build("GET", "/x"))
    return resp.status, resp.json_body()["error"]["code"]


def test_queue_errors_keep_their_own_status_and_code():
    assert _status(NoSuchTask("no task 7")) == (NoSuchTask.http_status, NoSuchTask.code)
    assert _status(TubeFull("full")) == (TubeFull.http_status, TubeFull.code)


def test_database_trouble_is_503_or_504():
    assert _status(DbUnavailable("pg is away"))[0] == 503
    assert _status(QueryTimeout("slow"))[0] == 504
