"""The deployment files: parsed and checked for the keys they promise, and, where the
tool is installed, verified by the tool itself (systemd-analyze, nginx -t, logrotate -d).
The tool checks skip when the tool is missing: the suite never needs them."""
import getpass
import grp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "fiberapp.service"
TOML = DEPLOY / "fiberapp.toml"
NGINX = DEPLOY / "nginx" / "fiberapp.conf"
LOGROTATE = DEPLOY / "logrotate" / "fiberapp"


def parse_unit(text):
    """systemd's format: [Section], Key=Value, repeated keys allowed, # and ; comments,
    backslash continuation. Returns {section: {key: [values]}}."""
    sections, current = {}, None
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"not Key=Value: {line!r}"
        key, value = line.split("=", 1)
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), key
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section, key):
    values = section[key]
    assert len(values) == 1, (key, values)
    return values[0]


def test_unit_file_has_the_required_settings():
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert one(svc, "Type") == "notify" and one(svc, "NotifyAccess") == "main"
    assert one(svc, "Restart") == "on-failure"
    assert re.fullmatch(r"\d+s?", one(svc, "WatchdogSec"))
    assert one(svc, "LimitNOFILE") == "65536"
    assert one(svc, "ProtectSystem") == "strict"
    assert one(svc, "NoNewPrivileges") == "true" and one(svc, "PrivateTmp") == "true"
    exec_start = one(svc, "ExecStart")
    assert exec_start.startswith("/") and exec_start.endswith("fiberapp run --config /etc/fiberapp/fiberapp.toml")
    assert one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # Everything fiberapp writes is under a ReadWritePaths entry (ProtectSystem=strict
    # makes the rest read-only): data_dir, log_file's directory, console_socket's.
    import tomllib

    conf = tomllib.loads(TOML.read_text())
    writable = one(svc, "ReadWritePaths").split()
    for path in (conf["data_dir"], os.path.dirname(conf["log_file"]), os.path.dirname(conf["console_socket"])):
        assert any(path == w or path.startswith(w + "/") for w in writable), path
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_command_line_exists_in_the_cli():
    """ExecStart's subcommand and option are real: `fiberapp run --config` parses."""
    from fiberapp.cli import cli

    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output
    # and the example config passes the command the runbook tells operators to run
    result = CliRunner().invoke(cli, ["check-config", str(TOML)], env={"FIBERAPP_API_TOKEN": None})
    assert result.exit_code == 0 and "ok" in result.output, result.output


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_file_verifies(tmp_path):
    # verify insists the binary exists: point ExecStart at this checkout's fiberapp.
    exe = Path(sys.executable).with_name("fiberapp")
    if not exe.exists():
        pytest.skip("no fiberapp entry point in this environment")
    unit = tmp_path / "fiberapp.service"
    unit.write_text(UNIT.read_text().replace("/opt/fiberapp/.venv/bin/fiberapp", str(exe)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "fiberapp.service" in line and "Failed to" not in line or "nknown" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_example_config_loads_with_every_section_valid():
    from fiberapp import config
    from fiberapp.db.pg import PgPool
    from fiberapp.db.redis import RedisClient

    cfg = config.load(str(TOML), env={})
    assert cfg.wal_mode == "fsync" and cfg.log_format == "json"
    assert cfg.listen_address[0] == "127.0.0.1"  # behind nginx: loopback, so no token needed here
    assert cfg.http["idle_timeout"] == 75.0 and cfg.http["max_connections"] == 30000
    # The [pg] and [redis] tables pass their own validators (no connection is opened).
    assert PgPool.from_config(cfg.pg, runtime=None).max_size == 10
    assert RedisClient.from_config(cfg.redis, runtime=None).max_connections == 50
    # Every key the issue lists is present in the example (so it documents them all).
    text = TOML.read_text()
    for key in ("listen", "data_dir", "wal_mode", "api_token", "log_level", "log_format", "log_file",
                "console_socket", "scripts", "session_ttl", "allow_insecure", "checkpoint_interval",
                "checkpoint_count", "checkpoint_wal_threshold", "wal_max_size", "max_header_size",
                "max_body_size", "header_timeout", "idle_timeout", "max_connections", "dsn", "min_size",
                "max_size", "statement_timeout", "connect_timeout", "max_wait", "url", "socket_timeout"):
        assert re.search(rf"^#? ?{key}\b", text, re.M), key
    # Below the unit's LimitNOFILE, with room for PostgreSQL, Redis, WAL and logs.
    assert cfg.http["max_connections"] + 10 + 50 + 100 < 65536


def test_nginx_config_keeps_upstream_connections_alive_and_waits_out_long_polls():
    text = NGINX.read_text()
    upstream = re.search(r"upstream fiberapp \{(.*?)\}", text, re.S).group(1)
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text
    # nginx's idle upstream timeout must be below fiberapp's, or it reuses closed sockets.
    import tomllib

    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    assert nginx_idle < tomllib.loads(TOML.read_text())["http"]["idle_timeout"]
    # The offer long-poll's read timeout exceeds the longest poll the taxi app allows.
    from deploy.taxi.settings import Settings

    poll = re.search(r"location ~ \^/taxi/drivers/\[\^/\]\+/offer\$ \{(.*?)\}", text, re.S).group(1)
    assert int(re.search(r"proxy_read_timeout (\d+)s;", poll).group(1)) > Settings().max_poll
    assert "proxy_buffering off;" in poll


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx not installed")
def test_nginx_config_passes_nginx_t(tmp_path):
    main = tmp_path / "nginx.conf"
    temp = "".join(f" {k}_temp_path {tmp_path};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main.write_text(f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{ access_log off;{temp} include {NGINX}; }}\n")
    proc = subprocess.run(["nginx", "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60)
    if proc.returncode and "Permission denied" in proc.stderr:
        pytest.skip("nginx -t needs privileges here: " + proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr


def test_logrotate_reloads_instead_of_copytruncate():
    text = LOGROTATE.read_text()
    assert "copytruncate" not in re.sub(r"#.*", "", text)
    post = re.search(r"postrotate(.*?)endscript", text, re.S).group(1)
    assert "systemctl reload fiberapp" in post
    assert re.search(r"^\s*sharedscripts\s*$", text, re.M)  # one reload per rotation, not per file
    assert re.search(r"^/var/log/fiberapp/", text, re.M)


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate not installed")
def test_logrotate_config_parses(tmp_path):
    # logrotate checks that the `create` owner exists: use the current user for the check.
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    conf = tmp_path / "fiberapp"
    conf.write_text(LOGROTATE.read_text().replace("fiberapp fiberapp", f"{user} {group}"))
    proc = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "error" not in out.lower(), out
    assert "Handling 1 logs" in out
