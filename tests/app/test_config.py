"""Config: file < environment < CLI flags, and every kind of error reported at once."""
import pytest

from fiberapp.config import ConfigError, load, parse_listen


def write(tmp_path, text, name="fiberapp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_file_or_env():
    cfg = load(None, env={})
    assert cfg.listen == "127.0.0.1:8080"
    assert cfg.data_dir == "./var"
    assert cfg.wal_mode == "write"
    assert cfg.log_format == "plain"
    assert cfg.scripts == []
    assert cfg.session_ttl == 60.0
    assert cfg.http["max_header_size"] > 0
    assert cfg.pg is None and cfg.redis is None
    assert cfg.sources["listen"] == "default"


def test_precedence_file_then_env_then_cli(tmp_path):
    path = write(tmp_path, 'listen = "127.0.0.1:9001"\nwal_mode = "fsync"\nlog_level = "DEBUG"\n')
    env = {"FIBERAPP_LISTEN": "127.0.0.1:9002", "FIBERAPP_WAL_MODE": "none"}
    cfg = load(path, env=env, overrides={"listen": "127.0.0.1:9003"})
    assert cfg.listen == "127.0.0.1:9003" and cfg.sources["listen"] == "cli"
    assert cfg.wal_mode == "none" and cfg.sources["wal_mode"] == "env"
    assert cfg.log_level == "DEBUG" and cfg.sources["log_level"] == "file"


def test_env_values_are_converted(tmp_path):
    env = {"FIBERAPP_SESSION_TTL": "2.5", "FIBERAPP_ALLOW_INSECURE": "yes",
           "FIBERAPP_SCRIPTS": "a.py, b.py", "FIBERAPP_MAX_TASK_SIZE": "2048"}
    cfg = load(None, env=env)
    assert cfg.session_ttl == 2.5
    assert cfg.allow_insecure is True
    assert cfg.scripts == ["a.py", "b.py"]
    assert cfg.max_task_size == 2048


def test_every_error_reported_at_once(tmp_path):
    path = write(tmp_path, "\n".join([
        'listen = "nohostport"',
        'wal_mode = "sometimes"',
        'session_ttl = "long"',
        'lisen = "127.0.0.1:1"',
        "[http]",
        "max_body_size = -1",
        "bogus = 1",
    ]))
    with pytest.raises(ConfigError) as info:
        load(path, env={"FIBERAPP_LOG_FORMAT": "xml"})
    keys = [key for key, _ in info.value.problems]
    assert sorted(keys) == sorted(["listen", "wal_mode", "session_ttl", "lisen",
                                   "http.max_body_size", "http.bogus", "FIBERAPP_LOG_FORMAT"])
    text = str(info.value)
    assert "unknown key" in text and "must be one of none, write, fsync" in text


def test_toml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "listen = \n")
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert path in str(info.value) and "not valid TOML" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load(str(tmp_path / "nope.toml"), env={})


def test_types_from_file_are_strict(tmp_path):
    # In a TOML file a quoted number is a string: say so rather than guess.
    path = write(tmp_path, 'checkpoint_count = "2"\nallow_insecure = "true"\n')
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert {k for k, _ in info.value.problems} == {"checkpoint_count", "allow_insecure"}


def test_non_loopback_without_token_is_refused():
    with pytest.raises(ConfigError, match="api_token"):
        load(None, env={}, overrides={"listen": "0.0.0.0:8080"})
    assert load(None, env={"FIBERAPP_API_TOKEN": "s3cret"}, overrides={"listen": "0.0.0.0:8080"}).api_token
    assert load(None, env={"FIBERAPP_ALLOW_INSECURE": "true"}, overrides={"listen": "0.0.0.0:8080"})


def test_pg_and_redis_tables_pass_through(tmp_path):
    path = write(tmp_path, '[pg]\ndsn = "dbname=test"\n[pg.reports]\ndsn = "dbname=reports"\n'
                           '[redis]\nurl = "redis://127.0.0.1:6379/0"\n')
    cfg = load(path, env={})
    assert cfg.pg["dsn"] == "dbname=test" and cfg.pg["reports"]["dsn"] == "dbname=reports"
    assert cfg.redis["url"].startswith("redis://")


def test_secrets_are_masked_in_as_dict():
    cfg = load(None, env={"FIBERAPP_API_TOKEN": "s3cret"})
    assert cfg.as_dict()["api_token"] == "***"


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:0", ("::1", 0)),
    ("localhost:1", ("localhost", 1)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":80", "host:http", "host:70000"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError):
        parse_listen(text)
