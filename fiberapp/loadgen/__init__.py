"""The taxi load generator behind ``fiberapp bench taxi``.

histogram -- mergeable log-bucket latency histogram (percentiles)
client    -- a small keep-alive HTTP/1.1 client on gevent sockets, httptools parsing
results   -- per-endpoint counters, errors by kind, orders, merge and report
config    -- TaxiConfig (the options) and the rush-hour rate curve
taxi      -- the simulation: drivers, clients, rush-hour order arrivals
worker    -- the entry point of one worker process when connections are spread
cli       -- the click group ``bench`` with the ``taxi`` command

No module here monkey-patches: the process entry (the fiberapp CLI, or the worker's
main) does that first. Sockets are gevent's own, so the hot path works either way.
"""
