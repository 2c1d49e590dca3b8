"""TaskEncoder writes task answers as bytes; they must be exactly what orjson gives for
the task_json dict, for every state and every field a task can carry."""
import orjson
import pytest

from fiberapp.api.encode import _SHOWN, TEMPLATE_FIELDS, TaskEncoder, task_json
from fiberapp.runtime.clock import FakeClock
from queues.store import Store


def _reference(task, clock, prefix=b'{"task":', suffix=b"}"):
    return prefix + orjson.dumps(task_json(task, clock)) + suffix


@pytest.fixture
def world():
    clock = FakeClock()
    clock.set(1000.5)
    store = Store(clock=clock)
    store.create_tube("dlq", "fifo")
    store.create_tube("jobs", "utubettl", ttl=30.0, ttr=7.5)
    store.create_tube("poison", "fifottl", max_attempts=2, dead_letter="dlq")
    store.create_tube("plain", "fifo")
    return clock, store


def _tasks(clock, store):
    """Tasks in every state, with every optional field set somewhere."""
    jobs, plain, dlq = store.tube("jobs"), store.tube("plain"), store.tube("dlq")
    out = [plain.put("plain text"), plain.put(b"\x00\xffbytes"), plain.put({"nested": [1, 2.5, None, True]}),
           plain.put(12345678901234), plain.put(None), plain.put("é ünïcode \u2028 \"quoted\"")]
    out.append(jobs.put({"k": "v"}, pri=7, ttl=0.001, ttr=1e-7, delay=3, utube="u1", key="key-1"))
    out.append(jobs.put("again", key="key-1"))  # the held key: a copy flagged existing
    ready = jobs.put("to take", utube="u2", pri=1)
    taken = jobs.take(0, session="s")
    assert taken is ready
    out.append(taken)
    buried = jobs.put("to bury", utube="u3")
    jobs.bury(buried.id)
    out.append(buried)
    kicked = jobs.put("to kick", utube="u4")
    jobs.bury(kicked.id)
    jobs.kick(1)
    out.append(kicked)
    poison = store.tube("poison")
    dead = poison.put("poison")
    for _ in range(2):
        assert poison.take(0, session="s2") is dead
        dead = poison.release(dead.id, session="s2")
    out.append(dead)  # in the dead-letter tube, with its history
    assert dead.tube == "dlq" and dead.history
    acks = store.create_tube("acks", "fifo")
    acked = acks.put("to ack")
    assert acks.take(0, session="s3") is acked
    acks.ack(acked.id, session="s3")
    assert acked.state == "done"
    out.append(acked)
    clock.advance(1.25)
    out.append(dlq.put(1e16))
    out.append(dlq.put(-0.0001234))
    return out


def test_the_template_lists_the_shown_fields_in_order():
    assert TEMPLATE_FIELDS == _SHOWN


def test_one_is_byte_for_byte_orjson_of_task_json(world):
    clock, store = world
    enc = TaskEncoder(clock)
    for task in _tasks(clock, store):
        assert enc.one(task) == _reference(task, clock), task
        assert enc.one(task, prefix=b"", suffix=b"") == orjson.dumps(task_json(task, clock))
        assert enc.one(task, suffix=b',"existing":true}') == _reference(task, clock, suffix=b',"existing":true}')


def test_many_is_byte_for_byte_orjson_of_a_list(world):
    clock, store = world
    enc = TaskEncoder(clock)
    tasks = _tasks(clock, store)
    assert enc.many(tasks) == orjson.dumps({"tasks": [task_json(t, clock) for t in tasks]})
    assert enc.many([]) == b'{"tasks":[]}'


def test_bytes_data_is_base64_with_its_encoding_named(world):
    clock, store = world
    task = store.tube("plain").put(b"\x00\xff")
    out = orjson.loads(TaskEncoder(clock).one(task))["task"]
    assert out["data"] == "AP8=" and out["data_encoding"] == "base64"
    assert "session" not in out
