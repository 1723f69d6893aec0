"""Lower bounds on the cost of a reassignment problem: how far from optimal a plan can be.

Three bounds, each valid for every feasible assignment of a :class:`ReassignProblem`:

* **simple**: closed form from the totals alone. The usage of each resource summed over
  the cluster is the same whatever the assignment, and ``sum max(0, x) >= max(0, sum x)``,
  so the soft-capacity term is at least ``w_r * max(0, total_r - sum_n soft_r)`` and each
  balance term at least its cost times the positive part of its cluster-wide sum. This
  is the "simple lower bound" of the ROADEF/EURO 2012 literature; it ignores that items
  are indivisible, that moves cost, and every placement rule.
* **lp**: the linear relaxation of the problem (``x[i, n]`` in [0, 1], the share of item
  ``i`` on node ``n``). It keeps what the simple bound ignores, except integrality:
  hard capacity; the transient rule, which is exactly linear (an item arriving at ``n``
  from elsewhere takes ``n``'s transient room for good, so arrivals at ``n`` fit in
  ``capacity - initial usage`` there); one item of a group per node; the group move
  limit; every cost term, including the move costs, priced per share moved. An item
  may only share nodes it fits on alone. Spread and dependency rules are left out
  (dropping a rule can only lower the optimum, so the bound stays valid).
* **shed**: what each node must shed, node by node. Whatever arrives at a node only adds
  to its usage, and the soft-capacity cost only grows with usage, so the node's cost is
  at least that of its initial items less those that left, and each item that left
  paid its move cost. Per node, the cheapest such set (items indivisible) is found by
  CP-SAT; the bound is the sum, plus the group-move weight when it forces a move. It
  ignores where the shed items go, so it is weak where room elsewhere is scarce, but
  it is the one that sees integrality where moves are what costs: on ROADEF a2_1 (every
  move costs 1, the load cost must vanish) it proves 110 where the LP proves 66.

The LP is solved by HiGHS (through SciPy) with a time limit; when it runs out, or the
problem is too large for its size limit, it gives no bound (the others still do). Its
bound is not the solver's optimum, which holds within tolerances only, but the
weak-duality value of its dual solution over the columns' boxes, valid for any dual
vector; so a solver's inaccuracy can make it weaker, never an overstatement.

Measured on the ROADEF/EURO 2012 set A (one core, SciPy's HiGHS): the LP raises the
bound on a2_2 from 13.6 M to 320.4 M and on a2_3 from 521.4 M to 807.6 M (12.6 s and
10.8 s); on instances whose cost is mostly load forced by the totals (a1_4, a2_5) it adds
little. It stays far below the best known values on the transient instances: items are
large against the room that nodes have, which the relaxation splits freely.

Examples
--------
>>> import numpy as np
>>> from placement.solvers.reassign import ReassignProblem
>>> problem = ReassignProblem.build(
...     capacity=[[10], [10]], demand=[[4], [4]], soft_capacity=[[5], [5]],
...     soft_capacity_cost=[1], item_move_cost=[1, 1])
>>> bound = reassignment_lower_bound(problem, np.array([0, 0]))
>>> bound.simple, bound.lp, bound.value
(0, 1, 1)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.errors import InvalidValueError
from placement.solvers.reassign_problem import (
    ReassignProblem,
    _arrival_room,
    _usage,
    evaluate_reassignment,
)

_I64 = np.int64


@dataclass(frozen=True)
class ReassignBound:
    """What :func:`reassignment_lower_bound` returns.

    Attributes
    ----------
    simple : int
        The closed-form bound from the cluster's totals.
    lp : int or None
        The LP relaxation's bound, rounded up; None when it was not solved.
    lp_status : str
        ``"optimal"``, ``"skipped"`` (too large or not asked for), ``"time limit"`` or
        the solver's message.
    lp_seconds : float
        Time spent building and solving the LP.
    lp_variables : int
        Item-node shares in the LP (0 when skipped).
    shed : int or None
        The per-node shedding bound; None when not asked for, or when a quick upper
        estimate showed that it could not exceed the simple and LP bounds.
    """

    simple: int
    lp: int | None
    lp_status: str
    lp_seconds: float
    lp_variables: int
    shed: int | None = None

    @property
    def value(self) -> int:
        """The best (largest) of the bounds computed."""
        return max(self.simple, self.lp or 0, self.shed or 0)


def simple_lower_bound(problem: ReassignProblem) -> int:
    """The closed-form bound: what the cluster-wide totals force, whatever the assignment.

    Examples
    --------
    >>> from placement.solvers.reassign import ReassignProblem
    >>> problem = ReassignProblem.build(
    ...     capacity=[[10], [10]], demand=[[6], [6]], soft_capacity=[[5], [5]],
    ...     soft_capacity_cost=[3])
    >>> simple_lower_bound(problem)  # 12 units against 10 of soft capacity, 3 each
    6
    """
    pb = problem
    total = pb.demand.sum(axis=0)
    bound = int(pb.soft_capacity_cost @ np.maximum(total - pb.soft_capacity.sum(axis=0), 0))
    for (r1, r2), t, c in zip(
        pb.balance_resources, pb.balance_target, pb.balance_cost, strict=True
    ):
        free1 = int(pb.capacity[:, r1].sum() - total[r1])
        free2 = int(pb.capacity[:, r2].sum() - total[r2])
        bound += int(c) * max(0, int(t) * free1 - free2)
    return bound


def reassignment_lower_bound(
    problem: ReassignProblem,
    initial: Any,
    /,
    *,
    lp: bool = True,
    time_limit_s: float | None = 60.0,
    max_variables: int = 2_000_000,
    shed: bool = True,
) -> ReassignBound:
    """Lower bounds on the cost of every feasible reassignment of *initial*.

    Parameters
    ----------
    problem : ReassignProblem
    initial : array_like of int, shape (P,)
        The current assignment (the reference for move costs and transient room).
    lp : bool
        Solve the LP relaxation (off: the simple bound only, instantly).
    time_limit_s : float or None
        Limit on the LP solve, and another on the shedding bound's CP-SAT models
        together; None for none.
    max_variables : int
        Skip the LP when it would have more item-node shares than this (its memory and
        time grow with them: ROADEF a2_2's 26,856 took 12 s on one core, a2_4's 48,091
        with a balance term 45 s).
    shed : bool
        Compute the shedding bound (one small CP-SAT model per node whose initial items
        cost soft capacity, within *time_limit_s*), unless it cannot exceed the others.

    Returns
    -------
    ReassignBound

    Raises
    ------
    InvalidValueError
        *initial* has the wrong length or names a node that does not exist, or
        *time_limit_s* is not positive.
    """
    init = problem.check_assignment(initial, "initial")
    if time_limit_s is not None and time_limit_s <= 0:
        raise InvalidValueError(f"time_limit_s must be positive, got {time_limit_s}.")
    simple = simple_lower_bound(problem)
    lp_bound, status, seconds, n_vars = None, "skipped", 0.0, 0
    if lp:
        started = time.perf_counter()
        allowed = _allowed_pairs(problem, init)
        if int(allowed.sum()) <= max_variables:
            n_vars = int(allowed.sum())
            status, value = _solve_lp(problem, init, allowed, time_limit_s)
            if value is not None:
                # Costs are integers, so any real bound rounds up; the shave covers float
                # rounding in the sums (their terms are up to about 1e12, each exact to
                # 1e-16).
                lp_bound = max(0, math.ceil(value - 1e-9 * abs(value) - 1e-6))
        seconds = time.perf_counter() - started
    shed_bound = None
    if shed:
        shed_bound = _shed_bound(problem, init, time_limit_s, max(simple, lp_bound or 0))
    return ReassignBound(simple, lp_bound, status, seconds, n_vars, shed_bound)


def _shed_bound(
    problem: ReassignProblem, init: np.ndarray, time_limit_s: float | None, beat: int
) -> int | None:
    """The shedding bound (module docstring): per node, the cheapest set of initial items
    to send away, paying their move costs and the soft-capacity cost of what stays.

    Each node's least cost is CP-SAT's proven lower bound on it (its optimum when
    solved in time), so the sum is valid even when time runs out. None, without
    solving, when it cannot exceed *beat*: a node never needs more than its initial
    soft-capacity cost, nor more than moving all its items away (ROADEF b_1, where
    moves are cheap: 8 s of CP-SAT saved for a bound of 442 against 3.3e9).
    """
    from ortools.sat.python import cp_model

    pb = problem
    over = np.maximum(_usage(pb, init) - pb.soft_capacity, 0)
    load = over @ pb.soft_capacity_cost
    costly = np.flatnonzero(load > 0)
    # Cheapest move cost from each node: an item that leaves pays its own cost and at
    # least the cheapest entry of its node's row of the move-cost matrix.
    off = np.where(np.eye(pb.n_nodes, dtype=bool), np.iinfo(_I64).max, pb.move_cost_matrix)
    cheapest = off.min(axis=1) if pb.n_nodes > 1 else np.zeros(1, dtype=_I64)
    move = pb.item_move_weight * pb.item_move_cost + pb.node_move_weight * cheapest[init]
    most = load.astype(np.float64)
    if pb.group_move_limit is None:  # else moving every item may break the limit
        most = np.minimum(most, np.bincount(init, weights=move, minlength=pb.n_nodes))
    if int(most.sum()) + int(pb.group_move_weight) <= beat:
        return None
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    # Initial items grouped by node once (not one pass over all items per node).
    order = np.argsort(init, kind="stable")
    start_at = np.searchsorted(init[order], np.arange(pb.n_nodes + 1))
    total = 0
    for k, n in enumerate(costly.tolist()):
        items = order[start_at[n] : start_at[n + 1]]
        m = cp_model.CpModel()
        leave = [m.new_bool_var("") for _ in items]
        terms: list[Any] = list(leave)
        coefs = [int(move[i]) for i in items]
        for r in np.flatnonzero((pb.soft_capacity_cost > 0) & (over[n] > 0)).tolist():
            shed = cp_model.LinearExpr.weighted_sum(leave, [int(v) for v in pb.demand[items, r]])
            ov = m.new_int_var(0, int(over[n, r]), "")
            m.add(ov >= int(over[n, r]) - shed)
            terms.append(ov)
            coefs.append(int(pb.soft_capacity_cost[r]))
        if pb.group_move_limit is not None:
            for g in np.unique(pb.group[items]).tolist():
                same = [v for v, i in zip(leave, items, strict=True) if pb.group[i] == g]
                m.add(sum(same) <= pb.group_move_limit)
        m.minimize(cp_model.LinearExpr.weighted_sum(terms, coefs))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        if deadline is not None:
            share = (deadline - time.perf_counter()) / (len(costly) - k)
            solver.parameters.max_time_in_seconds = max(0.01, share)
        solver.solve(m)
        found = solver.best_objective_bound
        # The objective is integral, so its bound rounds up (the half guards float noise).
        total += max(0, math.ceil(found - 0.5)) if math.isfinite(found) else 0
    if pb.group_move_weight > 0:
        # A solution that moves anything pays the group-move weight at least once; one
        # that moves nothing costs what the initial assignment costs.
        start = evaluate_reassignment(pb, init, init, limit=1)
        moved = total + int(pb.group_move_weight)
        total = min(start.total, moved) if start.feasible else moved
    return int(total)


def _allowed_pairs(problem: ReassignProblem, init: np.ndarray) -> np.ndarray:
    """(P, N) bool: the nodes each item could sit on alone (hard capacity and, away from
    its initial node, the transient room left by the initial items)."""
    pb = problem
    room = _arrival_room(pb, init)
    allowed = np.ones((pb.n_items, pb.n_nodes), dtype=bool)
    for r in range(pb.n_resources):  # one resource at a time: (P, N), never (P, N, R)
        allowed &= pb.demand[:, r][:, None] <= room[:, r][None, :]
    allowed[np.arange(pb.n_items), init] = True
    return allowed


class _Rows:
    """Accumulates sparse rows ``A x <= b`` family by family."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.rhs: list[np.ndarray] = []
        self.count = 0

    def add(self, row: np.ndarray, col: np.ndarray, val: np.ndarray, rhs: np.ndarray) -> None:
        self.rows.append(np.asarray(row) + self.count)
        self.cols.append(np.asarray(col))
        self.vals.append(np.asarray(val, dtype=np.float64))
        self.rhs.append(np.asarray(rhs, dtype=np.float64))
        self.count += len(rhs)

    def matrix(self, n_cols: int) -> tuple[Any, np.ndarray]:
        import scipy.sparse as sp

        a = sp.csr_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.count, n_cols),
        )
        return a, np.concatenate(self.rhs)


def _solve_lp(
    problem: ReassignProblem, init: np.ndarray, allowed: np.ndarray, time_limit_s: float | None
) -> tuple[str, float | None]:
    """Build and solve the relaxation; (status, bound or None)."""
    import scipy.optimize
    import scipy.sparse as sp

    pb = problem
    n_nodes, n_res, n_items, n_groups = pb.n_nodes, pb.n_resources, pb.n_items, pb.n_groups
    item, node = np.nonzero(allowed)
    n_x = len(item)
    x_cols = np.arange(n_x)
    away = node != init[item]
    d = pb.demand
    room = _arrival_room(pb, init)
    # Columns: shares x, then overflow per (node, resource), balance slack per (rule,
    # node), and the largest number of moved items in one group.
    n_bal = len(pb.balance_target)
    over0 = n_x
    bal0 = over0 + n_nodes * n_res
    top = bal0 + n_bal * n_nodes
    n_cols = top + 1
    cost = np.zeros(n_cols)
    cost[:n_x] = np.where(away, pb.item_move_weight * pb.item_move_cost[item], 0) + (
        pb.node_move_weight * pb.move_cost_matrix[init[item], node]
    )
    cost[over0:bal0] = np.tile(pb.soft_capacity_cost.astype(np.float64), n_nodes)
    cost[bal0:top] = np.repeat(pb.balance_cost.astype(np.float64), n_nodes)
    cost[top] = pb.group_move_weight
    rows = _Rows()
    nodes = np.arange(n_nodes)
    for r in range(n_res):
        over_cols = over0 + nodes * n_res + r
        # Usage above the watermark is paid: U - over <= soft (over >= 0 by its bounds).
        if pb.soft_capacity_cost[r] > 0:
            rows.add(
                np.r_[node, nodes],
                np.r_[x_cols, over_cols],
                np.r_[d[item, r], -np.ones(n_nodes)],
                pb.soft_capacity[:, r],
            )
        rows.add(node, x_cols, d[item, r], pb.capacity[:, r])
        if pb.transient[r]:
            # Arrivals take the transient room for good; the initial items hold theirs.
            rows.add(node[away], x_cols[away], d[item[away], r], room[:, r])
    for b in range(n_bal):
        r1, r2 = (int(v) for v in pb.balance_resources[b])
        t = int(pb.balance_target[b])
        # slack >= t (C1 - U1) - (C2 - U2), i.e. -t U1 + U2 - slack <= C2 - t C1.
        rows.add(
            np.r_[node, nodes],
            np.r_[x_cols, bal0 + b * n_nodes + nodes],
            np.r_[-t * d[item, r1] + d[item, r2], -np.ones(n_nodes)],
            pb.capacity[:, r2] - t * pb.capacity[:, r1],
        )
    # One item of a group per node, where a group has two items that could share it.
    key = pb.group[item].astype(_I64) * n_nodes + node
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    shared = counts[inverse] > 1
    if shared.any():
        _, row = np.unique(key[shared], return_inverse=True)
        rows.add(row, x_cols[shared], np.ones(int(shared.sum())), np.ones(int(row.max()) + 1))
    # Items moved per group (its size less the shares at home) are at most the top
    # variable and the group limit.
    home = ~away
    sizes = np.bincount(pb.group, minlength=n_groups).astype(np.float64)
    if pb.group_move_weight > 0:
        rows.add(
            np.r_[pb.group[item[home]], np.arange(n_groups)],
            np.r_[x_cols[home], np.full(n_groups, top)],
            np.r_[-np.ones(int(home.sum())), -np.ones(n_groups)],
            -sizes,
        )
    if pb.group_move_limit is not None:
        rows.add(
            pb.group[item[home]],
            x_cols[home],
            -np.ones(int(home.sum())),
            pb.group_move_limit - sizes,
        )
    a_ub, b_ub = rows.matrix(n_cols)
    a_eq = sp.csr_matrix((np.ones(n_x), (item, x_cols)), shape=(n_items, n_cols))
    # Finite boxes on every column (each is implied by the hard capacity), so that any
    # dual vector gives a finite bound below.
    bounds = np.zeros((n_cols, 2))
    bounds[:n_x, 1] = 1.0
    bounds[over0:bal0, 1] = np.maximum(pb.capacity - pb.soft_capacity, 0).ravel()
    for b in range(n_bal):
        r1 = int(pb.balance_resources[b, 0])
        bounds[bal0 + b * n_nodes : bal0 + (b + 1) * n_nodes, 1] = (
            int(pb.balance_target[b]) * pb.capacity[:, r1]
        )
    bounds[top, 1] = max(1, int(sizes.max(initial=0)))
    res = scipy.optimize.linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=np.ones(n_items),
        bounds=bounds,
        method="highs",
        options={} if time_limit_s is None else {"time_limit": float(time_limit_s)},
    )
    if res.status == 1:
        return "time limit", None
    if res.status == 2:
        # The initial assignment is a feasible point of the relaxation when it is
        # feasible itself; an infeasible relaxation means it was not.
        return "infeasible", None
    if res.status != 0:
        return f"solver: {res.message}", None
    # The solver's optimum holds within its tolerances only. Weak duality gives a bound
    # that holds exactly: for any duals y <= 0 of the rows A x <= b and any z of the
    # equations, c x >= y b + z e + sum_j min(r_j lo_j, r_j hi_j) over the box, with
    # reduced costs r = c - A'y - E'z. The solver's duals make it the optimum, up to
    # rounding.
    y = np.minimum(res.ineqlin.marginals, 0.0)
    z = res.eqlin.marginals
    reduced = cost - a_ub.T @ y - a_eq.T @ z
    box = np.minimum(reduced * bounds[:, 0], reduced * bounds[:, 1])
    value = float(b_ub @ y + z.sum() + box.sum())
    return "optimal", value
