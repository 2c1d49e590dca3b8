"""Config validation: every wrong value is a DbConfigError naming its key. No server needed."""
import psycopg.conninfo
import pytest

from fiberapp.db.errors import DbConfigError, DbError
from fiberapp.db.pg import PgPool
from fiberapp.db.redis import RedisClient
from fiberapp.runtime.errors import FiberappError

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize(
    "section, key",
    [
        ({}, "pg.dsn"),
        ({"dsn": ""}, "pg.dsn"),
        ({"dsn": 5}, "pg.dsn"),
        ({"dsn": "host=x port"}, "pg.dsn"),
        ({"dsn": DSN, "max_size": 0}, "pg.max_size"),
        ({"dsn": DSN, "max_size": "10"}, "pg.max_size"),
        ({"dsn": DSN, "max_size": True}, "pg.max_size"),
        ({"dsn": DSN, "min_size": 5, "max_size": 2}, "pg.max_size"),
        ({"dsn": DSN, "min_size": -1}, "pg.min_size"),
        ({"dsn": DSN, "statement_timeout": -1}, "pg.statement_timeout"),
        ({"dsn": DSN, "statement_timeout": "5s"}, "pg.statement_timeout"),
        ({"dsn": DSN, "connect_timeout": 0}, "pg.connect_timeout"),
        ({"dsn": DSN, "max_wait": float("nan")}, "pg.max_wait"),
        ({"dsn": DSN, "max_wiat": 1}, "pg.max_wiat"),
    ],
)
def test_bad_pg_config_names_the_key(section, key):
    with pytest.raises(DbConfigError) as info:
        PgPool.from_config(section, runtime=None)
    assert info.value.key == key
    assert key in str(info.value)
    assert isinstance(info.value, DbError) and isinstance(info.value, FiberappError)


def test_named_pool_errors_name_the_sub_table():
    with pytest.raises(DbConfigError) as info:
        PgPool.pools_from_config({"dsn": DSN, "reports": {"max_size": -3}}, runtime=None)
    assert info.value.key == "pg.reports.max_size"


def test_pg_config_goes_into_the_startup_packet():
    pool = PgPool.from_config(
        {"dsn": DSN + "?options=-c%20work_mem%3D8MB", "statement_timeout": 1.5, "connect_timeout": 2.2,
         "application_name": "svc"},
        runtime=None,
    )
    params = psycopg.conninfo.conninfo_to_dict(pool.conninfo)
    # the user's own options survive; the timeout is added, in milliseconds
    assert params["options"] == "-c work_mem=8MB -c statement_timeout=1500"
    assert params["connect_timeout"] == "3"  # libpq counts whole seconds: rounded up
    assert params["application_name"] == "svc"
    assert not pool.is_open and pool.health()["status"] == "degraded"


def test_zero_statement_timeout_means_none():
    pool = PgPool.from_config({"dsn": DSN, "statement_timeout": 0}, runtime=None)
    assert "statement_timeout" not in psycopg.conninfo.conninfo_to_dict(pool.conninfo).get("options", "")


def test_named_pools_inherit_the_parent_keys():
    pools = PgPool.pools_from_config(
        {"dsn": DSN, "max_size": 7, "reports": {"max_size": 2}, "audit": {"dsn": DSN + "?sslmode=disable"}},
        runtime=None,
    )
    assert sorted(pools) == ["audit", "default", "reports"]
    assert (pools["default"].max_size, pools["reports"].max_size, pools["audit"].max_size) == (7, 2, 7)
    assert pools["reports"].application_name == "fiberapp:reports"
    assert "sslmode=disable" in pools["audit"].conninfo


@pytest.mark.parametrize(
    "section, key",
    [
        ({"url": "http://nope"}, "redis.url"),
        ({"url": ""}, "redis.url"),
        ({"max_connections": 0}, "redis.max_connections"),
        ({"socket_timeout": -2}, "redis.socket_timeout"),
        ({"retries": -1}, "redis.retries"),
        ({"max_wait": 0}, "redis.max_wait"),
        ({"sockettimeout": 1}, "redis.sockettimeout"),
        ({"decode_responses": "yes"}, "redis.decode_responses"),
    ],
)
def test_bad_redis_config_names_the_key(section, key):
    with pytest.raises(DbConfigError) as info:
        RedisClient.from_config(section, runtime=None)
    assert info.value.key == key


def test_redis_defaults_and_zero_socket_timeout():
    client = RedisClient.from_config({"socket_timeout": 0}, runtime=None)
    assert client.socket_timeout is None  # 0 = no timeout
    assert client.max_connections == 50 and client.retries == 1
    assert client.health()["status"] == "degraded"  # not open yet
