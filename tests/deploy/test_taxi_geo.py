import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.taxi.errors import BadRequest, TaxiError
from deploy.taxi.geo import GeoIndex, distance_m


def brute_nearest(drivers, lat, lon, k, now, exclude=(), offline_after=30.0):
    """Reference: every driver, filtered and sorted by (distance, str id)."""
    cos_lat = math.cos(math.radians(lat))
    cands = [
        (distance_m(lat, lon, d["lat"], d["lon"], cos_lat), str(i))
        for i, d in drivers.items()
        if d["status"] == "free" and d["seen"] > now - offline_after and i not in exclude
    ]
    cands.sort()
    return [i for _, i in cands[:k]]


def test_nearest_orders_by_distance_and_skips_busy():
    g = GeoIndex()
    g.update("near", 55.7500, 37.6200, "free", now=0)
    g.update("mid", 55.7600, 37.6200, "free", now=0)
    g.update("far", 55.9000, 37.6200, "free", now=0)
    g.update("busy", 55.7501, 37.6200, "busy", now=0)
    got = g.nearest_free(55.7500, 37.6200, k=3, now=1)
    assert [d.id for _, d in got] == ["near", "mid", "far"]
    assert got[1][0] == pytest.approx(1112, rel=0.01)  # 0.01 degree of latitude
    assert [d.id for _, d in g.nearest_free(55.75, 37.62, k=1, now=1, exclude={"near"})] == ["mid"]


def test_drivers_go_offline_after_30_seconds_of_silence():
    g = GeoIndex()
    g.update(1, 55.75, 37.62, "free", now=100)
    g.update(2, 55.76, 37.62, "busy", now=110)
    assert g.stats(now=129) == {"online": 2, "free": 1}
    assert [d.id for _, d in g.nearest_free(55.75, 37.62, k=5, now=129.9)] == [1]
    assert g.nearest_free(55.75, 37.62, k=5, now=130) == []  # exactly 30 s: offline
    assert g.stats(now=130) == {"online": 1, "free": 0}
    g.update(1, 55.75, 37.62, "free", now=131)  # heard from again: back online
    assert g.stats(now=131) == {"online": 2, "free": 1}
    assert g.stats(now=140) == {"online": 1, "free": 1}


def test_status_changes_and_offline_removal():
    g = GeoIndex()
    g.update("a", 10, 10, "free", now=0)
    assert g.set_status("a", "busy", now=1)
    assert g.nearest_free(10, 10, now=1) == []
    assert g.get("a", now=1).status == "busy"
    g.update("a", 10, 10, "offline", now=2)
    assert g.get("a", now=2) is None
    assert not g.set_status("a", "free", now=3)
    assert g.stats(now=3) == {"online": 0, "free": 0}


@pytest.mark.parametrize(
    "lat, lon, status",
    [(91, 0, "free"), (0, -181, "free"), (float("nan"), 0, "free"), ("x", 0, "free"), (None, 0, "free"), (0, 0, "parked")],
)
def test_bad_input_is_rejected_and_changes_nothing(lat, lon, status):
    g = GeoIndex()
    g.update("a", 1, 1, "free", now=0)
    with pytest.raises(BadRequest) as info:
        g.update("a", lat, lon, status, now=1)
    assert isinstance(info.value, TaxiError) and info.value.status == 400
    assert g.get("a", now=1).lat == 1 and g.stats(now=1) == {"online": 1, "free": 1}


def test_sparse_index_search_terminates_and_finds_far_driver():
    g = GeoIndex(cell_deg=0.001)
    g.update("only", -33.0, 151.0, "free", now=0)
    got = g.nearest_free(-33.9, 151.2, k=3, now=0)
    assert [d.id for _, d in got] == ["only"]


def test_far_flung_drivers_do_not_make_the_search_walk_empty_rings(monkeypatch):
    """Fewer than k free drivers, spread over the globe: the ring walk would visit
    billions of empty cells; it must switch to the occupied cells instead."""
    import deploy.taxi.geo as geo

    g = GeoIndex(cell_deg=0.001)
    for i, (lat, lon) in enumerate([(55.75, 37.62), (55.76, 37.60), (-33.87, 151.21), (40.71, -74.0)]):
        g.update(f"d{i}", lat, lon, "free", now=0)
    visited = []
    real_ring = geo._ring

    def counting_ring(row0, col0, r):
        for cell in real_ring(row0, col0, r):
            visited.append(cell)
            yield cell

    monkeypatch.setattr(geo, "_ring", counting_ring)
    got = g.nearest_free(55.75, 37.62, k=5, now=1)
    assert [d.id for _, d in got] == ["d0", "d1", "d3", "d2"]  # Moscow, Moscow, New York, Sydney
    assert len(visited) < 100


def test_search_does_not_visit_every_driver():
    """The ring scan stops early: count distance evaluations on a dense city."""
    import deploy.taxi.geo as geo

    g = GeoIndex()
    n = 0
    for i in range(100):
        for j in range(100):
            g.update(n, 55.5 + i * 0.005, 37.3 + j * 0.005, "free", now=0)
            n += 1
    calls = []
    real = geo.distance_m

    def counting(*a):
        calls.append(1)
        return real(*a)

    geo.distance_m = counting
    try:
        got = g.nearest_free(55.75, 37.55, k=5, now=1)
    finally:
        geo.distance_m = real
    assert len(got) == 5
    assert len(calls) < 200  # of 10,000 drivers


coord = st.one_of(
    st.floats(min_value=-0.05, max_value=0.05, allow_nan=False),  # one city, mostly
    st.floats(min_value=-20, max_value=20, allow_nan=False),  # and now and then far away
)
ops = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=30),  # driver id
        coord,
        coord,
        st.sampled_from(["free", "free", "busy", "offline"]),
        st.floats(min_value=0, max_value=20),  # time step
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=ops,
    base=st.sampled_from([(0.0, 0.0), (55.75, 37.62), (-33.87, 151.2), (69.6, 18.9)]),
    cell=st.sampled_from([0.001, 0.005, 0.02]),
    query=st.tuples(coord, coord),
    k=st.integers(min_value=1, max_value=6),
    exclude=st.frozensets(st.integers(min_value=0, max_value=30), max_size=5),
    later=st.floats(min_value=0, max_value=40),
)
def test_nearest_matches_brute_force(ops, base, cell, query, k, exclude, later):
    g = GeoIndex(cell_deg=cell)
    model = {}
    now = 0.0
    for driver_id, dlat, dlon, status, step in ops:
        now += step
        lat, lon = base[0] + dlat, base[1] + dlon
        g.update(driver_id, lat, lon, status, now)
        if status == "offline":
            model.pop(driver_id, None)
        else:
            model[driver_id] = {"lat": lat, "lon": lon, "status": status, "seen": now}
    now += later
    qlat, qlon = base[0] + query[0], base[1] + query[1]
    got = g.nearest_free(qlat, qlon, k=k, now=now, exclude=exclude)
    assert [str(d.id) for _, d in got] == brute_nearest(model, qlat, qlon, k, now, exclude)
    online = [d for d in model.values() if d["seen"] > now - 30]
    assert g.stats(now) == {"online": len(online), "free": sum(d["status"] == "free" for d in online)}
