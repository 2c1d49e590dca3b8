"""Task states and the transition table.

    put ──> READY ──take──> TAKEN ──ack──> DONE
    put(delay) ──> DELAYED ──(delay lapses | kick_task)──> READY
    TAKEN ──release | ttr lapses | session ends──> READY (or DELAYED with a delay)
    READY | TAKEN | DELAYED ──bury──> BURIED ──kick | kick_task──> READY
    any live state ──delete──> DONE;  READY | BURIED ──ttl lapses──> DONE
    a failed attempt past max_attempts ──> BURIED, or READY in the dead-letter tube

DONE tasks are not kept: they are removed and only counted (statistics' ``done``), so an
operation on one raises NoSuchTask.
"""
READY = "ready"
TAKEN = "taken"
DONE = "done"
BURIED = "buried"
DELAYED = "delayed"

LIVE = (READY, TAKEN, DELAYED, BURIED)
ALL = LIVE + (DONE,)

# Short codes as tarantool/queue shows them (r t - ! ~); for display only.
SHORT = {READY: "r", TAKEN: "t", DONE: "-", BURIED: "!", DELAYED: "~"}

# (operation, state) -> the state the task ends in. A pair that is missing is refused with
# WrongState naming both. ``release`` may also end in DELAYED (with a delay), BURIED or the
# dead-letter tube (max_attempts), and DONE (its ttl passed while it was taken).
TRANSITIONS = {
    ("ack", TAKEN): DONE,
    ("release", TAKEN): READY,
    ("touch", TAKEN): TAKEN,
    ("bury", READY): BURIED,
    ("bury", TAKEN): BURIED,
    ("bury", DELAYED): BURIED,
    ("kick_task", BURIED): READY,
    ("kick_task", DELAYED): READY,
    ("delete", READY): DONE,
    ("delete", TAKEN): DONE,
    ("delete", DELAYED): DONE,
    ("delete", BURIED): DONE,
    ("peek", READY): READY,
    ("peek", TAKEN): TAKEN,
    ("peek", DELAYED): DELAYED,
    ("peek", BURIED): BURIED,
}

OPERATIONS = ("ack", "release", "touch", "bury", "kick_task", "delete", "peek")


def allowed(operation, state):
    return (operation, state) in TRANSITIONS
