"""Every solver path against the canonical instances of :mod:`tests.conformance`.

To add a solver path, add one entry to ``SOLVERS``: a function
``(state, seed, options) -> Plan`` that raises :class:`~placement.InfeasibleError` when
it finds no valid plan, and whether it must be optimal. Heuristic paths may list the
instances where they are known to miss (``misses``: instance -> bytes they move), so
that both a regression and an improvement show up.

Checked per solver and instance: the plan is valid (``check`` finds nothing) and within
budget; its (balance steps, bytes) is the documented optimum (exact paths) or the
documented miss (heuristics); the same seed gives the same plan; infeasible instances
raise ``InfeasibleError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from placement import InfeasibleError, check, node_load
from placement.plan import Plan
from placement.planner import plan
from placement.solvers.exact import plan_exact
from tests.conformance import INFEASIBLE, INSTANCES, Instance
from tests.conformance.brute import _excess_steps, brute_force


@dataclass(frozen=True)
class Solver:
    run: Callable[[Any, int, dict[str, Any]], Plan]
    exact: bool
    misses: dict[str, float] = field(default_factory=dict)


SOLVERS: dict[str, Solver] = {
    "engine": Solver(
        run=lambda state, seed, options: plan(state, seed=seed, time_limit_s=5, **options),
        exact=False,
        misses={i.name: i.greedy_bytes for i in INSTANCES if i.greedy_bytes is not None},
    ),
    "lns": Solver(
        run=lambda state, seed, options: plan(
            state, seed=seed, time_limit_s=30, method="lns", lns_steps=200, **options
        ),
        exact=False,
    ),
    "exact": Solver(
        run=lambda state, seed, options: plan_exact(state, seed=seed, time_limit_s=10, **options),
        exact=True,
    ),
}


def _steps(state, nodes, options) -> int:
    w = np.ones(state.cluster.n_resources)
    return _excess_steps(state, node_load(state, nodes), options.get("target_imbalance", 0.02), w)


@pytest.mark.parametrize("inst", INSTANCES + INFEASIBLE, ids=lambda i: i.name)
def test_documented_answer_matches_brute_force(inst: Instance):
    result = brute_force(inst.build(), **inst.options)
    if inst.optimum is None:
        assert result is None
    else:
        assert result is not None and result.key[:2] == inst.optimum


@pytest.mark.parametrize("inst", INSTANCES, ids=lambda i: i.name)
@pytest.mark.parametrize("solver", SOLVERS, ids=str)
def test_feasible_instance(solver: str, inst: Instance):
    s = SOLVERS[solver]
    state = inst.build()
    p = s.run(state, 0, dict(inst.options))
    assert not check(state, p.target_nodes), check(state, p.target_nodes).counts()
    assert p.after["violations"] == 0
    budget = inst.options
    if budget.get("max_moves") is not None:
        assert p.n_moves <= budget["max_moves"]
    if budget.get("max_moves_per_node") is not None:
        ends = np.concatenate([p.source[p.source >= 0], p.target])
        assert np.bincount(ends).max(initial=0) <= budget["max_moves_per_node"]
    got = (_steps(state, p.target_nodes, inst.options), p.bytes_moved)
    assert inst.optimum is not None
    if s.exact or inst.name not in s.misses:
        assert got[0] == inst.optimum[0] and got[1] == pytest.approx(inst.optimum[1])
    else:
        assert got[1] == pytest.approx(s.misses[inst.name]), "the known miss changed"
        assert got >= inst.optimum
    again = s.run(state, 0, dict(inst.options))
    assert np.array_equal(np.sort(again.target_nodes, axis=1), np.sort(p.target_nodes, axis=1))


@pytest.mark.parametrize("inst", INFEASIBLE, ids=lambda i: i.name)
@pytest.mark.parametrize("solver", SOLVERS, ids=str)
def test_infeasible_instance(solver: str, inst: Instance):
    with pytest.raises(InfeasibleError) as info:
        SOLVERS[solver].run(inst.build(), 0, dict(inst.options))
    diagnosis = info.value.diagnosis
    if diagnosis is not None:
        assert diagnosis.conflicts[0].kind == inst.conflict
