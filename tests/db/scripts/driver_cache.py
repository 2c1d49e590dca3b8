# driver_cache.py -- fiberapp run driver_cache.py   (needs [pg] and [redis])
import json

from fiberapp.db.errors import DbUnavailable
from fiberapp.http.errors import NotFound

TTL = 30


def init(app):
    @app.route("GET", "/drivers/{id}")
    def driver(request):
        driver_id = int(request.params["id"])
        key = f"driver:{driver_id}"
        try:
            cached = app.redis.get(key)
        except DbUnavailable:
            cached = None                     # Redis down: serve from PostgreSQL
        if cached is not None:
            return dict(json.loads(cached), cached=True)
        # numeric comes back as Decimal, which JSON cannot carry: ask for a float
        row = app.pg.fetch_one("SELECT id, name, rating::float8 AS rating FROM drivers WHERE id = %s",
                               (driver_id,))
        if row is None:
            raise NotFound("no such driver")
        app.redis.set(key, json.dumps(row), ex=TTL)
        return dict(row, cached=False)

    def invalidate(notification):             # NOTIFY driver_changed, '<id>'
        app.redis.delete(f"driver:{notification.payload}")

    listener = app.pg.listen("driver_changed", callback=invalidate)
    app.on_shutdown(listener.stop)
