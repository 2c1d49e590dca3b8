import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.taxi.errors import BadRequest, InvalidTransition, TaxiError, UnknownOrder, WrongDriver
from deploy.taxi.orders import (
    ACCEPTED, ARRIVING, CANCELLED, COMPLETED, CREATED, OFFERED, STATES, TRANSITIONS,
    Order, OrderBook, parse_order_request, transition,
)

P, Q = (55.75, 37.62), (55.70, 37.50)

# Every (action, state) pair: the expected target, or None when it must be refused.
EXPECTED = {
    ("offer", CREATED): OFFERED,
    ("decline", OFFERED): CREATED,
    ("expire", OFFERED): CREATED,
    ("accept", OFFERED): ACCEPTED,
    ("arrive", ACCEPTED): ARRIVING,
    ("complete", ARRIVING): COMPLETED,
    **{("cancel", s): CANCELLED for s in (CREATED, OFFERED, ACCEPTED, ARRIVING)},
}


def order_in(state):
    o = Order(1, "c", P, Q, wall=100.0, mono=5.0)
    o.state = state
    o.driver = None if state == CREATED else "d1"
    return o


@pytest.mark.parametrize("action", sorted(TRANSITIONS))
@pytest.mark.parametrize("state", STATES)
def test_every_action_in_every_state(action, state):
    o = order_in(state)
    kwargs = {"driver": "d1", "reason": "client changed plans", "wall": 200.0}
    want = EXPECTED.get((action, state))
    if want is None:
        with pytest.raises(InvalidTransition) as info:
            transition(o, action, **kwargs)
        assert info.value.status == 409 and isinstance(info.value, TaxiError)
        assert o.state == state and o.updated_at == 100.0  # unchanged
    else:
        event = transition(o, action, **kwargs)
        assert o.state == want == event.to_state
        assert event.from_state == state and event.order_id == 1 and event.at == 200.0
        assert o.updated_at == 200.0


def test_full_ride_events_and_dispatch_latency():
    book = OrderBook(next_id=10)
    order, ev = book.create("alice", P, Q, wall=1000.0, mono=50.0)
    assert order.id == 10 and ev == (10, None, CREATED, 1000.0, None, None)
    events = [ev]
    for action, driver, mono in [("offer", "d7", 51.0), ("decline", "d7", 52.0), ("offer", "d8", 53.0),
                                 ("accept", "d8", 54.5), ("arrive", "d8", 60.0), ("complete", "d8", 90.0)]:
        events.append(book.act(10, action, driver=driver, wall=1000.0 + mono - 50.0, mono=mono)[1])
    assert [(e.from_state, e.to_state, e.driver) for e in events[1:]] == [
        (CREATED, OFFERED, "d7"), (OFFERED, CREATED, "d7"), (CREATED, OFFERED, "d8"),
        (OFFERED, ACCEPTED, "d8"), (ACCEPTED, ARRIVING, "d8"), (ARRIVING, COMPLETED, "d8")]
    assert order.declined == {"d7"} and order.driver == "d8"
    stats = book.stats()
    assert stats["orders"][COMPLETED] == 1 and sum(stats["orders"].values()) == 1
    assert stats["dispatch_latency"]["count"] == 1
    assert stats["dispatch_latency"]["p50"] == pytest.approx(4.5, rel=0.01)


def test_driver_checks_and_reoffer_to_decliner_refused():
    book = OrderBook()
    order, _ = book.create("c", P, Q, wall=0, mono=0)
    with pytest.raises(BadRequest):
        book.act(order.id, "offer", wall=1, mono=1)  # no driver
    book.act(order.id, "offer", driver="a", wall=1, mono=1)
    with pytest.raises(WrongDriver):
        book.act(order.id, "accept", driver="b", wall=2, mono=2)
    book.act(order.id, "expire", driver="a", wall=3, mono=3)
    with pytest.raises(BadRequest):
        book.act(order.id, "offer", driver="a", wall=4, mono=4)
    book.act(order.id, "offer", driver="b", wall=4, mono=4)
    book.act(order.id, "accept", driver="b", wall=5, mono=5)
    with pytest.raises(WrongDriver):
        book.act(order.id, "arrive", driver="a", wall=6, mono=6)
    assert order.state == ACCEPTED and book.counts[ACCEPTED] == 1


def test_cancel_needs_reason_and_records_it():
    book = OrderBook()
    order, _ = book.create("c", P, Q, wall=0, mono=0)
    for bad in (None, "", "   ", "x" * 201, 5):
        with pytest.raises(BadRequest):
            book.act(order.id, "cancel", reason=bad, wall=1, mono=1)
    _, ev = book.act(order.id, "cancel", reason="no driver found", wall=2, mono=2)
    assert ev.reason == "no driver found" and order.to_dict()["reason"] == "no driver found"
    with pytest.raises(InvalidTransition):
        book.act(order.id, "cancel", reason="again", wall=3, mono=3)
    with pytest.raises(UnknownOrder):
        book.get(999)
    with pytest.raises(BadRequest):
        book.act(order.id, "teleport", wall=3, mono=3)


@pytest.mark.parametrize("body", [
    None, [], {"client": "a"}, {"client": "", "from": {"lat": 1, "lon": 1}, "to": {"lat": 1, "lon": 1}},
    {"client": "a", "from": {"lat": 100, "lon": 1}, "to": {"lat": 1, "lon": 1}},
    {"client": "a", "from": {"lat": True, "lon": 1}, "to": {"lat": 1, "lon": 1}},
    {"client": "a", "from": {"lat": "n", "lon": 1}, "to": {"lat": 1, "lon": 1}},
    {"client": "a", "from": [1, 2], "to": {"lat": 1, "lon": 1}},
])
def test_bad_order_requests(body):
    with pytest.raises(BadRequest):
        parse_order_request(body)


def test_good_order_request():
    assert parse_order_request({"client": 42, "from": {"lat": 1, "lon": 2}, "to": {"lat": "3.5", "lon": 4}}) == (
        "42", (1.0, 2.0), (3.5, 4.0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(TRANSITIONS)), st.sampled_from(["a", "b", None])), max_size=30))
def test_random_action_sequences_keep_counts_and_model(actions):
    """Against a tiny model: the state follows EXPECTED; refused actions change nothing."""
    book = OrderBook()
    order, _ = book.create("c", P, Q, wall=0, mono=0)
    state, driver = CREATED, None
    for t, (action, who) in enumerate(actions, start=1):
        allowed = EXPECTED.get((action, state))
        who_ok = (action == "offer" and who is not None and who not in order.declined) or \
                 (action in ("accept", "decline", "expire", "arrive", "complete") and who == driver) or \
                 action == "cancel"
        try:
            book.act(order.id, action, driver=who, reason="r", wall=t, mono=t)
        except TaxiError:
            assert allowed is None or not who_ok
            assert order.state == state
        else:
            assert allowed is not None and who_ok
            state = allowed
            if action == "offer":
                driver = who
            elif action in ("decline", "expire"):
                driver = None
        assert order.state == state
        assert book.counts[state] == 1 and sum(book.counts.values()) == 1


def test_restore_puts_an_order_back_with_its_state_and_ids_continue_above_it():
    book = OrderBook(next_id=3)
    order = Order(10, "c", (55.7, 37.6), (55.8, 37.7), wall=1.0, mono=1.0)
    order.state, order.driver = ARRIVING, "7"
    assert book.restore(order) is order
    assert book.get(10) is order and book.counts[ARRIVING] == 1 and book.next_id == 11
    with pytest.raises(BadRequest):
        book.restore(order)
    new, _ = book.create("c", (55.7, 37.6), (55.8, 37.7), wall=2.0, mono=2.0)
    assert new.id == 11
