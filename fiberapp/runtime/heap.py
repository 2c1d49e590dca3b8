"""The cyclic collector's policy for a long-running server.

A full collection walks every tracked object while the loop waits: with a million tasks
recovered at start that is about half a second, whenever CPython decides to run one.
Objects that exist once start-up is over (the recovered store, imported modules) mostly
live as long as the process, so ``freeze_startup()`` moves them to the permanent
generation (``gc.freeze``) and later collections never walk them again. They are still
freed by reference counting when they die (the store leaves no cycles behind a finished
task); only a cycle made purely of frozen objects would stay, which is the price CPython
documents for freezing.
"""
import gc


def freeze_startup():
    """Freeze every object alive now; returns how many objects are frozen in all."""
    gc.freeze()
    return gc.get_freeze_count()


def frozen():
    """How many objects sit in the permanent generation (for stats and tests)."""
    return gc.get_freeze_count()
