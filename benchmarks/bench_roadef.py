"""ROADEF/EURO 2012 benchmarks under pytest-benchmark: the reassignment search and its
lower bound on the two instances shipped with the tests (a1_1, a1_2).

The search runs a fixed number of rounds (``ROUNDS``), so its result is the same on any
machine and only the time varies; ``extra_info`` records the quality beside the time:
the total, the proven lower bound (LP relaxation), the share of the total it does not
prove necessary, the gap to the best-known value and the violations (always 0). The
full set at fixed time limits is ``roadef_table.py``'s job (it needs the instances
outside the repository).

Run: ``python -m pytest benchmarks/bench_roadef.py --benchmark-only
--benchmark-json=roadef.json`` then ``python benchmarks/report.py roadef.json --columns
total,lower_bound,unproven,gap_best_known`` (under a minute).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from placement.io.roadef import read_roadef_assignment, read_roadef_model
from placement.roadef import roadef_problem
from placement.solvers.reassign import solve_reassignment
from placement.solvers.reassign_bound import reassignment_lower_bound

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "roadef2012"

#: Best value in the data README's sources (section 5), per shipped instance.
BEST_KNOWN = {"a1_1": 44_306_501, "a1_2": 777_532_896}

#: Search rounds per case (each round's work is counted, not timed).
ROUNDS = 3


def _instance(name: str):  # type: ignore[no-untyped-def]
    inst = read_roadef_model(DATA / f"model_{name}.txt")
    original = read_roadef_assignment(DATA / f"assignment_{name}.txt", inst)
    return roadef_problem(inst), original


@pytest.mark.parametrize("name", sorted(BEST_KNOWN))
def test_roadef_search(benchmark, name):
    problem, original = _instance(name)
    bound = reassignment_lower_bound(problem, original)
    kwargs = {"time_limit_s": 3600.0, "seed": 0, "max_rounds": ROUNDS}
    result = benchmark.pedantic(
        solve_reassignment, args=(problem, original), kwargs=kwargs, rounds=1, iterations=1
    )
    total = result.evaluation.total
    benchmark.extra_info.update(
        {
            "instance": name,
            "rounds": result.stats["rounds"],
            "original": result.initial_evaluation.total,
            "total": total,
            "lower_bound": bound.value,
            "unproven": (total - bound.value) / total,
            "gap_best_known": (total - BEST_KNOWN[name]) / BEST_KNOWN[name],
            "violations": len(result.evaluation.violations),
        }
    )
    assert result.evaluation.feasible


@pytest.mark.parametrize("name", sorted(BEST_KNOWN))
def test_roadef_bound(benchmark, name):
    problem, original = _instance(name)
    bound = benchmark.pedantic(
        reassignment_lower_bound, args=(problem, original), rounds=1, iterations=1
    )
    benchmark.extra_info.update(
        {
            "instance": name,
            "simple": bound.simple,
            "lp": bound.lp,
            "lp_status": bound.lp_status,
            "lp_variables": bound.lp_variables,
            "shed": bound.shed,
            "best_known": BEST_KNOWN[name],
        }
    )
    assert bound.lp is not None and bound.value <= BEST_KNOWN[name]
