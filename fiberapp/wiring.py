"""How the App builds each part from the config: the HTTP server and API, the queue store with
its persistence, the database clients, the console. Kept apart from app.py so the lifecycle
reads on one screen and each builder can be read (and replaced in tests) on its own."""
import logging

log = logging.getLogger("fiberapp")


def build_http(app):
    """The router with the whole API installed, and the HTTP server. The API reads the store
    at request time, so the server can listen (and /health answer 503 with the recovery
    progress) while the store is still recovering."""
    from fiberapp import api
    from fiberapp.http.config import HTTPConfig
    from fiberapp.http.router import Router
    from fiberapp.http.server import HTTPServer

    cfg = app.config
    router = Router()
    map_errors(router)
    app.api = api.install(router, app=app, runtime=app.runtime, clock=app.clock,
                          health=app.health)
    host, port = cfg.listen_address
    server = HTTPServer(router, host, port, config=HTTPConfig.from_mapping(cfg.http),
                        clock=app.clock, registry=app.registry)
    # Connections are pool greenlets, not named runtime fibers: a Fiber costs ~1.2 KiB
    # more per idle connection, which would break the 12 KiB budget (bench/http.py).
    return router, server


def open_store(app):
    """Lock the data directory and recover the queue store from it (snapshot + WAL);
    returns (store, persistence). With wal_mode = none the store lives in memory only
    and persistence is None."""
    from queues.persist import open_store as open_persistent

    cfg = app.config
    return open_persistent(
        cfg.data_dir, clock=app.clock, runtime=app.runtime, wal_mode=cfg.wal_mode,
        max_task_size=cfg.max_task_size, wal_max_size=cfg.wal_max_size,
        checkpoint_interval=cfg.checkpoint_interval, checkpoint_count=cfg.checkpoint_count,
        checkpoint_wal_threshold=cfg.checkpoint_wal_threshold, force_recovery=cfg.force_recovery,
        # /health reads the recovery progress while open_store() is still replaying
        on_persistence=lambda persistence: setattr(app, "persistence", persistence))


def open_databases(app):
    """PostgreSQL pools ([pg], and named ones as [pg.NAME] sub-tables) and Redis ([redis]),
    opened only when configured. Returns (default pg pool or None, {name: pool}, redis or None)."""
    cfg = app.config
    pgs, redis = {}, None
    if cfg.pg is not None:
        from fiberapp.db.pg import PgPool

        pgs = PgPool.pools_from_config(cfg.pg, app.runtime)  # [pg.NAME] inherits [pg]'s keys
        for pool in pgs.values():
            pool.open()
    if cfg.redis is not None:
        from fiberapp.db.redis import RedisClient

        redis = RedisClient.from_config(cfg.redis, app.runtime)
        redis.open()
    return pgs.get("default"), pgs, redis


def map_errors(router):
    """Statuses for what a script's handler may let escape: the queue store's typed errors
    (each carries its code and status) and the database wrappers' (the database being
    away is the server's trouble, not the client's: 503, never 500)."""
    from fiberapp.db import errors as db
    from queues.errors import all_errors

    for cls in all_errors():
        router.errors.register(cls, cls.http_status, cls.code)
    for cls, status in ((db.DbUnavailable, 503), (db.DbClosed, 503), (db.PoolExhausted, 503),
                        (db.QueryTimeout, 504), (db.TransactionConflict, 409)):
        router.errors.register(cls, status)


def start_console(app):
    from fiberapp.console import ConsoleServer

    console = ConsoleServer(app, app.config.console_path)
    console.start()
    return console
