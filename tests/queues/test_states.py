"""Table test: every (operation, state) pair, against queues.states.TRANSITIONS."""
import pytest

from queues import errors
from queues.states import BURIED, DELAYED, DONE, OPERATIONS, READY, TAKEN, TRANSITIONS

STATES = (READY, TAKEN, DELAYED, BURIED, DONE)


def task_in(tube, state):
    """A task of the tube in ``state`` (DONE: acked, so it no longer exists)."""
    if state == DELAYED:
        return tube.put("x", delay=10)
    task = tube.put("x")
    if state == READY:
        return task
    tube.take(timeout=0)
    if state == TAKEN:
        return task
    if state == BURIED:
        tube.bury(task.id)
        return task
    tube.ack(task.id)
    return task


def run(tube, operation, task_id):
    if operation == "ack":
        return tube.ack(task_id)
    if operation == "release":
        return tube.release(task_id)
    if operation == "touch":
        return tube.touch(task_id, 5)
    if operation == "bury":
        return tube.bury(task_id)
    if operation == "kick_task":
        return tube.kick_task(task_id)
    if operation == "delete":
        return tube.delete(task_id)
    if operation == "peek":
        return tube.peek(task_id)
    raise AssertionError(operation)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_in_state(store, operation, state):
    tube = store.create_tube("t", "fifottl", ttr=30)
    task = task_in(tube, state)
    before = tube.statistics()["tasks"]
    expected = TRANSITIONS.get((operation, state))
    if state == DONE:
        with pytest.raises(errors.NoSuchTask) as exc:
            run(tube, operation, task.id)
        assert exc.value.task_id == task.id
    elif expected is None:
        with pytest.raises(errors.WrongState) as exc:
            run(tube, operation, task.id)
        assert exc.value.operation == operation and exc.value.state == state
        assert operation in str(exc.value) and state in str(exc.value)
        assert tube.statistics()["tasks"] == before, "a refused operation changes nothing"
    else:
        result = run(tube, operation, task.id)
        assert result.state == expected
        if expected == DONE:
            with pytest.raises(errors.NoSuchTask):
                tube.peek(task.id)
        else:
            assert tube.peek(task.id).state == expected
