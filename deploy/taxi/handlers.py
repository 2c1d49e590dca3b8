"""The taxi HTTP API: the route table, and translation between HTTP and TaxiService.

    POST /taxi/drivers/{id}/location        {"lat","lon","status"}   -> 200 {"ok": true[, "offer"]}
    GET  /taxi/drivers/{id}/offer?timeout=S                          -> 200 {"offer"} | 204
    POST /taxi/drivers/{id}/offer/accept    {"order_id"}             -> 200 {"order"}
    POST /taxi/drivers/{id}/offer/decline   {"order_id"}             -> 200 {"order"}
    POST /taxi/orders                       {"client","from","to"}   -> 201 {"order"}
    GET  /taxi/orders/{id}                                           -> 200 {"order"}
    POST /taxi/orders/{id}/cancel           {"reason"?}              -> 200 {"order"}
    POST /taxi/orders/{id}/arriving         {"driver"}               -> 200 {"order"}
    POST /taxi/orders/{id}/complete         {"driver"}               -> 200 {"order"}
    GET  /taxi/stats                                                 -> 200
    POST /taxi/history/flush?timeout=S      wait for queued events to reach PostgreSQL

The location answer carries the driver's presented offer, if any (the same object the
long-poll returns), so drivers that share a connection and cannot hold a long-poll still
learn of offers at their next ping.

Errors are {"error": {"code", "message"}} with the TaxiError's status (400, 403, 404,
409, 503); a body that is not JSON is 400. Nothing a client sends reaches a 500.
"""
import functools

from deploy.taxi.dispatch import Unavailable
from deploy.taxi.errors import BadRequest, TaxiError
from fiberapp.db.errors import DbError
from fiberapp.http.errors import HTTPError
from fiberapp.http.response import Response
from queues.errors import QueueError

DEFAULT_CANCEL_REASON = "cancelled by the client"


def _error(status, code, message):
    return Response.json({"error": {"code": code, "message": message}}, status=status)


def taxi_errors(handler):
    """Middleware: the taxi error format for every expected failure."""
    @functools.wraps(handler)
    def wrapped(request):
        try:
            return handler(request)
        except TaxiError as exc:
            return _error(exc.status, exc.code, str(exc))
        except HTTPError as exc:  # e.g. a body that is not JSON
            return _error(exc.status, exc.code, exc.message)
        except (QueueError, DbError) as exc:
            return _error(503, "unavailable", str(exc))
    return wrapped


def _body(request, required=True):
    if not request.body and not required:
        return {}
    body = request.json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _order_id(body):
    oid = body.get("order_id")
    if isinstance(oid, bool) or not isinstance(oid, int):
        raise BadRequest("order_id must be an integer")
    return oid


def _seconds(request, name, default, maximum):
    qs = request.query_string
    if qs.startswith(name + "=") and "&" not in qs and "%" not in qs and "+" not in qs:
        raw = qs[len(name) + 1:]  # the drivers' one-parameter poll: skip parse_qs (profiled)
    else:
        raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number of seconds") from None
    if not 0 <= value <= maximum:  # also rejects nan
        raise BadRequest(f"{name} must be between 0 and {maximum:g}")
    return value


def register(route, service):
    """Add every taxi route through ``route(method, path, middleware=...)`` (the script's
    app.route)."""
    settings = service.settings

    def add(method, path):
        return route(method, path, middleware=(taxi_errors,))

    @add("POST", "/taxi/drivers/{driver}/location")
    def location(request):
        offer = service.location(request.params["driver"], _body(request))
        if offer is None:
            return {"ok": True}
        return {"ok": True, "offer": offer}

    @add("GET", "/taxi/drivers/{driver}/offer")
    def offer(request):
        timeout = _seconds(request, "timeout", 0.0, settings.max_poll)
        watch = request.cancel_on_disconnect() if timeout else None
        try:
            found = service.poll_offer(request.params["driver"], timeout)
        finally:
            if watch is not None:
                watch.cancel()
        if found is None:
            return Response(b"", 204)
        return {"offer": found}

    @add("POST", "/taxi/drivers/{driver}/offer/accept")
    def accept(request):
        order = service.accept(request.params["driver"], _order_id(_body(request)))
        return {"order": order.to_dict()}

    @add("POST", "/taxi/drivers/{driver}/offer/decline")
    def decline(request):
        order = service.decline(request.params["driver"], _order_id(_body(request)))
        return {"order": order.to_dict()}

    @add("POST", "/taxi/orders")
    def create(request):
        order = service.create_order(_body(request))
        return {"order": order.to_dict()}, 201

    @add("GET", "/taxi/orders/{order:int}")
    def get_order(request):
        return {"order": service.order(request.params["order"])}

    @add("POST", "/taxi/orders/{order:int}/cancel")
    def cancel(request):
        reason = _body(request, required=False).get("reason", DEFAULT_CANCEL_REASON)
        if not isinstance(reason, str):
            raise BadRequest("reason must be a string")
        return {"order": service.cancel(request.params["order"], reason).to_dict()}

    def driver_of(request):
        driver = _body(request).get("driver")
        if isinstance(driver, bool) or not isinstance(driver, (str, int)):
            raise BadRequest("driver must be the driver's id")
        return str(driver)

    @add("POST", "/taxi/orders/{order:int}/arriving")
    def arriving(request):
        return {"order": service.arriving(request.params["order"], driver_of(request)).to_dict()}

    @add("POST", "/taxi/orders/{order:int}/complete")
    def complete(request):
        return {"order": service.complete(request.params["order"], driver_of(request)).to_dict()}

    @add("GET", "/taxi/stats")
    def stats(request):
        return service.stats()

    @add("POST", "/taxi/history/flush")
    def flush(request):
        timeout = _seconds(request, "timeout", 10.0, 300.0)
        if not service.history.flush(timeout):
            raise Unavailable(f"history not flushed within {timeout:g} s "
                              f"({service.history.pending()} event(s) pending)")
        return service.history.stats()
