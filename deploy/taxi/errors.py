"""Typed errors of the taxi backend; TaxiError is the one root.

Each carries the HTTP status the taxi app should answer with, so the app maps them in
one place (``except TaxiError as e: respond(e.status, {"error": e.code, ...})``).
"""


class TaxiError(Exception):
    status = 400
    code = "taxi_error"


class BadRequest(TaxiError, ValueError):
    """Input that can never be valid (bad coordinates, unknown status, bad id)."""

    status = 400
    code = "bad_request"


class UnknownOrder(TaxiError, KeyError):
    status = 404
    code = "unknown_order"

    def __str__(self):  # KeyError would quote the message
        return Exception.__str__(self)


class InvalidTransition(TaxiError):
    """The order's current state does not allow the requested action."""

    status = 409
    code = "invalid_transition"

    def __init__(self, order_id, state, action):
        super().__init__(f"order {order_id}: cannot {action} in state {state}")
        self.order_id = order_id
        self.state = state
        self.action = action


class WrongDriver(TaxiError):
    """The driver acting on an order is not the one it was offered to / assigned to."""

    status = 403
    code = "wrong_driver"
