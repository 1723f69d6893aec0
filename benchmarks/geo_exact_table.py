"""How far is the fast geo phase from the exact optimum on small instances?

For the small random instances of ``tests/geo_cases.py`` (8-15 nodes, 20-60 shards, 2-4
regions), runs the fast phase (:func:`placement.solvers.geo.improve_latency`) at a goal,
then the CP-SAT geo model (:func:`placement.solvers.geo_exact.solve_geo_exact`, hinted
with the fast result) for the fewest bytes that serve and cover at least as much client
demand under the same rules and pressure ceiling, and prints, per goal, how many cases
the exact model proved, and the distribution of fast bytes / optimal bytes.

Two kinds of start placement: *drifted* (each replica on a random feasible node, so node
pressures spread as in a real cluster and the ceiling leaves room) and *balanced* (each
replica on the emptiest feasible node, so every node sits near the ceiling). The fast
phase moves one replica at a time into free room; a balanced start leaves almost none,
and the optimum then relies on swaps and chains of moves that free room for each other,
which the fast phase does not search.

Run: ``python benchmarks/geo_exact_table.py [--seeds 40] [--time-limit 10]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from placement.latency import client_service  # noqa: E402
from placement.solvers.geo import improve_latency  # noqa: E402
from placement.solvers.geo_exact import integer_weights, solve_geo_exact  # noqa: E402
from tests.geo_cases import geo_state  # noqa: E402


def ratio(seed: int, goal: float, balanced: bool, time_limit_s: float) -> tuple[float, str, float]:
    state = geo_state(seed, balanced=balanced, pins=False)
    new, stats = improve_latency(
        state, state.placement.nodes, compliance_goal=goal, coverage_goal=goal, seed=seed
    )
    svc = client_service(state, new)
    weight, _ = integer_weights(state)
    t0 = time.perf_counter()
    res = solve_geo_exact(
        state,
        state.placement.nodes,
        served_goal=int(weight[svc.served].sum()),
        covered_goal=int(weight[svc.local].sum()),
        hint=new,
        time_limit_s=time_limit_s,
    )
    exact_s = time.perf_counter() - t0
    if not res.bytes_moved:
        return (1.0 if stats.bytes_moved == 0 else float("inf")), res.status, exact_s
    return stats.bytes_moved / res.bytes_moved, res.status, exact_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    print(
        f"{'start':<10}{'goal':>6}{'cases':>7}{'proven':>8}{'max':>8}{'mean':>8}"
        f"{'> 1.10':>8}{'exact s (max)':>15}"
    )
    for balanced in (False, True):
        for goal in (0.7, 0.8, 0.9, 1.0):
            rows = [ratio(s, goal, balanced, args.time_limit) for s in range(args.seeds)]
            proven = [r for r, status, _ in rows if status == "OPTIMAL"]
            r = np.array(proven)
            print(
                f"{'balanced' if balanced else 'drifted':<10}{goal:>6.1f}{len(rows):>7}"
                f"{len(proven):>8}{r.max():>8.3f}{r.mean():>8.3f}{int((r > 1.10).sum()):>8}"
                f"{max(t for _, _, t in rows):>15.2f}"
            )


if __name__ == "__main__":
    main()
