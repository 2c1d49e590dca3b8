"""Micro-benchmark of deploy.taxi.geo.GeoIndex at city scale.

    .venv/bin/python -m bench.taxi_geo [--drivers 20000] [--runs 5]

20,000 drivers spread uniformly over a 30 x 30 km city (cells of 0.01 degree); 80 %
free. Measures updates/s (random driver moves a few hundred metres) and
nearest_free(k=5) queries/s at random points, and, as the peer, the same queries by
a brute-force scan of every driver, so the ratio shows what the grid buys. Medians of
several runs; single-threaded CPU-bound Python, so other load on the machine shows.
"""
import argparse
import random
import statistics
import time

from deploy.taxi.geo import GeoIndex, distance_m

CENTER = (55.75, 37.62)
SPAN = 0.27  # degrees of latitude ~ 30 km


def build(n, rng):
    g = GeoIndex()
    pos = {}
    for i in range(n):
        lat = CENTER[0] + (rng.random() - 0.5) * SPAN
        lon = CENTER[1] + (rng.random() - 0.5) * SPAN * 1.8
        status = "free" if rng.random() < 0.8 else "busy"
        g.update(i, lat, lon, status, 0.0)
        pos[i] = (lat, lon, status)
    return g, pos


def run_once(n, rng, updates=200_000, queries=20_000, brute_queries=200):
    g, pos = build(n, rng)
    moves = [(rng.randrange(n), (rng.random() - 0.5) * 0.005, (rng.random() - 0.5) * 0.005) for _ in range(updates)]
    now = 1.0
    t0 = time.perf_counter()
    for driver_id, dlat, dlon in moves:
        lat, lon, status = pos[driver_id]
        g.update(driver_id, lat + dlat, lon + dlon, status, now)
    t_upd = time.perf_counter() - t0
    points = [(CENTER[0] + (rng.random() - 0.5) * SPAN, CENTER[1] + (rng.random() - 0.5) * SPAN * 1.8) for _ in range(queries)]
    t0 = time.perf_counter()
    for lat, lon in points:
        g.nearest_free(lat, lon, 5, now)
    t_q = time.perf_counter() - t0
    drivers = [(d.id, d.lat, d.lon, d.status) for d in g._drivers.values()]
    t0 = time.perf_counter()
    for lat, lon in points[:brute_queries]:
        sorted((distance_m(lat, lon, dl, dn), str(i)) for i, dl, dn, s in drivers if s == "free")[:5]
    t_b = time.perf_counter() - t0
    return updates / t_upd, queries / t_q, brute_queries / t_b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drivers", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    results = [run_once(args.drivers, rng) for _ in range(args.runs)]
    upd = statistics.median(r[0] for r in results)
    q = statistics.median(r[1] for r in results)
    brute = statistics.median(r[2] for r in results)
    print(f"drivers={args.drivers} runs={args.runs}")
    print(f"updates/s          median {upd:12,.0f}   (runs: {', '.join(f'{r[0]:,.0f}' for r in results)})")
    print(f"nearest_free(k=5)/s median {q:11,.0f}   (runs: {', '.join(f'{r[1]:,.0f}' for r in results)})")
    print(f"brute-force scan/s median {brute:11,.0f}   grid/brute ratio {q / brute:,.0f}x")


if __name__ == "__main__":
    main()
