"""`fiberapp queue ...` against a real server on port 0 (in this process: the CLI's blocking
http.client runs on the patched socket, so the server fibers serve it)."""
import json

import pytest
from click.testing import CliRunner

from fiberapp.cli.queue import queue


@pytest.fixture
def cli(env, clock):
    host, port = env.serve(clock=clock)
    runner = CliRunner()

    def run(*args, env_vars=None, ok=True):
        result = runner.invoke(queue, ["--url", f"http://{host}:{port}", *args], env=env_vars or {},
                               catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, (result.exit_code, result.output)
            return json.loads(result.output)
        return result

    return run


def test_create_put_take_ack_stats(cli):
    created = cli("create", "jobs", "--driver", "fifottl", "-o", "ttr=30")
    assert created["created"] is True and created["options"]["ttr"] == 30
    assert cli("create", "jobs", "--driver", "fifottl")["created"] is False
    put = cli("put", "jobs", '{"order": 7}', "--pri", "2")
    assert put["task"]["data"] == {"order": 7} and put["task"]["pri"] == 2
    assert cli("put", "jobs", "plain text", "--pri", "9")["task"]["data"] == "plain text"
    taken = cli("take", "jobs")
    assert taken["task"]["id"] == put["task"]["id"] and taken["session"]
    acked = cli("--session", taken["session"], "ack", "jobs", str(put["task"]["id"]))
    assert acked["task"]["state"] == "done"
    assert cli("stats", "jobs")["stats"]["tasks"]["done"] == 1
    assert cli("stats")["tubes"]["jobs"]["calls"]["ack"] == 1
    assert [t["name"] for t in cli("tubes")["tubes"]] == ["jobs"]


def test_release_bury_kick_peek(cli):
    cli("create", "t", "--driver", "fifottl")
    task_id = str(cli("put", "t", "1")["task"]["id"])
    session = cli("take", "t")["session"]
    assert cli("--session", session, "release", "t", task_id, "--delay", "5")["task"]["state"] == "delayed"
    assert cli("bury", "t", task_id)["task"]["state"] == "buried"
    assert cli("kick", "t", "--count", "3") == {"kicked": 1}
    assert cli("peek", "t", task_id)["task"]["state"] == "ready"


def test_take_on_an_empty_tube_prints_null(cli):
    cli("create", "e", "--driver", "fifo")
    out = cli("take", "e", "--timeout", "0")
    assert out["task"] is None and out["session"]
    assert cli("take", "e", "--count", "2")["tasks"] == []


def test_api_errors_print_the_message_and_exit_1(cli):
    result = cli("peek", "missing", "1", ok=False)
    assert result.exit_code == 1
    assert "no_such_tube" in result.output and "missing" in result.output
    cli("create", "x", "--driver", "fifo")
    result = cli("ack", "x", "12345", ok=False)
    assert result.exit_code == 1 and "no_such_task" in result.output


def test_token_from_the_environment(make_env, clock):
    e = make_env(api_token="cli-token")
    host, port = e.serve(clock=clock)
    runner = CliRunner()
    url = f"http://{host}:{port}"
    denied = runner.invoke(queue, ["tubes"], env={"FIBERAPP_URL": url})
    assert denied.exit_code == 1 and "unauthorized" in denied.output
    allowed = runner.invoke(queue, ["tubes"], env={"FIBERAPP_URL": url, "FIBERAPP_API_TOKEN": "cli-token"})
    assert allowed.exit_code == 0 and json.loads(allowed.output) == {"tubes": []}


def test_unreachable_server_exits_2():
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = CliRunner().invoke(queue, ["--url", f"http://127.0.0.1:{port}", "tubes"])
    assert result.exit_code == 2 and "cannot reach" in result.output
