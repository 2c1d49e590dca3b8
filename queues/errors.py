"""Typed errors of the queue store. One root, QueueError; nothing here is a control-flow signal.

Every class carries:
- ``code``: a stable snake_case name (the HTTP API puts it in error bodies; clients switch on it);
- ``http_status``: the status the HTTP API should answer with. The api owns the final table, but
  keeping the hint next to the class means a new error cannot be added without deciding it.
Messages name the thing concerned (tube, task id, operation, state, option) so a log line is
enough to understand what was refused.

queues.persist defines its own subclasses (WalError ...) under the same root.
"""


class QueueError(Exception):
    code = "queue_error"
    http_status = 500


class InvalidName(QueueError):
    """A tube (or session) name is empty, too long or has characters outside [A-Za-z0-9_.-]."""

    code = "invalid_name"
    http_status = 400


class InvalidOption(QueueError):
    """An unknown option, a wrong type or an out-of-range value; the message names the option."""

    code = "invalid_option"
    http_status = 400

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


class InvalidData(QueueError):
    """Task data that is neither bytes nor JSON-serialisable."""

    code = "invalid_data"
    http_status = 400


class TaskTooLarge(QueueError):
    code = "task_too_large"
    http_status = 413


class UnknownDriver(QueueError):
    code = "unknown_driver"
    http_status = 400


class DriverError(QueueError):
    """A driver class does not implement the driver interface (raised at registration)."""

    code = "driver_error"
    http_status = 500


class NoSuchTube(QueueError):
    code = "no_such_tube"
    http_status = 404

    def __init__(self, name):
        super().__init__(f"tube {name!r} does not exist")
        self.tube = name


class TubeExists(QueueError):
    code = "tube_exists"
    http_status = 409

    def __init__(self, name):
        super().__init__(f"tube {name!r} already exists")
        self.tube = name


class TubeBusy(QueueError):
    """drop_tube refused: consumers are waiting on the tube or tasks of it are taken."""

    code = "tube_busy"
    http_status = 409


class TubeFull(QueueError):
    """A put on a tube at its capacity did not get room before its timeout (back-pressure)."""

    code = "tube_full"
    http_status = 503


class Draining(QueueError):
    """The store is in drain mode: puts are refused, takes are served."""

    code = "draining"
    http_status = 503


class NoSuchTask(QueueError):
    code = "no_such_task"
    http_status = 404

    def __init__(self, task_id, tube=None):
        where = f" in tube {tube!r}" if tube is not None else ""
        super().__init__(f"task {task_id} not found{where}")
        self.task_id = task_id
        self.tube = tube


class WrongState(QueueError):
    """The operation is not allowed in the task's current state (see queues.states.ALLOWED)."""

    code = "wrong_state"
    http_status = 409

    def __init__(self, operation, task_id, state):
        super().__init__(f"cannot {operation} task {task_id}: it is {state}")
        self.operation = operation
        self.task_id = task_id
        self.state = state


class NotOwner(QueueError):
    """ack/release/touch of a task taken by another session."""

    code = "not_owner"
    http_status = 409

    def __init__(self, operation, task_id, session, owner):
        super().__init__(
            f"cannot {operation} task {task_id}: it was taken by session {owner!r}, not {session!r}"
        )
        self.operation = operation
        self.task_id = task_id
        self.session = session
        self.owner = owner


class Unsupported(QueueError):
    """The tube's driver does not support the operation or option (e.g. touch on a fifo tube)."""

    code = "unsupported"
    http_status = 400


class NoSuchSession(QueueError):
    code = "no_such_session"
    http_status = 404

    def __init__(self, name):
        super().__init__(f"session {name!r} does not exist")
        self.session = name


class StoreStopped(QueueError):
    code = "store_stopped"
    http_status = 503


class ReplayError(QueueError):
    """apply() got an operation that does not fit the state (a damaged or misordered log)."""

    code = "replay_error"
    http_status = 500


def all_errors():
    """Every QueueError subclass defined here (the api builds its status table from it)."""
    out, todo = [], [QueueError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out
