"""The cyclic collector's policy for a long-running server.

A full collection walks every tracked object while the loop waits: with a million tasks
recovered at start that is about half a second, whenever CPython decides to run one.
Objects that exist once start-up is over (the recovered store, imported modules) mostly
live as long as the process, so ``freeze_startup()`` moves them to the permanent
generation (``gc.freeze``) and later collections never walk them again. They are still
freed by reference counting when they die (the store leaves no cycles behind a finished
task); only a cycle made purely of frozen objects would stay, which is the price CPython
documents for freezing.

``set_young_threshold()`` raises the young generation's threshold from CPython's 700
(the server's ``gc_young_threshold``, default YOUNG_THRESHOLD; separate from the freeze).
A young collection runs when allocations of tracked objects outnumber deallocations by
the threshold. A server in a steady state frees about what it allocates, but the number
of objects held by requests in flight swings with their number: at 100 concurrent
seed-page requests the count never reached 700 (no collection in 30,000 requests), at
1,000 it did every ~170 requests, and the young collections, the middle ones they feed
and the full ones those feed cost 5.3 µs per request (gc.callbacks, native run), most of
the extra CPU a request took at 1,000 connections. With 10,000: one young collection per
~14,000 requests, 0.5 µs per request. Each one walks more objects (a few ms, once every
second or so at full load) but CPython's collector pauses the loop either way.
"""
import gc

YOUNG_THRESHOLD = 10_000  # CPython's default is 700


def freeze_startup():
    """Freeze every object alive now; returns how many objects are frozen in all."""
    gc.freeze()
    return gc.get_freeze_count()


def set_young_threshold(young_threshold=YOUNG_THRESHOLD):
    """Set the young generation's threshold (the older generations' stay); 0 leaves
    CPython's as it is."""
    if young_threshold:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)


def frozen():
    """How many objects sit in the permanent generation (for stats and tests)."""
    return gc.get_freeze_count()
