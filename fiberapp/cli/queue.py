"""`fiberapp queue ...`: a command-line client for a running server's HTTP API.

Every command is one HTTP request to /api/v1 and prints the JSON answer on one line.
An API error prints the server's message on stderr and exits 1; an unreachable server
exits 2. The module imports only the standard library and click: no patching, no app.

Sessions: `take` prints the session it took under ("session" in its output); pass it to
`ack`/`release` with --session (or FIBERAPP_SESSION) so they act as the same consumer.
"""
import http.client
import json
import sys
import urllib.parse

import click

DEFAULT_URL = "http://127.0.0.1:8080"
SESSION_HEADER = "X-Fiberapp-Session"


class ApiClient:
    """A tiny blocking JSON client; one connection, reused across calls."""

    def __init__(self, url, token=None, session=None, timeout=30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise click.UsageError(f"--url must look like http://HOST:PORT, got {url!r}")
        self.url = url
        self.base = parts.path.rstrip("/")
        self.token = token
        self.session = session
        self.timeout = timeout
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._conn = cls(parts.hostname, parts.port, timeout=timeout)

    def call(self, method, path, body=None, extra_timeout=0.0):
        """-> (status, decoded JSON or None, response headers). Raises ClickException."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session:
            headers[SESSION_HEADER] = self.session
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self._conn.timeout = self.timeout + extra_timeout
        try:
            self._conn.request(method, self.base + path, body=payload, headers=headers)
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        data = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw.decode("utf-8", "replace")
        if resp.status >= 400:
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                err = data["error"]
                raise ApiFailure(f"{err.get('code')}: {err.get('message')} (HTTP {resp.status})")
            raise ApiFailure(f"HTTP {resp.status}: {data}")
        return resp.status, data, resp.headers


class ApiFailure(click.ClickException):
    exit_code = 1

    def format_message(self):
        return self.message


class Unreachable(click.ClickException):
    exit_code = 2


def _out(obj):
    click.echo(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def _q(name):
    return urllib.parse.quote(name, safe="")


def _json_or_text(value):
    """Arguments are JSON when they parse as JSON, otherwise plain strings."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _client(ctx):
    return ctx.obj["client"]


@click.group("queue")
@click.option("--url", envvar="FIBERAPP_URL", default=DEFAULT_URL, show_default=True,
              help="Server URL (env FIBERAPP_URL).")
@click.option("--token", envvar="FIBERAPP_API_TOKEN", default=None,
              help="API token (env FIBERAPP_API_TOKEN).")
@click.option("--session", envvar="FIBERAPP_SESSION", default=None,
              help="Consumer session id (env FIBERAPP_SESSION); `take` prints the one it used.")
@click.option("--http-timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the server (a take's own timeout is added).")
@click.pass_context
def queue(ctx, url, token, session, http_timeout):
    """Talk to a running fiberapp server's queue API; every command prints JSON."""
    ctx.ensure_object(dict)
    ctx.obj["client"] = ApiClient(url, token=token, session=session, timeout=http_timeout)


@queue.command()
@click.pass_context
def tubes(ctx):
    """List tubes with their driver, options and statistics."""
    _out(_client(ctx).call("GET", "/api/v1/tubes")[1])


@queue.command()
@click.argument("tube")
@click.option("--driver", default="fifottl", show_default=True)
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE",
              help="A driver option; VALUE is JSON or a string. Repeatable.")
@click.pass_context
def create(ctx, tube, driver, options):
    """Create TUBE (200 if it already exists with the same driver)."""
    opts = {}
    for item in options:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--option")
        opts[name] = _json_or_text(value)
    status, data, _ = _client(ctx).call("PUT", f"/api/v1/tubes/{_q(tube)}", {"driver": driver, "options": opts})
    _out({"created": status == 201, **(data or {})})


@queue.command()
@click.argument("tube")
@click.argument("data")
@click.option("--pri", type=int)
@click.option("--ttl", type=float)
@click.option("--ttr", type=float)
@click.option("--delay", type=float)
@click.option("--utube")
@click.option("--key")
@click.pass_context
def put(ctx, tube, data, **opts):
    """Put a task into TUBE; DATA is JSON or a plain string."""
    body = {"data": _json_or_text(data), **{k: v for k, v in opts.items() if v is not None}}
    _out(_client(ctx).call("POST", f"/api/v1/tubes/{_q(tube)}/tasks", body)[1])


@queue.command()
@click.argument("tube")
@click.option("--timeout", type=float, default=0.0, show_default=True, help="Seconds to wait for a task.")
@click.option("--count", type=int, help="Take up to this many tasks.")
@click.pass_context
def take(ctx, tube, timeout, count):
    """Take a task from TUBE; prints {"task": null} when none came in time."""
    body = {"timeout": timeout}
    if count is not None:
        body["count"] = count
    client = _client(ctx)
    status, data, headers = client.call("POST", f"/api/v1/tubes/{_q(tube)}/take", body, extra_timeout=timeout)
    if status == 204 or data is None:
        data = {"tasks": []} if count is not None else {"task": None}
    _out({**data, "session": headers.get(SESSION_HEADER) or client.session})


def _task_command(name, doc, with_release_options=False):
    @click.argument("tube")
    @click.argument("task_id", type=int)
    @click.pass_context
    def command(ctx, tube, task_id, **opts):
        body = {k: v for k, v in opts.items() if v is not None} or None
        _out(_client(ctx).call("POST", f"/api/v1/tubes/{_q(tube)}/tasks/{task_id}/{name}", body)[1])

    command.__doc__ = doc
    if with_release_options:
        command = click.option("--pri", type=int)(click.option("--delay", type=float)(command))
    return queue.command(name)(command)


_task_command("ack", "Acknowledge task TASK_ID (taken by this --session): it is done.")
_task_command("release", "Return task TASK_ID to the tube (ready, or delayed with --delay).", True)
_task_command("bury", "Bury task TASK_ID (kick brings it back).")


@queue.command()
@click.argument("tube")
@click.option("--count", type=int, default=1, show_default=True)
@click.pass_context
def kick(ctx, tube, count):
    """Move up to COUNT buried tasks of TUBE back to ready."""
    _out(_client(ctx).call("POST", f"/api/v1/tubes/{_q(tube)}/kick", {"count": count})[1])


@queue.command()
@click.argument("tube")
@click.argument("task_id", type=int)
@click.pass_context
def peek(ctx, tube, task_id):
    """Show task TASK_ID without taking it."""
    _out(_client(ctx).call("GET", f"/api/v1/tubes/{_q(tube)}/tasks/{task_id}")[1])


@queue.command()
@click.argument("tube", required=False)
@click.pass_context
def stats(ctx, tube):
    """Statistics of TUBE, or of every tube."""
    client = _client(ctx)
    if tube:
        data = client.call("GET", f"/api/v1/tubes/{_q(tube)}")[1]
        _out({"name": data["name"], "stats": data["stats"]})
    else:
        data = client.call("GET", "/api/v1/tubes")[1]
        _out({"tubes": {t["name"]: t["stats"] for t in data["tubes"]}})


def main():  # pragma: no cover - `python -m fiberapp.cli.queue` for use before the main CLI
    queue(prog_name="fiberapp queue")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
