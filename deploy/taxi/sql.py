"""The SQL the taxi backend runs, next to the schema it runs against.

The history writer batches: for each batch it upserts the touched orders first (so
the events' foreign key holds), then inserts the events, in one transaction, one
statement each (UPSERT_ORDERS and history.INSERT_EVENTS_WITH_ID take column arrays). Rows come
from Order.to_row() and OrderEvent; timestamps are epoch seconds, converted by
to_timestamp() in SQL so callers pass plain floats.
"""
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("schema.sql")

UPSERT_ORDER = """
INSERT INTO taxi_orders (id, client, from_lat, from_lon, to_lat, to_lon, state, driver, reason,
                         created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s))
ON CONFLICT (id) DO UPDATE
   SET state = EXCLUDED.state, driver = EXCLUDED.driver, reason = EXCLUDED.reason,
       updated_at = EXCLUDED.updated_at
 WHERE taxi_orders.updated_at <= EXCLUDED.updated_at
"""

# The history writer's batch form of UPSERT_ORDER: one statement for the whole batch,
# each column passed as one array (unnest). executemany sent a statement per row, and at
# ~20 rows a batch psycopg's per-row work was most of the writer's CPU.
UPSERT_ORDERS = """
INSERT INTO taxi_orders (id, client, from_lat, from_lon, to_lat, to_lon, state, driver, reason,
                         created_at, updated_at)
SELECT id, client, from_lat, from_lon, to_lat, to_lon, state, driver, reason,
       to_timestamp(created_at), to_timestamp(updated_at)
  FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[],
              %s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[])
       AS t(id, client, from_lat, from_lon, to_lat, to_lon, state, driver, reason, created_at, updated_at)
ON CONFLICT (id) DO UPDATE
   SET state = EXCLUDED.state, driver = EXCLUDED.driver, reason = EXCLUDED.reason,
       updated_at = EXCLUDED.updated_at
 WHERE taxi_orders.updated_at <= EXCLUDED.updated_at
"""

INSERT_EVENT = """
INSERT INTO taxi_order_events (order_id, from_state, to_state, at, driver, reason)
VALUES (%s, %s, %s, to_timestamp(%s), %s, %s)
"""

# Recovery at start: every open order, oldest first (taxi_orders_open_idx).
OPEN_ORDERS = """
SELECT id, client, from_lat, from_lon, to_lat, to_lon, state, driver, reason,
       extract(epoch FROM created_at), extract(epoch FROM updated_at)
  FROM taxi_orders
 WHERE state IN ('created', 'offered', 'accepted', 'arriving')
 ORDER BY created_at
"""

# A driver's current ride, if any (taxi_orders_driver_idx).
DRIVER_CURRENT = """
SELECT id, state FROM taxi_orders
 WHERE driver = %s AND state IN ('offered', 'accepted', 'arriving')
 ORDER BY created_at DESC LIMIT 1
"""

ORDER_HISTORY = """
SELECT from_state, to_state, extract(epoch FROM at), driver, reason
  FROM taxi_order_events WHERE order_id = %s ORDER BY id
"""

MAX_ORDER_ID = "SELECT coalesce(max(id), 0) FROM taxi_orders"


def schema_sql():
    return SCHEMA_PATH.read_text()


def apply_schema(conn):
    """Create the tables and indexes if missing (idempotent). ``conn`` is a psycopg
    connection (or anything with ``execute``); the caller commits."""
    conn.execute(schema_sql())
