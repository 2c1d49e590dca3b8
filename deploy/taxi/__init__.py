"""The taxi-dispatch reference backend: plain, synchronous building blocks.

geo     -- grid index of driver positions, nearest free drivers
orders  -- the order state machine and its event records
errors  -- TaxiError and its typed subclasses
schema.sql -- PostgreSQL tables for orders and their history

Nothing here does I/O or reads a clock: time is passed in, so the fiber script that
assembles the backend decides where time comes from and tests never sleep.
"""
