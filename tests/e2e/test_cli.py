"""The real CLI in subprocesses: run, start/status/stop, reload, console, top, SIGTERM drain,
failing scripts and bad configs. Port 0 and temporary directories throughout."""
import os
import signal
import stat
import textwrap
import threading

import pytest

from fiberapp.daemon import is_alive
from tests.e2e.server import Server, cli

pytestmark = pytest.mark.timeout(120)


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def server(tmp_path):
    servers = []

    def make(*args, **kwargs):
        s = Server(tmp_path, *args, **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def test_run_serves_health_and_stops_cleanly_on_sigterm(server):
    s = server()
    s.start()
    assert s.request("GET", "/health") == (200, {"status": "ok"})
    pidfile = os.path.join(s.data_dir, "fiberapp.pid")
    assert int(open(pidfile).read()) == s.proc.pid
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    s.wait_for("STOPPING=1", 5)  # already queued on the notify socket
    assert not os.path.exists(pidfile)
    assert "stopped cleanly" in s.log()


def test_console_round_trip_over_a_0600_unix_socket(server):
    s = server()
    s.start()
    sock = os.path.join(s.data_dir, "console.sock")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    out = cli("console", "--data-dir", s.data_dir, "-e", "6 * 7")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    out = cli("console", "--data-dir", s.data_dir, "-e", "app.state")
    assert out.stdout.strip() == "'running'"
    # interactive: statements keep state across lines within one session
    out = cli("console", "--data-dir", s.data_dir, input="x = 20\nx + 1\n")
    assert out.returncode == 0
    assert "21" in out.stdout


def test_console_without_a_server_says_so(tmp_path):
    out = cli("console", "--data-dir", str(tmp_path), "-e", "1")
    assert out.returncode == 1
    assert "cannot reach the server's console" in out.stderr


def test_failing_script_stops_startup_with_traceback(tmp_path):
    bad = script(tmp_path, "bad.py", """
        def init(app):
            raise RuntimeError("boom from the script")
    """)
    out = cli("run", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), bad)
    assert out.returncode != 0
    assert "boom from the script" in out.stderr
    assert "Traceback" in out.stderr


def test_script_without_init_is_refused(tmp_path):
    bad = script(tmp_path, "noinit.py", "x = 1\n")
    out = cli("run", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), bad)
    assert out.returncode != 0
    assert "defines no init(app)" in out.stderr


def test_bad_config_exits_before_touching_data(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('wal_mode = "maybe"\nlisten = "x"\nunknown_key = 1\n')
    data = tmp_path / "data"
    out = cli("run", "--config", conf, "--data-dir", data)
    assert out.returncode == 2
    for key in ("wal_mode", "listen", "unknown_key"):
        assert key in out.stderr
    assert not data.exists()


def test_check_config(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('listen = "127.0.0.1:9999"\n[http]\nmax_connections = 10\n')
    out = cli("check-config", good, "--show")
    assert out.returncode == 0 and "ok" in out.stdout and '"max_connections": 10' in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("checkpoint_count = 0\n[http]\nidle_timeout = -1\n")
    out = cli("check-config", bad)
    assert out.returncode == 1
    assert "checkpoint_count" in out.stderr and "http.idle_timeout" in out.stderr


def test_script_routes_fibers_and_reload(server, tmp_path):
    path = script(tmp_path, "hello.py", """
        def init(app):
            @app.route("GET", "/hello")
            def hello(request):
                return {"version": 1}

            def ticker():
                while True:
                    app.runtime.sleep(3600)
            app.spawn(ticker, name="hello.ticker")
    """)
    s = server(path)
    s.start()
    assert s.request("GET", "/hello") == (200, {"version": 1})
    before = cli("console", "-d", s.data_dir, "-e", "[f.id for f in app.runtime.fibers() if f.name == 'hello.ticker']")
    path.write_text(path.read_text().replace('{"version": 1}', '{"version": 2}')
                    .replace('@app.route("GET", "/hello")', '@app.route("GET", "/hello")\n'
                             '    @app.route("GET", "/hello2")'))
    out = cli("reload", "-d", s.data_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert s.request("GET", "/hello") == (200, {"version": 2})
    assert s.request("GET", "/hello2") == (200, {"version": 2})
    after = cli("console", "-d", s.data_dir, "-e", "[f.id for f in app.runtime.fibers() if f.name == 'hello.ticker']")
    assert before.stdout.strip() != after.stdout.strip()  # the old fiber was cancelled, a new one runs
    assert len(eval(after.stdout.strip())) == 1


def test_reload_reports_a_broken_script_and_keeps_serving(server, tmp_path):
    path = script(tmp_path, "s.py", """
        def init(app):
            @app.route("GET", "/s")
            def s(request):
                return "ok"
    """)
    s = server(path)
    s.start()
    path.write_text("def init(app):\n    raise ValueError('broken on reload')\n")
    out = cli("reload", "-d", s.data_dir)
    assert out.returncode == 1
    assert "broken on reload" in out.stdout
    assert s.request("GET", "/health")[0] == 200


def test_sighup_reloads(server, tmp_path):
    path = script(tmp_path, "v.py", """
        def init(app):
            @app.route("GET", "/v")
            def v(request):
                return "one"
    """)
    s = server(path)
    s.start()
    path.write_text(path.read_text().replace('"one"', '"two"'))
    s.signal(signal.SIGHUP)
    s.wait_for("RELOADING=1")
    s.wait_for("READY=1")
    assert s.request("GET", "/v") == (200, b"two")


def test_sigterm_drains_in_flight_requests(server, tmp_path):
    path = script(tmp_path, "slow.py", """
        import gevent.event

        def init(app):
            stopping = gevent.event.Event()
            app.on_shutdown(stopping.set)

            @app.route("GET", "/slow")
            def slow(request):
                app.notifier.status("slow handler waiting")  # tells the test it is in
                stopping.wait(30)          # finishes only once the drain has begun
                return "drained"
    """)
    s = server(path)
    s.start()
    result = {}

    def call():
        result["response"] = s.request("GET", "/slow", timeout=30)

    t = threading.Thread(target=call)
    t.start()
    s.wait_for("STATUS=slow handler waiting")
    s.signal(signal.SIGTERM)
    t.join(30)
    assert result["response"] == (200, b"drained")
    assert s.wait() == 0


def test_start_status_stop_as_a_daemon(tmp_path):
    data = str(tmp_path / "data")
    common = ["--data-dir", data]
    out = cli("status", *common)
    assert out.returncode == 3 and "stopped" in out.stdout
    out = cli("start", "--listen", "127.0.0.1:0", *common)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "started" in out.stdout
        out = cli("status", *common)
        assert out.returncode == 0 and "running (pid" in out.stdout and "uptime" in out.stdout
        pid = int(open(os.path.join(data, "fiberapp.pid")).read())
        addr = cli("console", *common, "-e", "app.address")
        assert "127.0.0.1" in addr.stdout
    finally:
        out = cli("stop", *common)
    assert out.returncode == 0 and "stopped" in out.stdout
    assert not is_alive(pid)
    assert cli("status", *common).returncode == 3
    assert "fiberapp ready" in open(os.path.join(data, "fiberapp.log")).read()


def test_top_once_lists_fibers(server):
    s = server()
    s.start()
    out = cli("top", "-d", s.data_dir, "--once")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]


def test_second_server_on_same_data_dir_is_refused(server, tmp_path):
    s = server()
    s.start()
    out = cli("run", "--listen", "127.0.0.1:0", "--data-dir", s.data_dir)
    assert out.returncode != 0
    assert "already running" in out.stderr or "lock" in out.stderr


def test_make_run_serves_health(tmp_path):
    """`make run` (the README's command) brings the server up; SIGINT (Ctrl-C) stops it."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    s = Server(tmp_path)
    import socket as _socket

    notify = str(tmp_path / "notify.sock")
    s._notify = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    s._notify.bind(notify)
    s._log = open(s.log_path, "wb")
    s.proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", root, "run",
         f"ARGS=--listen 127.0.0.1:0 --data-dir {s.data_dir}"],
        env=dict(os.environ, NOTIFY_SOCKET=notify), stdout=s._log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        s.wait_for("READY=1", 60)
        assert s.request("GET", "/health") == (200, {"status": "ok"})
    finally:
        os.killpg(s.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        s.proc.wait(30)  # make itself dies of the SIGINT, as it does in a terminal
        s._notify.close()
    assert "stopped cleanly" in s.log()
    assert "Traceback" not in s.log()


def test_systemd_watchdog_pings(server):
    s = server(env={"WATCHDOG_USEC": "200000"})  # WatchdogSec=0.2s -> a ping every 0.1 s
    s.start()
    s.wait_for("WATCHDOG=1", 10)
    s.wait_for("WATCHDOG=1", 10)


def test_second_stop_signal_exits_at_once(server, tmp_path):
    path = script(tmp_path, "stuck.py", """
        import gevent.event

        def init(app):
            never = gevent.event.Event()

            @app.route("GET", "/stuck")
            def stuck(request):
                app.notifier.status("stuck handler entered")
                never.wait(60)
                return "late"
    """)
    s = server(path, config=None)
    s.start()
    def call():
        try:
            s.request("GET", "/stuck", timeout=60)
        except OSError:  # the server exits mid-request: that is the point
            pass

    t = threading.Thread(target=call, daemon=True)
    t.start()
    s.wait_for("STATUS=stuck handler entered")
    s.signal(signal.SIGTERM)
    s.wait_for("STOPPING=1")
    s.signal(signal.SIGTERM)
    assert s.wait(10) == 1  # well before the 10 s drain deadline would have passed
    assert "second stop signal" in s.log()


def test_reload_reopens_the_log_file(server, tmp_path):
    log_file = tmp_path / "fiberapp.log"
    s = server("--log-file", log_file)
    s.start()
    os.rename(log_file, tmp_path / "fiberapp.log.1")
    assert cli("reload", "-d", s.data_dir).returncode == 0
    assert "reloaded" in log_file.read_text()
    assert "fiberapp ready" in (tmp_path / "fiberapp.log.1").read_text()


def test_tasks_survive_a_restart_and_snapshot_command(tmp_path):
    s = Server(tmp_path)
    s.start()
    try:
        assert s.request("PUT", "/api/v1/tubes/jobs", {"driver": "fifottl"})[0] == 201
        status, body = s.request("POST", "/api/v1/tubes/jobs/tasks", {"data": {"n": 1}, "delay": 3600})
        assert status == 201
        task_id = body["task"]["id"]
        out = cli("snapshot", "-d", s.data_dir)
        assert out.returncode == 0, out.stderr
        snap = __import__("json").loads(out.stdout)
        assert snap["lsn"] >= 2 and os.path.exists(snap["file"])
        s.request("POST", "/api/v1/tubes/jobs/tasks", {"data": {"n": 2}})  # only in the WAL
    finally:
        assert s.stop() == 0
    again = Server(tmp_path)
    again.start()
    try:
        status, body = again.request("GET", f"/api/v1/tubes/jobs/tasks/{task_id}")
        assert status == 200 and body["task"]["data"] == {"n": 1} and body["task"]["state"] == "delayed"
        status, body = again.request("GET", "/api/v1/tubes/jobs/tasks?state=ready")
        assert [t["data"] for t in body["tasks"]] == [{"n": 2}]
    finally:
        again.stop()


def test_wal_mode_none_keeps_nothing(tmp_path):
    s = Server(tmp_path, "--wal-mode", "none")
    s.start()
    try:
        assert s.request("PUT", "/api/v1/tubes/jobs", {"driver": "fifo"})[0] == 201
        out = cli("snapshot", "-d", s.data_dir)
        assert out.returncode == 1 and "wal_mode" in (out.stdout + out.stderr)
    finally:
        s.stop()
    again = Server(tmp_path, "--wal-mode", "none")
    again.start()
    try:
        assert again.request("GET", "/api/v1/tubes/jobs")[0] == 404
    finally:
        again.stop()


@pytest.mark.parametrize("setting, frozen", [("true", True), ("false", False)])
def test_heap_is_frozen_after_recovery_unless_turned_off(server, setting, frozen):
    s = server(env={"FIBERAPP_GC_FREEZE": setting})
    s.start()
    out = cli("console", "-d", s.data_dir, "-e", "__import__('gc').get_freeze_count()")
    assert out.returncode == 0, out.stderr
    count = int(out.stdout.strip())
    assert (count > 0) is frozen, count
    assert ("heap frozen after recovery" in s.log()) is frozen


@pytest.mark.parametrize("setting, young", [(None, 10_000), ("2500", 2500), ("0", 700)])
def test_young_generation_threshold_is_set_at_start(server, setting, young):
    env = {"FIBERAPP_GC_FREEZE": "false"}  # the threshold does not depend on the freeze
    if setting is not None:
        env["FIBERAPP_GC_YOUNG_THRESHOLD"] = setting
    s = server(env=env)
    s.start()
    out = cli("console", "-d", s.data_dir, "-e", "__import__('gc').get_threshold()[0]")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == young
