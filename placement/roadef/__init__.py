"""The ROADEF/EURO Challenge 2012 machine-reassignment benchmark, on the library's engine.

The challenge's problem is an instance of the library's general reassignment problem
(:class:`~placement.solvers.reassign.ReassignProblem`); :func:`roadef_problem` is the whole
mapping, one concept to one concept:

=====================================  =========================================
ROADEF                                 placement
=====================================  =========================================
machine, process, service              node, item, group
capacity / safety capacity             ``capacity`` / ``soft_capacity``
load-cost weight                       ``soft_capacity_cost``
transient resource                     ``transient``
conflict (a service's processes on     ``conflict`` (a group's items on distinct
distinct machines)                     nodes; always on)
location, spreadMin                    ``spread_domain``, ``group_spread_min``
neighborhood, service dependencies     ``dependency_domain``, ``group_dependency``
balance cost (r1, r2, target, weight)  ``balance_*``
process move cost, weight              ``item_move_cost``, ``item_move_weight``
service move cost weight               ``group_move_weight``
machine move cost matrix, weight       ``move_cost_matrix``, ``node_move_weight``
=====================================  =========================================

What stays ROADEF-specific is only this module and :mod:`placement.io.roadef`: the file
format and the names of the five cost terms (:data:`ROADEF_TERMS`).

Examples
--------
>>> from placement.io.roadef import parse_roadef_model
>>> inst = parse_roadef_model("1 0 1  2 0 0 10 8 0 1  0 1 8 6 1 0  1 0 0  1 0 4 1  0  1 10 100")
>>> costs, violations = evaluate_roadef(inst, [0], [1])
>>> costs["machine_move"], costs["process_move"], costs["service_move"], violations
(100, 1, 10, [])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from placement.io.roadef import RoadefInstance
from placement.solvers.reassign import (
    ReassignProblem,
    ReassignResult,
    Violation,
    evaluate_reassignment,
    solve_reassignment,
)

__all__ = [
    "ROADEF_TERMS",
    "RoadefEvaluation",
    "evaluate_roadef",
    "roadef_problem",
    "solve_roadef",
    "to_roadef_costs",
]

#: The challenge's cost-term names, keyed by the library's term names, in report order.
ROADEF_TERMS = {
    "soft_capacity": "load",
    "balance": "balance",
    "item_move": "process_move",
    "group_move": "service_move",
    "node_move": "machine_move",
}


class RoadefEvaluation(NamedTuple):
    """Cost terms (ROADEF names plus ``total``) and the violated hard constraints."""

    costs: dict[str, int]
    violations: list[Violation]

    @property
    def feasible(self) -> bool:
        return not self.violations


def roadef_problem(instance: RoadefInstance) -> ReassignProblem:
    """The instance as a general :class:`ReassignProblem` (see the module's mapping table)."""
    inst = instance
    return ReassignProblem(
        capacity=inst.capacity,
        demand=inst.requirement,
        soft_capacity=inst.safety_capacity,
        soft_capacity_cost=inst.load_cost_weight,
        transient=inst.transient,
        group=inst.service,
        group_spread_min=inst.spread_min,
        spread_domain=inst.location,
        dependency_domain=inst.neighborhood,
        group_dependency_indptr=inst.dependency_indptr,
        group_dependency=inst.dependency,
        item_move_cost=inst.process_move_cost,
        move_cost_matrix=inst.machine_move_cost,
        balance_resources=inst.balance_resources,
        balance_target=inst.balance_target,
        balance_cost=inst.balance_weight,
        item_move_weight=inst.process_move_weight,
        group_move_weight=inst.service_move_weight,
        node_move_weight=inst.machine_move_weight,
    )


def to_roadef_costs(costs: dict[str, int]) -> dict[str, int]:
    """Library term names to the challenge's, with their ``total``."""
    out = {ROADEF_TERMS[k]: int(costs[k]) for k in ROADEF_TERMS}
    out["total"] = sum(out.values())
    return out


def evaluate_roadef(
    instance: RoadefInstance,
    initial: Any,
    solution: Any,
    *,
    problem: ReassignProblem | None = None,
) -> RoadefEvaluation:
    """The official objective and hard constraints of *solution*, exactly (int64).

    Parameters
    ----------
    instance : RoadefInstance
    initial, solution : array_like of int, shape (P,)
        Original assignment and new assignment (machine of each process).
    problem : ReassignProblem, optional
        ``roadef_problem(instance)``, when the caller already has it.

    Returns
    -------
    RoadefEvaluation
        ``costs``: ``load``, ``balance``, ``process_move``, ``service_move``,
        ``machine_move`` and ``total``; ``violations``: every violated hard constraint
        (capacity, transient, conflict, spread, dependency), at most 50 per kind. The
        official checker stops at the first violation and reports no cost; here the costs
        are computed either way.

    Raises
    ------
    InvalidValueError
        An assignment has the wrong length or names a machine that does not exist.
    """
    pb = roadef_problem(instance) if problem is None else problem
    ev = evaluate_reassignment(pb, initial, solution)
    return RoadefEvaluation(to_roadef_costs(ev.costs), list(ev.violations))


def solve_roadef(
    instance: RoadefInstance,
    initial: Any,
    /,
    *,
    time_limit_s: float = 60.0,
    seed: int = 0,
    max_rounds: int | None = None,
    lns: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 1,
    starts: Sequence[str] | None = None,
) -> ReassignResult:
    """Improve the original assignment with the library's reassignment engine.

    A thin call of :func:`~placement.solvers.reassign.solve_reassignment` on
    :func:`roadef_problem`; see there for the parameters. ``result.assignment`` is the
    new machine of each process, ready for
    :func:`~placement.io.roadef.write_roadef_solution`.
    """
    return solve_reassignment(
        roadef_problem(instance),
        np.asarray(initial),
        time_limit_s=time_limit_s,
        seed=seed,
        max_rounds=max_rounds,
        lns=lns,
        progress=progress,
        workers=workers,
        starts=starts,
    )
