"""The taxi-dispatch reference backend, as a fiberapp fiber script.

    .venv/bin/fiberapp run deploy/taxi/app.py --config deploy/taxi/fiberapp.toml

init(app) builds the TaxiService on the app's queue store, PostgreSQL pool and clock,
registers the HTTP routes (handlers.py) and starts five supervised fibers:

    taxi.dispatcher   orders needing a driver -> offers          (dispatch.py)
    taxi.desk         presents each driver's next offer (utube)  (dispatch.py)
    taxi.expiry       lapsed offers -> expire -> dispatch again  (dispatch.py)
    taxi.history      events -> PostgreSQL in batches            (history.py)
    taxi.janitor      offline drivers, long-finished orders      (service.py)

PostgreSQL must answer at start (the schema is applied, id counters are seeded and open
orders are brought back from it); later outages only delay the history. Settings come
from TAXI_* environment variables (settings.py). On a graceful stop the dispatch fibers
are stopped first, then the history gets a few seconds to reach PostgreSQL; whatever is
left stays in the durable tube for the next start.
"""
from deploy.taxi import handlers
from deploy.taxi.service import TaxiService
from deploy.taxi.settings import Settings, TaxiConfigError

FLUSH_ON_STOP = 5.0


def init(app):
    settings = Settings.from_env()
    if app.pg is None:
        raise TaxiConfigError("the taxi app needs PostgreSQL: add a [pg] table with a dsn to the config")
    service = TaxiService(app.store, app.pg, app.clock, settings, log=app.log)
    restored = service.start_up()
    handlers.register(app.route, service)
    dispatch = [
        app.supervise(service.dispatcher.run_dispatcher, name="taxi.dispatcher"),
        app.supervise(service.dispatcher.run_desk, name="taxi.desk"),
        app.supervise(service.dispatcher.run_expiry, name="taxi.expiry"),
        app.supervise(service.run_janitor, name="taxi.janitor"),
    ]
    app.supervise(service.history.run, name="taxi.history")

    @app.on_shutdown
    def stop_dispatch_then_flush():
        for sup in dispatch:
            sup.cancel()
        if not service.history.flush(FLUSH_ON_STOP):
            app.log.warning("taxi: %d history event(s) stay queued for the next start",
                            service.history.pending())

    app.log.info("taxi: ready (%d open order(s) restored, next order id %d)",
                 restored, service.book.next_id)
    return service
