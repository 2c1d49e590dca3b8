"""fiberapp.http: the HTTP/1.1 server (gevent + httptools), router, WSGI adapter and client.

Import the pieces from here:
    Router, Request, Response, HTTPServer, HTTPConfig, HTTPClient,
    and the errors (HTTPError, NotFound, BadRequest, ...).
"""
from .client import ClientResponse, HTTPClient
from .config import HTTPConfig
from .errors import (
    BadRequest, ClientDisconnected, ErrorMap, HeaderFieldsTooLarge, HTTPClientConnectionError,
    HTTPClientError, HTTPClientTimeout, HTTPError, MethodNotAllowed, NotFound, PayloadTooLarge, RouteError,
)
from .metrics import HTTPMetrics
from .request import Request
from .response import Response, to_response
from .router import Route, Router
from .server import HTTPServer
from .wsgi import WSGIHandler

__all__ = [
    "BadRequest", "ClientDisconnected", "ClientResponse", "ErrorMap", "HTTPClient", "HTTPClientConnectionError",
    "HTTPClientError", "HTTPClientTimeout", "HTTPConfig", "HTTPError", "HTTPMetrics", "HTTPServer",
    "HeaderFieldsTooLarge", "MethodNotAllowed", "NotFound", "PayloadTooLarge", "Request", "Response", "Route",
    "RouteError", "Router", "WSGIHandler", "to_response",
]
