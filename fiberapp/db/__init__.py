"""Non-blocking PostgreSQL and Redis wrappers (TCP helpers live in fiberapp.net).

Reading order: errors (the typed errors every wrapper raises), settings (config
validation), pg (the PostgreSQL pool), pg_queries (the query helpers), pg_transaction
(transactions and their retry), pg_listen (LISTEN in a supervised fiber), redis (the
Redis client and pub/sub), supervise (the subscriber base both run under
Runtime.supervise).

Importing this package imports neither psycopg nor redis: fiberapp.db.pg and
fiberapp.db.redis do, and must be imported after fiberapp.runtime.patch.patch_all().
"""
