"""The README's example fiber script, run by the real server (`fiberapp run`) against the
real PostgreSQL and Redis: read through a Redis cache, invalidated by NOTIFY."""
import os

import psycopg
import pytest
import redis as redis_py

from tests.db.conftest import wait_for
from tests.e2e.server import Server

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "driver_cache.py")


def test_readme_example_is_the_tested_script():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.rst")).read()
    body = open(SCRIPT).read().strip().splitlines()
    indented = "\n".join(("    " + line) if line else "" for line in body)
    assert indented in readme


@pytest.fixture
def schema(pg_dsn, app_name):
    """A private schema holding a `drivers` table, so the test cannot collide with others."""
    name = app_name.replace("-", "_")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"CREATE TABLE {name}.drivers (id int PRIMARY KEY, name text, rating numeric)")
        conn.execute(f"INSERT INTO {name}.drivers VALUES (7, 'Ada', 4.9)")
        yield name
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def test_example_script_reads_through_the_cache(tmp_path, pg_dsn, redis_url, schema):
    # The server's pool sees only the private schema (search_path in the startup packet).
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, options=f"-c search_path={schema}")
    config = tmp_path / "fiberapp.toml"
    config.write_text(f'[pg]\ndsn = "{dsn}"\nmax_size = 4\n\n[redis]\nurl = "{redis_url}"\n')
    raw = redis_py.Redis.from_url(redis_url)
    raw.delete("driver:7")
    server = Server(tmp_path, SCRIPT, config=config)
    server.start()
    try:
        assert server.request("GET", "/drivers/7") == (200, {"id": 7, "name": "Ada", "rating": 4.9, "cached": False})
        assert raw.get("driver:7") is not None
        assert server.request("GET", "/drivers/7")[1]["cached"] is True
        assert server.request("GET", "/drivers/8")[0] == 404

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE drivers SET name = 'Grace' WHERE id = 7")
            conn.execute("SELECT pg_notify('driver_changed', '7')")
        wait_for(lambda: raw.get("driver:7") is None, what="the NOTIFY to invalidate the cache")
        status, body = server.request("GET", "/drivers/7")
        assert (status, body["name"], body["cached"]) == (200, "Grace", False)

        status, health = server.request("GET", "/health")
        assert status == 200
    except AssertionError:
        print(server.log())  # shown by pytest on failure
        raise
    finally:
        assert server.stop() == 0
        raw.delete("driver:7")
        raw.close()
