"""Honest baselines to measure the engine against (issue 3, part 8).

Three ways a team would place replicas without this library, each written as a competent
user would write it, not as a strawman:

* :func:`naive_cpsat`: the full CP-SAT model written straight against OR-Tools, one
  Boolean per (shard, node) pair, every hard constraint, the budget as constraints.
* :func:`one_move_greedy`: the classic balancer: repair, then repeatedly take the single
  best move from the most utilized node to the least utilized eligible one.
* :func:`rendezvous_remap`: highest-random-weight hashing of every shard onto the nodes,
  ignoring where replicas are today.

All three take a :class:`~placement.model.State` and the budget and targets of
:func:`placement.planner.plan` (keyword-only), and return a :class:`BaselineResult`: a
target node matrix of the same shape as ``state.placement.nodes`` (-1 for an empty slot)
with the solver's status and statistics. They never raise on an infeasible or too-large
instance: the status says what happened, and the caller judges the target with
:func:`placement.constraints.check` like any other placement. These are heuristics and a
naive exact model, fenced off from the engine: nothing in :mod:`placement.planner` uses
them.

Moves and bytes are counted as the plan's diff would count them: a target replica that is
not in the shard's current row is one move, of the shard's ``size_resource`` demand.

Examples
--------
>>> import placement
>>> st = placement.synthetic_state(20, 60, seed=3)
>>> res = one_move_greedy(st, target_imbalance=0.05)
>>> res.nodes.shape == st.placement.nodes.shape, placement.check(st, res.nodes).total
(True, 0)
>>> rendezvous_remap(st, seed=1).nodes.shape
(60, 3)
"""

from __future__ import annotations

import ctypes
import functools
import gc
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import check, node_load
from placement.errors import InvalidValueError
from placement.model import State
from placement.solvers.options import check_options

__all__ = [
    "BaselineResult",
    "moved_replicas",
    "naive_cpsat",
    "one_move_greedy",
    "rendezvous_remap",
]


@dataclass(frozen=True, eq=False)
class BaselineResult:
    """What a baseline returns.

    Attributes
    ----------
    nodes : ndarray of int32, shape (S, W)
        Target node of each slot, -1 for an empty slot; same shape as
        ``state.placement.nodes``. Replicas that stay keep their slot.
    status : str
        How the run ended (the CP-SAT status name, or the heuristic's stop reason).
    found : bool
        False when the baseline produced no placement of its own (``nodes`` is then the
        current placement, unchanged).
    stats : dict
        Times (``*_s``), counts and baseline-specific evidence; JSON-friendly.
    """

    nodes: np.ndarray
    status: str
    found: bool
    stats: dict[str, Any] = field(default_factory=dict)


# -- shared helpers ------------------------------------------------------------------------


def _final_mean(state: State) -> np.ndarray:
    """Mean utilization per resource once every shard is fully replicated on active nodes,
    shape (R,); 0 for a resource nobody demands. Pressure and goals are relative to it, as
    the interchange imbalance is."""
    c, s = state.cluster, state.shards
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    active_cap = c.capacity[c.active].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(active_cap > 0, total / active_cap, 0.0)


def _pressure(load: np.ndarray, capacity: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Highest utilization relative to the final mean, ``max_r load / capacity / mean_r``,
    per row of *load* (any leading shape). A positive load on zero capacity is +inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(
            capacity > 0,
            load / (capacity * np.where(mean > 0, mean, 1.0)),
            np.where(load > 0, np.inf, 0.0),
        )
    rel = np.where(mean > 0, rel, 0.0)
    return rel.max(axis=-1)


def _balance_goal(state: State, target_imbalance: float, trigger_imbalance: float | None) -> float:
    """Pressure at which balancing stops: ``1 + target``, or +inf when a trigger is given
    and the current placement is not above it (the planner's trigger semantics)."""
    if trigger_imbalance is None:
        return 1.0 + float(target_imbalance)
    c = state.cluster
    load = node_load(state, state.placement.nodes)
    cur = _pressure(load[c.active], c.capacity[c.active], _final_mean(state))
    worst = float(cur.max(initial=0.0)) - 1.0
    return 1.0 + float(target_imbalance) if worst > trigger_imbalance else math.inf


def moved_replicas(state: State, nodes: np.ndarray) -> tuple[int, float]:
    """Moves and bytes of going from the state's placement to *nodes*, counted as a plan's
    diff counts them: every target replica not in its shard's current row.

    Parameters
    ----------
    state : State
    nodes : ndarray of int, shape (S, W)

    Returns
    -------
    moves : int
    bytes_moved : float

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(20, 60, seed=3)
    >>> moved_replicas(st, st.placement.nodes)
    (0, 0.0)
    """
    cur = state.placement.nodes
    new = (nodes >= 0) & ~(nodes[:, :, None] == cur[:, None, :]).any(axis=2)
    per_shard = new.sum(axis=1)
    size = state.shards.demand[:, state.cluster.size_index]
    return int(per_shard.sum()), float((per_shard * size).sum())


def _into_slots(current: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Write each shard's chosen node set into its row so that replicas that stay keep
    their slot (a slot-wise diff then shows only real moves).

    *chosen* is (S, K) with -1 padding, at most W nodes per row. Returns a new (S, W)
    int32 matrix.
    """
    n_shards, width = current.shape
    if chosen.shape[1] < width:
        pad = np.full((n_shards, width - chosen.shape[1]), -1, dtype=chosen.dtype)
        chosen = np.concatenate([chosen, pad], axis=1)
    stays = (current >= 0) & (current[:, :, None] == chosen[:, None, :]).any(axis=2)
    arrives = (chosen >= 0) & ~(chosen[:, :, None] == current[:, None, :]).any(axis=2)
    out = np.where(stays, current, -1).astype(np.int32)
    free = out < 0
    # The k-th arriving node of a row goes to the row's k-th free slot.
    free_r, free_c = np.nonzero(free)
    arr_r, arr_c = np.nonzero(arrives)
    first_free = np.concatenate([[0], np.cumsum(free.sum(axis=1))])[:-1]
    first_arr = np.concatenate([[0], np.cumsum(arrives.sum(axis=1))])[:-1]
    rank = np.arange(arr_r.size) - first_arr[arr_r]
    out[arr_r, free_c[first_free[arr_r] + rank]] = chosen[arr_r, arr_c]
    return out


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux), or None where /proc is missing.

    CP-SAT builds its model in C++, out of tracemalloc's sight, so the model's memory is
    read as the growth of the resident set. Freed memory is first handed back to the
    system (``malloc_trim``), or an earlier model's pages would be reused unseen."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the figure may then undercount reused memory
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# -- 1. the naive CP-SAT model -------------------------------------------------------------

#: Integer resolution of the CP-SAT model: the largest capacity of each resource is this
#: many units. Demands are rounded up and limits down, so any CP-SAT-feasible placement
#: passes :func:`placement.constraints.check`; the error is below 1e-7 of a node.
_UNITS_PER_MAX_CAPACITY = 10_000_000
#: Utilization is measured in basis points (0.01%) in the balance term.
_BASIS_POINTS = 10_000


def naive_cpsat(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    target_imbalance: float = 0.02,
    trigger_imbalance: float | None = None,
    time_limit_s: float = 60.0,
    seed: int = 0,
    num_workers: int = 2,
    max_variables: int = 2_000_000,
    hint_current: bool = True,
    match_bytes: float | None = None,
    match_imbalance: float | None = None,
) -> BaselineResult:
    """The full placement model, written the way a user writes it with OR-Tools directly.

    Model
    -----
    * ``x[s, n]``: one Boolean per shard and node, for **every** node. The only pruning is
      the one a user writes as constraints: ``sum x[s, n] == 0`` over the inactive nodes
      and the nodes outside the shard's allowed regions. CP-SAT's presolve removes those
      variables again, but the model is built in Python and handed over in full: that is
      the cost this baseline measures.
    * ``sum_n x[s, n] == replicas[s]``; ``sum_{n in d} x[s, n] <= max_per_domain`` for each
      domain ``d`` at the policy's spread level that has more nodes than that; one Boolean
      per (shard, region) with ``y[s, g] <= sum_{n in g} x[s, n]`` and
      ``sum_g y[s, g] >= min(min_regions, replicas)``; ``x[s, n] == 1`` for pinned replicas.
    * ``load[n, r] == sum_s demand[s, r] x[s, n] <= headroom_r capacity[n, r]`` for each
      active node and resource, in integer units (demands rounded up, limits down).
    * Budget: ``moves = sum replicas - sum_{n in current(s)} x[s, n] <= max_moves`` and the
      same with bytes for ``max_bytes`` (what leaves is what the kept replicas do not cover;
      a competent user writes it this way rather than summing every non-current pair).

    Objective (lexicographic through one big weight, the planner's priorities): first the
    peak utilization above the balance goal, summed over resources, in basis points
    (``peak_r >= 10000 load[n, r] / capacity[n, r]``, ``excess_r >= peak_r - goal_r``,
    ``goal_r = (1 + target_imbalance) mean_r``); then the bytes moved. One basis point of
    excess outweighs every possible byte count, so an optimal answer reaches the goal when
    it can and then moves the fewest bytes: the same targets as :func:`plan`.

    Parameters
    ----------
    state : State
    max_moves, max_bytes, target_imbalance, trigger_imbalance, seed
        As :func:`placement.planner.plan`; the seed is CP-SAT's ``random_seed``.
    time_limit_s : float
        CP-SAT's limit (``max_time_in_seconds``). Building the model is not included; it is
        reported as ``stats["build_s"]``.
    num_workers : int
        CP-SAT search workers (default 2, the cores of the benchmark machine).
    max_variables : int
        Refuse to build a model with more ``x`` Booleans than this (status
        ``"MODEL_TOO_LARGE"``, with a message saying how many it would need).
    hint_current : bool
        Hint the current placement (OR-Tools' advice for re-optimization).
    match_bytes, match_imbalance : float, optional
        A reference quality (e.g. the engine's plan: bytes moved and its worst imbalance
        over the resources). ``stats["time_to_match_s"]`` is the solve time of the first
        solution at least as good in both (None if never). To ask CP-SAT for that quality,
        also pass ``target_imbalance=match_imbalance``.

    Returns
    -------
    BaselineResult
        ``status`` is the CP-SAT status name (``OPTIMAL``, ``FEASIBLE``, ``INFEASIBLE``,
        ``UNKNOWN``, ``MODEL_INVALID``) or ``MODEL_TOO_LARGE``. ``stats`` holds
        ``n_variables``, ``n_constraints``, ``build_s``, ``model_build_rss_mb``,
        ``solve_s``, ``first_solution_s``, ``time_to_match_s``, ``objective``,
        ``best_bound``, ``n_solutions`` and ``solutions`` (solve time, estimated bytes
        and worst imbalance of each incumbent, at most 50).

    Raises
    ------
    InvalidValueError
        A parameter is out of range.

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(15, 30, seed=3)
    >>> res = naive_cpsat(st, target_imbalance=0.3, time_limit_s=10)
    >>> res.found, placement.check(st, res.nodes).total
    (True, 0)
    >>> naive_cpsat(st, max_variables=100).status
    'MODEL_TOO_LARGE'
    """
    check_options(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        target_imbalance=target_imbalance,
        trigger_imbalance=trigger_imbalance,
        time_limit_s=time_limit_s,
    )
    if not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidValueError(f"num_workers must be a whole number >= 1, got {num_workers!r}.")
    t0 = time.perf_counter()
    c, s = state.cluster, state.shards
    current = state.placement.nodes
    n_shards, n_nodes, n_res = s.n_shards, c.n_nodes, c.n_resources
    n_x = n_shards * n_nodes
    stats: dict[str, Any] = {"n_x_variables": n_x, "num_workers": num_workers, "seed": seed}
    if n_x > max_variables:
        stats["message"] = (
            f"The naive model needs one Boolean per shard and node: {n_shards} x {n_nodes} = "
            f"{n_x} variables, above max_variables={max_variables}. Raise max_variables to try "
            "anyway (expect a long build and no solution), or use placement.planner.plan."
        )
        return BaselineResult(current.copy(), "MODEL_TOO_LARGE", False, stats)

    from ortools.sat.python import cp_model

    rss0 = _rss_bytes()
    goal = _balance_goal(state, target_imbalance, trigger_imbalance)
    mean = _final_mean(state)
    unit = np.maximum(np.maximum(c.capacity.max(axis=0), s.demand.max(axis=0, initial=0.0)), 1.0)
    unit = unit / _UNITS_PER_MAX_CAPACITY
    demand_u = np.ceil(s.demand / unit).astype(np.int64)
    limit_u = np.floor(c.capacity * state.headroom[None, :] / unit).astype(np.int64)
    cap_u = np.floor(c.capacity / unit).astype(np.int64)
    size_j = c.size_index
    size_u = demand_u[:, size_j]
    active = c.active
    region = c.region_of
    level = state.spread_level_index
    dom = c.domain_of[:, level]
    kmax = state.policy.max_per_domain
    allowed = s.allowed_regions
    required = np.minimum(state.policy.min_regions, s.replicas)

    model = cp_model.CpModel()
    x = [[model.new_bool_var("") for _ in range(n_nodes)] for _ in range(n_shards)]
    # The x variables are the model's first, so a solution's values read as one block.
    if n_x and x[-1][-1].index != n_x - 1:  # pragma: no cover - an OR-Tools change
        raise AssertionError("internal error: x variables are not the model's first")

    domains = [np.flatnonzero(dom == d).tolist() for d in range(len(c.domain_names[level]))]
    domains = [m for m in domains if len(m) > kmax]  # a smaller domain cannot overflow
    regions = [np.flatnonzero(region == g).tolist() for g in range(len(c.regions))]
    regions = [m for m in regions if m]
    forbidden_by_class = [
        np.flatnonzero(~active | ~allowed[k][region]).tolist() for k in range(allowed.shape[0])
    ]
    pinned = state.placement.pinned
    rep = s.replicas.tolist()
    for i in range(n_shards):
        xs = x[i]
        model.add(cp_model.LinearExpr.sum(xs) == rep[i])
        forbidden = forbidden_by_class[int(s.residency_class[i])]
        if forbidden:
            model.add(cp_model.LinearExpr.sum([xs[n] for n in forbidden]) == 0)
        for members in domains:
            model.add(cp_model.LinearExpr.sum([xs[n] for n in members]) <= kmax)
        if required[i] > 1:
            spans = []
            for members in regions:
                y = model.new_bool_var("")
                model.add(cp_model.LinearExpr.sum([xs[n] for n in members]) >= y)
                spans.append(y)
            model.add(cp_model.LinearExpr.sum(spans) >= int(required[i]))
        for j in np.flatnonzero(pinned[i]).tolist():
            model.add(xs[int(current[i, j])] == 1)

    # Capacity with headroom, and the peak utilization per resource (basis points).
    load_vars: dict[tuple[int, int], Any] = {}
    excess_vars = []
    for r in range(n_res):
        users = np.flatnonzero(demand_u[:, r] > 0)
        if users.size == 0:
            continue
        coeffs = demand_u[users, r].tolist()
        balance_r = math.isfinite(goal) and mean[r] > 0
        if balance_r:
            # Up to twice full: rounding may lift a tiny node a little past 100%.
            peak = model.new_int_var(0, 2 * _BASIS_POINTS, "")
        for n in np.flatnonzero(active).tolist():
            lim = int(limit_u[n, r])
            load = model.new_int_var(0, max(lim, 0), "")
            model.add(load == cp_model.LinearExpr.weighted_sum([x[i][n] for i in users], coeffs))
            load_vars[n, r] = load
            if balance_r and cap_u[n, r] > 0:
                model.add(_BASIS_POINTS * load <= peak * int(cap_u[n, r]))
        if balance_r:
            goal_bp = int(math.floor(_BASIS_POINTS * goal * mean[r]))
            if goal_bp < _BASIS_POINTS:
                excess = model.new_int_var(0, 2 * _BASIS_POINTS, "")
                model.add(excess >= peak - goal_bp)
                excess_vars.append(excess)

    # Moves and bytes through the kept replicas (see the docstring).
    kept_x, kept_size = [], []
    for i, j in zip(*np.nonzero(current >= 0), strict=True):
        n = int(current[i, j])
        if active[n]:
            kept_x.append(x[int(i)][n])
            kept_size.append(int(size_u[i]))
    total_replicas = int(s.replicas.sum())
    total_size_u = int((size_u * s.replicas).sum())
    moved_u = model.new_int_var(0, total_size_u, "")
    model.add(moved_u == total_size_u - cp_model.LinearExpr.weighted_sum(kept_x, kept_size))
    if max_moves is not None:
        model.add(total_replicas - cp_model.LinearExpr.sum(kept_x) <= int(max_moves))
    if max_bytes is not None:
        model.add(moved_u <= int(math.floor(max_bytes / unit[size_j])))
    weight = total_size_u + 1
    model.minimize(weight * cp_model.LinearExpr.sum(excess_vars) + moved_u)

    if hint_current:
        for var in kept_x:
            model.add_hint(var, 1)

    proto = model.proto
    stats["n_variables"] = len(proto.variables)
    stats["n_constraints"] = len(proto.constraints)
    build_s = time.perf_counter() - t0
    rss1 = _rss_bytes()
    stats["build_s"] = round(build_s, 3)
    stats["model_build_rss_mb"] = (
        round((rss1 - rss0) / 1e6, 1) if rss0 is not None and rss1 is not None else None
    )

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = int(seed)
    watcher = _incumbents_class()(
        state, load_vars, moved_u, unit, cap_u, mean, match_bytes, match_imbalance
    )
    t1 = time.perf_counter()
    status = solver.solve(model, watcher)
    solve_s = time.perf_counter() - t1
    name = solver.status_name(status)
    found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    stats.update(
        {
            "solve_s": round(solve_s, 3),
            "first_solution_s": watcher.first_s,
            "time_to_match_s": watcher.match_s,
            "n_solutions": watcher.count,
            "solutions": watcher.trace,
            "objective": solver.objective_value if found else None,
            "best_bound": solver.best_objective_bound if found else None,
        }
    )
    if not found:
        stats["message"] = f"CP-SAT ended {name} after {solve_s:.1f} s without a placement" + (
            " (the model is infeasible)." if status == cp_model.INFEASIBLE else "."
        )
        stats["total_s"] = round(time.perf_counter() - t0, 3)
        return BaselineResult(current.copy(), name, False, stats)

    values = np.fromiter(solver.response_proto.solution, dtype=np.int8, count=n_x)
    chosen_r, chosen_n = np.nonzero(values.reshape(n_shards, n_nodes))
    chosen = np.full((n_shards, current.shape[1]), -1, dtype=np.int64)
    rank = np.arange(chosen_r.size) - np.searchsorted(chosen_r, chosen_r)
    chosen[chosen_r, rank] = chosen_n
    nodes = _into_slots(current, chosen)
    stats["total_s"] = round(time.perf_counter() - t0, 3)
    return BaselineResult(nodes, name, True, stats)


@functools.cache
def _incumbents_class() -> type:
    """The solution callback's class, defined on first use so that OR-Tools is imported
    only when the CP-SAT baseline runs."""
    from ortools.sat.python import cp_model

    class Incumbents(cp_model.CpSolverSolutionCallback):  # type: ignore[misc]
        """Records when each incumbent arrives and how good it is (bytes, imbalance).

        Reads only the moved-bytes variable and the N x R load variables, so the callback
        stays cheap however many x Booleans the model has. The figures are in the model's
        rounded-up units, so they are upper estimates (never flattering the baseline).
        """

        def __init__(
            self,
            state: State,
            load_vars: dict[tuple[int, int], Any],
            moved_u: Any,
            unit: np.ndarray,
            cap_u: np.ndarray,
            mean: np.ndarray,
            match_bytes: float | None,
            match_imbalance: float | None,
        ) -> None:
            super().__init__()
            self.load_vars = load_vars
            self.moved_u = moved_u
            self.byte_unit = float(unit[state.cluster.size_index])
            self.cap_u = cap_u
            self.mean = mean
            self.resources = state.cluster.resources
            self.match_bytes = match_bytes
            self.match_imbalance = match_imbalance
            self.first_s: float | None = None
            self.match_s: float | None = None
            self.count = 0
            self.trace: list[dict[str, float]] = []

        def on_solution_callback(self) -> None:
            t = round(self.wall_time, 3)
            self.count += 1
            if self.first_s is None:
                self.first_s = t
            moved = self.value(self.moved_u) * self.byte_unit
            imb: dict[str, float] = {}
            for r, res in enumerate(self.resources):
                loads = [(n, self.value(v)) for (n, rr), v in self.load_vars.items() if rr == r]
                util = [lv / self.cap_u[n, r] for n, lv in loads if self.cap_u[n, r] > 0]
                if util and self.mean[r] > 0:
                    imb[res] = max(util) / self.mean[r] - 1
            if len(self.trace) < 50:
                self.trace.append(
                    {
                        "t_s": t,
                        "bytes_moved": float(moved),
                        "imbalance": float(max(imb.values(), default=0.0)),
                    }
                )
            if self.match_s is None and self._matches(moved, imb):
                self.match_s = t

        def _matches(self, moved: float, imb: Mapping[str, float]) -> bool:
            if self.match_bytes is None and self.match_imbalance is None:
                return False
            # The model's integer units round demand up by at most 1e-7 of the largest
            # node per replica: allow that much (0.1% of bytes, 0.001 of imbalance).
            if self.match_bytes is not None and moved > self.match_bytes * 1.001 + 1.0:
                return False
            worst = max(imb.values(), default=0.0)
            return self.match_imbalance is None or worst <= self.match_imbalance + 1e-3

    return Incumbents


# -- 2. the one-move-at-a-time greedy ------------------------------------------------------

#: Candidate targets examined per block, least utilized first.
_TARGET_BLOCK = 32
#: When a repair finds no room: nodes tried, replicas tried per node, and rounds.
_ROOM_NODES = 8
_ROOM_REPLICAS = 16
_ROOM_ATTEMPTS = 3


class _OneMove:
    """State of the classic balancer: the node matrix, loads and the budget spent.

    Private kernel: trusts its inputs (the public function validates them).
    """

    def __init__(
        self,
        state: State,
        max_moves: int | None,
        max_bytes: float | None,
        deadline: float,
    ) -> None:
        c, s = state.cluster, state.shards
        self.state = state
        self.orig = state.placement.nodes
        self.nodes = self.orig.astype(np.int64)
        self.pinned = state.placement.pinned
        self.demand = s.demand
        self.size = s.demand[:, c.size_index]
        self.load = node_load(state, self.nodes)
        self.cap = c.capacity
        self.limit = c.capacity * state.headroom[None, :]
        self.active = c.active
        self.alive = c.alive
        self.dom = c.domain_of[:, state.spread_level_index].astype(np.int64)
        self.n_dom = len(c.domain_names[state.spread_level_index])
        self.region = c.region_of.astype(np.int64)
        self.kmax = state.policy.max_per_domain
        self.required = np.minimum(state.policy.min_regions, s.replicas)
        self.node_ok = s.allowed_regions[:, self.region] & self.active[None, :]  # (classes, N)
        self.res_class = s.residency_class
        self.mean = _final_mean(state)
        self.moves_left = math.inf if max_moves is None else float(max_moves)
        self.bytes_left = math.inf if max_bytes is None else float(max_bytes)
        self.deadline = deadline
        self.n_repairs = 0
        self.n_balance = 0

    def pressure(self) -> np.ndarray:
        return _pressure(self.load, self.cap, self.mean)

    def cost(self, s: int, src: int, dst: int) -> tuple[int, float]:
        """Change of the diff's (moves, bytes) if shard s's replica goes src -> dst: a
        replica returning to a node it started on cancels an earlier move."""
        row = self.orig[s]
        d = int(dst not in row) - int(src >= 0 and src not in row)
        return d, d * float(self.size[s])

    def fits(self, dmoves: int, dbytes: float) -> bool:
        return dmoves <= self.moves_left and dbytes <= self.bytes_left * (1 + 1e-12)

    def move(self, s: int, j: int, dst: int) -> None:
        src = int(self.nodes[s, j])
        dmoves, dbytes = self.cost(s, src, dst)
        self.moves_left -= dmoves
        self.bytes_left -= dbytes
        if src >= 0:
            self.load[src] -= self.demand[s]
        self.load[dst] += self.demand[s]
        self.nodes[s, j] = dst

    # -- repairs -------------------------------------------------------------------------
    def targets(
        self, s: int, others: list[int], remaining: int, *, capacity: bool = True
    ) -> np.ndarray:
        """Nodes that may take one more replica of shard s, given the replicas that stay
        (*others*) and how many more slots are still to be filled after this one; with
        ``capacity=False``, ignoring only the room left on the node."""
        mask = self.node_ok[self.res_class[s]].copy()
        mask[self.nodes[s][self.nodes[s] >= 0]] = False
        if capacity:
            mask &= (self.load + self.demand[s] <= self.limit).all(axis=1)
        if others:
            counts = np.bincount(self.dom[others], minlength=self.n_dom)
            mask &= counts[self.dom] < self.kmax
            spanned = np.unique(self.region[others])
            if spanned.size + remaining < self.required[s]:
                mask &= ~np.isin(self.region, spanned)
        return mask

    def make_room(self, s: int, others: list[int], remaining: int) -> str | bool:
        """No node has room for a replica of shard s: free some, the way an operator would.

        Among the nodes that pass every rule but capacity (least utilized first), find the
        smallest replica whose departure makes enough room and that has a valid node to
        go to itself, and move it there. Returns True when a move was made, False when
        none was found, ``"budget"`` when the budget forbids it.
        """
        p = self.pressure()
        cand = np.flatnonzero(self.targets(s, others, remaining, capacity=False))
        for n in cand[np.argsort(p[cand], kind="stable")][:_ROOM_NODES].tolist():
            need = self.load[n] + self.demand[s] - self.limit[n]  # (R,), > 0 where short
            rows, cols = np.nonzero((self.nodes == n) & ~self.pinned)
            enough = (rows != s) & (self.demand[rows] >= need[None, :]).all(axis=1)
            by_size = np.flatnonzero(enough)[np.argsort(self.size[rows[enough]], kind="stable")]
            for k in by_size[:_ROOM_REPLICAS].tolist():
                t, jt = int(rows[k]), int(cols[k])
                kept = [
                    int(x)
                    for jj, x in enumerate(self.nodes[t].tolist())
                    if jj != jt and x >= 0 and self.alive[x]
                ]
                mask = self.targets(t, kept, 0)
                if not mask.any():
                    continue
                dst = int(np.argmin(np.where(mask, p, np.inf)))
                if not self.fits(*self.cost(t, n, dst)):
                    return "budget"
                self.move(t, jt, dst)
                self.n_repairs += 1
                return True
        return False

    def repair(self) -> str | None:
        """Move every replica that violates a rule, fewest live replicas first; create the
        missing ones. Returns a stop reason if the budget or the time ran out."""
        state = self.state
        v = check(state, self.nodes)
        present = self.nodes >= 0
        safe = np.where(present, self.nodes, 0)
        bad = present & ~self.pinned & ~self.node_ok[self.res_class[:, None], safe]
        for i, d, _ in v.spread.tolist():
            slots = np.flatnonzero(present[i] & (self.dom[safe[i]] == d) & self.alive[safe[i]])
            movable = [j for j in slots.tolist() if not self.pinned[i, j]]
            extra = max(len(slots) - self.kmax, 0)
            for j in movable[len(movable) - extra :] if extra else []:
                bad[i, j] = True
        # A shard spanning too few regions with nothing else to move: move one replica out
        # of its most crowded region (the region rule below then forces a new region).
        for i, _ in v.regions.tolist():
            if bad[i].any() or present[i].sum() < state.shards.replicas[i]:
                continue
            unpinned = np.flatnonzero(present[i] & ~self.pinned[i])
            if unpinned.size:
                regs = self.region[self.nodes[i, unpinned]]
                crowded = np.bincount(regs).argmax()
                bad[i, unpinned[regs == crowded][-1]] = True
        missing = np.maximum(state.shards.replicas - present.sum(axis=1), 0)
        todo = np.flatnonzero(bad.any(axis=1) | (missing > 0))
        # Fewest live replicas first; among equals, the shards with the fewest possible
        # nodes (residency), before the roomy ones take their space.
        choice = self.node_ok.sum(axis=1)[self.res_class[todo]]
        order = todo[np.lexsort((choice, v.live_count[todo]))]
        for i in order.tolist():
            if time.perf_counter() > self.deadline:
                return "time-limit"
            to_move = np.flatnonzero(bad[i]).tolist()
            empty = np.flatnonzero(~present[i]).tolist()[: int(missing[i])]
            pending = to_move + empty
            for k, j in enumerate(pending):
                others = [
                    int(self.nodes[i, jj])
                    for jj in range(self.nodes.shape[1])
                    if jj not in pending[k:] and self.nodes[i, jj] >= 0
                ]
                remaining = len(pending) - k - 1
                mask = self.targets(i, others, remaining)
                for _ in range(_ROOM_ATTEMPTS):
                    if mask.any():
                        break
                    made = self.make_room(i, others, remaining)
                    if made == "budget":
                        return "budget"
                    if not made:
                        break
                    mask = self.targets(i, others, remaining)
                if not mask.any():
                    continue  # unrepairable here: check() will report it
                p = self.pressure()
                dst = int(np.argmin(np.where(mask, p, np.inf)))
                src = int(self.nodes[i, j])
                if not self.fits(*self.cost(i, src, dst)):
                    return "budget"
                self.move(i, j, dst)
                self.n_repairs += 1
        return None

    # -- balancing -----------------------------------------------------------------------
    def _eligible(self, rows: np.ndarray, cols: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """May the replica in slot ``cols[k]`` of shard ``rows[k]`` move to node
        ``cand[t]``? Shape (K, T): active, allowed region, not already holding the shard,
        spread and regions kept without the moving replica, capacity with headroom."""
        k_idx = np.arange(rows.size)
        mask = self.node_ok[self.res_class[rows][:, None], cand[None, :]]
        row_nodes = self.nodes[rows]  # (K, W)
        mask &= ~(cand[None, :, None] == row_nodes[:, None, :]).any(axis=2)
        others = row_nodes.copy()
        others[k_idx, cols] = -1
        safe = np.where(others >= 0, others, 0)
        others = np.where((others >= 0) & self.alive[safe], others, -1)
        live = others >= 0
        odom = np.where(live, self.dom[safe], -1)
        mask &= (self.dom[cand][None, :, None] == odom[:, None, :]).sum(axis=2) < self.kmax
        oreg = np.where(live, self.region[safe], -1)
        srt = np.sort(oreg, axis=1)
        spanned = (
            (srt >= 0)
            & np.concatenate([np.ones((rows.size, 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
        ).sum(axis=1)
        need_new = spanned < self.required[rows]
        new_region = ~(self.region[cand][None, :, None] == oreg[:, None, :]).any(axis=2)
        mask &= ~need_new[:, None] | new_region
        fits = self.load[cand][None, :, :] + self.demand[rows][:, None, :] <= self.limit[cand][None]
        return mask & fits.all(axis=2)

    def balance_step(self, goal: float) -> str | None:
        """Take the single best move off the hottest node; a stop reason when there is none."""
        p = self.pressure()
        act = self.active
        over = act & (self.load > self.limit * (1 + 1e-9)).any(axis=1)
        hot_p = np.where(over if over.any() else act, p, -np.inf)
        src = int(np.argmax(hot_p))
        if not over.any() and p[src] <= goal:
            return "target-reached"
        rows, cols = np.nonzero((self.nodes == src) & ~self.pinned)
        if rows.size == 0:
            return "no-improving-move"
        dem = self.demand[rows]  # (K, R)
        # Classic rule: each replica goes to its least utilized eligible node. Walk the
        # nodes from the least utilized up, a block at a time, until every replica has
        # one: the answer of a full scan at a fraction of its cost (the coldest nodes
        # usually qualify).
        by_pressure = np.flatnonzero(self.active)
        by_pressure = by_pressure[np.argsort(p[by_pressure], kind="stable")]
        dst = np.full(rows.size, -1, dtype=np.int64)
        pending = np.arange(rows.size)
        for lo in range(0, by_pressure.size, _TARGET_BLOCK):
            block = by_pressure[lo : lo + _TARGET_BLOCK]
            if p[block[0]] >= p[src] and not over[src]:
                break  # no colder node is left: no move from src can lower its peak
            mask = self._eligible(rows[pending], cols[pending], block)
            hit = mask.any(axis=1)
            dst[pending[hit]] = block[mask[hit].argmax(axis=1)]
            pending = pending[~hit]
            if pending.size == 0:
                break
        has = dst >= 0
        dst = np.where(has, dst, src)
        src_after = _pressure(self.load[src][None, :] - dem, self.cap[src], self.mean)
        dst_after = _pressure(self.load[dst] + dem, self.cap[dst], self.mean)
        peak = np.maximum(src_after, dst_after)
        # A move must lower the pair's peak (for an overfull node: any move off it helps).
        improves = has & ((peak < p[src] - 1e-12) | over[src])
        if not improves.any():
            return "no-improving-move"
        order = np.lexsort((self.size[rows], peak))
        for k in order.tolist():
            if not improves[k]:
                continue
            if self.fits(*self.cost(int(rows[k]), src, int(dst[k]))):
                self.move(int(rows[k]), int(cols[k]), int(dst[k]))
                self.n_balance += 1
                return None
        return "budget"


def one_move_greedy(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    target_imbalance: float = 0.02,
    trigger_imbalance: float | None = None,
    time_limit_s: float = 10.0,
    seed: int = 0,
) -> BaselineResult:
    """The classic balancer: repair, then the single best move at a time.

    1. **Repairs**, shards with the fewest live replicas first (then those with the
       fewest allowed nodes): every replica on a failed or draining node, outside its
       allowed regions or beyond its domain's spread limit (and one replica of a shard
       spanning too few regions) goes to the least utilized node that keeps every hard
       constraint; missing replicas are created the same way. When no node has room, a
       smaller replica is first moved off a node that passes every other rule (what an
       operator does by hand).
    2. **Balance**: take the most utilized active node (one above headroom first); for
       each of its unpinned replicas find the least utilized eligible node; make the move
       that lowers the pair's peak the most (ties: the smaller replica); recompute the
       utilizations; repeat until the hottest node is within ``1 + target_imbalance`` of
       the mean, no move improves, the budget is spent or time is up.

    Utilization is the planner's pressure, ``max_r load / capacity / mean_r``, so the stop
    rule is the planner's. Each step checks the hot node's replicas against the nodes in
    order of utilization, a block of 32 nodes at a time in numpy, as a plain
    implementation would; there is no heap, no batching of moves, no look-ahead: the cost
    of one move at a time is what this baseline shows.

    Parameters
    ----------
    state : State
    max_moves, max_bytes, target_imbalance, trigger_imbalance, time_limit_s
        As :func:`placement.planner.plan`; the budget counts the diff (a replica moved
        twice is one move), repairs included.
    seed : int
        Recorded only: the greedy is deterministic.

    Returns
    -------
    BaselineResult
        ``status``: ``target-reached``, ``no-improving-move``, ``budget`` or
        ``time-limit``. Every move keeps every hard constraint, so when the repairs fit the
        budget the target passes :func:`placement.constraints.check`.

    Raises
    ------
    InvalidValueError
        A parameter is out of range.

    Examples
    --------
    >>> import placement
    >>> from placement.scenarios import with_node_state
    >>> st = with_node_state(placement.synthetic_state(20, 60, seed=3), ["us-east-a-n000"],
    ...                      "failed")
    >>> res = one_move_greedy(st, trigger_imbalance=10.0)
    >>> res.status, placement.check(st, res.nodes).total
    ('target-reached', 0)
    """
    check_options(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        target_imbalance=target_imbalance,
        trigger_imbalance=trigger_imbalance,
        time_limit_s=time_limit_s,
    )
    t0 = time.perf_counter()
    goal = _balance_goal(state, target_imbalance, trigger_imbalance)
    eng = _OneMove(state, max_moves, max_bytes, t0 + float(time_limit_s))
    stop = eng.repair()
    t_repair = time.perf_counter() - t0
    while stop is None:
        if time.perf_counter() > eng.deadline:
            stop = "time-limit"
            break
        stop = eng.balance_step(goal)
    nodes = eng.nodes.astype(np.int32)
    return BaselineResult(
        nodes,
        stop,
        True,
        {
            "repair_moves": eng.n_repairs,
            "balance_moves": eng.n_balance,
            "repair_s": round(t_repair, 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "seed": seed,
        },
    )


# -- 3. rendezvous (highest-random-weight) remapping ----------------------------------------

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _fnv1a64(ids: np.ndarray) -> np.ndarray:
    """FNV-1a 64-bit hash of each string (over its code points), vectorized.

    Stable across runs and array widths (unlike Python's salted ``hash``), so a node or
    shard keeps its hash whatever else is in the cluster."""
    ids = np.asarray(ids, dtype=str)
    if ids.size == 0:
        return np.zeros(0, dtype=np.uint64)
    width = max(ids.dtype.itemsize // 4, 1)
    codes = np.ascontiguousarray(ids).view(np.uint32).reshape(ids.size, width).astype(np.uint64)
    length = np.char.str_len(ids)
    h = np.full(ids.size, _FNV_OFFSET, dtype=np.uint64)
    for k in range(width):
        live = k < length
        h = np.where(live, (h ^ codes[:, k]) * _FNV_PRIME, h)
    return h


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective scramble of 64-bit keys (uint64 wraps)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def rendezvous_remap(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    target_imbalance: float = 0.02,
    trigger_imbalance: float | None = None,
    time_limit_s: float = 10.0,
    seed: int = 0,
    candidates: int | None = None,
) -> BaselineResult:
    """Remap every shard by weighted rendezvous (highest-random-weight) hashing.

    Each (shard, node) pair gets a pseudo-random ``u`` in (0, 1) from a hash of the shard
    id, the node id and the seed; node n's key is ``-ln(u) / w_n`` with ``w_n`` the node's
    capacity of the size resource (the logarithmic method of weighted rendezvous: the
    smallest key wins with probability ``w_n / sum w``). Each shard walks its nodes in key
    order and takes a node unless it is inactive, outside the shard's allowed regions,
    would exceed ``max_per_domain`` in its domain, or would leave too few slots to reach
    ``min_regions``; pinned replicas on active nodes are kept and count first.

    This is the "remap everything by hashing" baseline: it ignores the current placement
    (so it moves a lot), and it ignores capacity, the budget and the balance target, which
    are accepted only for a common signature. Capacity overflows are not hidden:
    :func:`placement.constraints.check` reports them, and ``stats`` says whether the budget
    would have been kept. Adding a node changes only the shards that rank it among their
    first choices (about ``w_new / sum w`` of the replicas).

    Parameters
    ----------
    state : State
    max_moves, max_bytes, target_imbalance, trigger_imbalance, time_limit_s
        Accepted for the common signature; not used to decide anything.
    seed : int
        Mixed into every hash: the same seed gives the same target.
    candidates : int, optional
        How many best-ranked nodes each shard looks at before a full sort (default
        ``4 x width + 4``); a shard whose walk needs more falls back to all nodes.

    Returns
    -------
    BaselineResult
        ``status`` ``"done"``; ``stats["within_budget"]``, ``stats["fallback_shards"]``,
        ``stats["unfilled_replicas"]``.

    Raises
    ------
    InvalidValueError
        A parameter is out of range.

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(20, 60, seed=3)
    >>> a, b = rendezvous_remap(st, seed=5), rendezvous_remap(st, seed=5)
    >>> bool((a.nodes == b.nodes).all())
    True
    """
    check_options(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        target_imbalance=target_imbalance,
        trigger_imbalance=trigger_imbalance,
        time_limit_s=time_limit_s,
    )
    t0 = time.perf_counter()
    c, s = state.cluster, state.shards
    n_shards, n_nodes = s.n_shards, c.n_nodes
    current = state.placement.nodes
    width = current.shape[1]
    weight = c.capacity[:, c.size_index]
    usable = c.active & (weight > 0)
    node_key = _mix64(_fnv1a64(np.array(c.node_ids)) ^ _mix64(np.array([seed], np.uint64)))
    shard_key = _fnv1a64(s.ids)
    # Nodes a residency class may use at all; keys of the others are +inf.
    class_ok = s.allowed_regions[:, c.region_of] & usable[None, :]
    with np.errstate(divide="ignore"):
        inv_w = np.where(usable, 1.0 / weight, np.inf)
    dom = c.domain_of[:, state.spread_level_index].astype(np.int64)
    region = c.region_of.astype(np.int64)
    kmax = state.policy.max_per_domain
    required = np.minimum(state.policy.min_regions, s.replicas)
    k_top = min(n_nodes, candidates if candidates is not None else 4 * width + 4)

    chosen = np.full((n_shards, width), -1, dtype=np.int64)
    # Pinned replicas on active nodes stay; they count toward spread and regions first.
    pin_ok = state.placement.pinned & (current >= 0)
    pin_ok &= c.active[np.where(current >= 0, current, 0)]
    pin_r, pin_c = np.nonzero(pin_ok)
    count = np.bincount(pin_r, minlength=n_shards).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(count)])[:-1]
    chosen[pin_r, np.arange(pin_r.size) - first[pin_r]] = current[pin_r, pin_c]

    chunk = max(1, (1 << 21) // max(n_nodes, 1))
    fallback = 0
    for lo in range(0, n_shards, chunk):
        hi = min(lo + chunk, n_shards)
        rows = np.arange(lo, hi)
        z = _mix64(shard_key[rows, None] ^ node_key[None, :])
        u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))
        key = -np.log(u) * inv_w[None, :]
        key[~class_ok[s.residency_class[rows]]] = np.inf
        if k_top < n_nodes:
            top = np.argpartition(key, k_top - 1, axis=1)[:, :k_top]
        else:
            top = np.broadcast_to(np.arange(n_nodes), key.shape).copy()
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, 1), axis=1), 1)
        top_key = np.take_along_axis(key, top, 1)
        _walk(chosen, count, rows, top, top_key, s.replicas, required, dom, region, kmax)
        short = rows[count[rows] < s.replicas[rows]]
        if short.size and k_top < n_nodes:
            # Rare: the first k_top nodes did not fill the shard; walk its full ranking.
            fallback += int(short.size)
            sub = key[short - lo]
            full = np.argsort(sub, axis=1)
            _walk(
                chosen,
                count,
                short,
                full,
                np.take_along_axis(sub, full, 1),
                s.replicas,
                required,
                dom,
                region,
                kmax,
            )
    nodes = _into_slots(current, chosen)
    moves, bytes_moved = moved_replicas(state, nodes)
    within = (max_moves is None or moves <= max_moves) and (
        max_bytes is None or bytes_moved <= max_bytes * (1 + 1e-12)
    )
    return BaselineResult(
        nodes,
        "done",
        True,
        {
            "total_s": round(time.perf_counter() - t0, 3),
            "within_budget": bool(within),
            "fallback_shards": fallback,
            "unfilled_replicas": int((s.replicas - count).clip(min=0).sum()),
            "seed": seed,
        },
    )


def _walk(
    chosen: np.ndarray,
    count: np.ndarray,
    rows: np.ndarray,
    order: np.ndarray,
    order_key: np.ndarray,
    replicas: np.ndarray,
    required: np.ndarray,
    dom: np.ndarray,
    region: np.ndarray,
    kmax: int,
) -> None:
    """Walk each row's ranked nodes, taking those that keep spread and min_regions.

    Updates *chosen* and *count* in place for the shards *rows*; ``order`` (len(rows), K)
    lists node indices best first, ``order_key`` their keys (+inf: never eligible)."""
    idx = np.arange(rows.size)
    need = replicas[rows]
    req = required[rows]
    for k in range(order.shape[1]):
        open_ = count[rows] < need
        if not open_.any():
            break
        cand = order[:, k]
        mine = chosen[rows]  # (n, W)
        have = mine >= 0
        safe = np.where(have, mine, 0)
        ok = open_ & np.isfinite(order_key[:, k]) & ~(mine == cand[:, None]).any(axis=1)
        same_dom = (have & (dom[safe] == dom[cand][:, None])).sum(axis=1)
        ok &= same_dom < kmax
        regs = np.where(have, region[safe], -1)
        srt = np.sort(regs, axis=1)
        spanned = (
            (srt >= 0)
            & np.concatenate([np.ones((rows.size, 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
        ).sum(axis=1)
        is_new = ~(have & (region[safe] == region[cand][:, None])).any(axis=1)
        left_after = need - count[rows] - 1
        ok &= spanned + is_new + left_after >= req
        take = idx[ok]
        chosen[rows[take], count[rows[take]]] = cand[take]
        count[rows[take]] += 1
