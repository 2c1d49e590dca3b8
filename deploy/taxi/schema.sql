-- Taxi-dispatch reference backend: orders and their history.
-- Applied at every start (deploy/taxi/sql.py:apply_schema); every statement is
-- idempotent, so running it twice changes nothing. Timestamps are wall-clock.

CREATE TABLE IF NOT EXISTS taxi_orders (
    id          bigint           PRIMARY KEY,          -- assigned by the app (OrderBook)
    client      text             NOT NULL,
    from_lat    double precision NOT NULL CHECK (from_lat BETWEEN -90 AND 90),
    from_lon    double precision NOT NULL CHECK (from_lon BETWEEN -180 AND 180),
    to_lat      double precision NOT NULL CHECK (to_lat BETWEEN -90 AND 90),
    to_lon      double precision NOT NULL CHECK (to_lon BETWEEN -180 AND 180),
    state       text             NOT NULL CHECK (state IN
                    ('created', 'offered', 'accepted', 'arriving', 'completed', 'cancelled')),
    driver      text,                                  -- offered-to, then assigned driver
    reason      text,                                  -- why it was cancelled
    created_at  timestamptz      NOT NULL,
    updated_at  timestamptz      NOT NULL
);

-- Recovery at start and the dispatcher's sweeps read only the open orders, oldest
-- first; a partial index keeps that small however long the history grows.
CREATE INDEX IF NOT EXISTS taxi_orders_open_idx
    ON taxi_orders (state, created_at)
    WHERE state IN ('created', 'offered', 'accepted', 'arriving');

-- "What is this driver doing / did this driver do": current ride and ride history.
CREATE INDEX IF NOT EXISTS taxi_orders_driver_idx
    ON taxi_orders (driver, created_at DESC)
    WHERE driver IS NOT NULL;

-- A client's orders, newest first.
CREATE INDEX IF NOT EXISTS taxi_orders_client_idx
    ON taxi_orders (client, created_at DESC);

-- One row per transition (deploy/taxi/orders.py:OrderEvent), append-only.
CREATE TABLE IF NOT EXISTS taxi_order_events (
    id          bigserial   PRIMARY KEY,
    order_id    bigint      NOT NULL REFERENCES taxi_orders (id) ON DELETE CASCADE,
    from_state  text,                                  -- NULL for the creation event
    to_state    text        NOT NULL,
    at          timestamptz NOT NULL,
    driver      text,
    reason      text
);

-- An order's history in order; also serves the foreign key's cascade.
CREATE INDEX IF NOT EXISTS taxi_order_events_order_idx
    ON taxi_order_events (order_id, id);

-- Time-range reports over an append-only table: BRIN is tiny and fits insertion order.
CREATE INDEX IF NOT EXISTS taxi_order_events_at_idx
    ON taxi_order_events USING brin (at);
