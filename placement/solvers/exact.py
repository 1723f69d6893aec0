"""Exact mode: the placement problem as a CP-SAT model, solved lexicographically.

Private kernel with two thin public entry points (:func:`solve_exact`, :func:`plan_exact`)
and one for large-neighbourhood search (:func:`solve_subproblem`). The hard constraints are
those of :func:`placement.constraints.check`; every solution is re-checked there.

The model
---------
* One Boolean ``x[s, n]`` per shard and *eligible* node: active, in an allowed region of
  the shard. Draining and failed nodes, and nodes outside a shard's residency, get no
  variable at all, so those rules hold by construction. ``x[s, n]`` for a node that holds
  ``s`` today is a *keep* variable; any other is a *move* (a replica copied to ``n``).
* ``sum_n x[s, n] == replicas[s]``; at most ``max_per_domain`` per domain at the spread
  level; region indicators ``y[s, g] <= sum_{n in g} x[s, n]`` with
  ``sum_g y[s, g] >= min(min_regions, replicas)``; ``sum_s demand[s, r] x[s, n] <=
  headroom_r capacity[n, r]``; pinned replicas fixed to 1; the budgets (moves, bytes, moves
  into or out of each node, moves per group) as linear sums of move and keep variables.

The objective, lexicographic (three solves on the same model, each stage fixing the
optimum of the one before as a constraint):

1. **balance**: ``z``, the largest weighted excess of a node's utilization over
   ``(1 + target_imbalance)`` times the cluster mean, over active nodes and resources of
   positive weight, in units of ``1 / PRESSURE_STEPS`` of the mean. ``z == 0`` means
   every such resource is within the target; otherwise the peak weighted pressure is as
   low as possible.
2. **bytes moved**: the ``size_resource`` demand of every move.
3. **transfer cost**: :func:`placement.plan.transfer_cost` of every move (skipped when no
   link has a cost).

Strengthening (each proven in tests/test_exact.py to cut off no optimum)
-------------------------------------------------------------------------
* Symmetry breaking: active nodes that are interchangeable (same capacity, region and
  spread domain, holding nothing now or before: typically new nodes) get their size
  loads ordered; the hint is relabelled to respect the order.
* Redundant cardinality cuts per node (see ``_Model._cover_cuts``): at most as many
  replicas as the smallest ones that fit; tightens the LP bound on moves and bytes.
* After the bytes stage, when the optimum is the unavoidable minimum (only lost, missing
  or ineligible replicas move), every keepable replica is fixed in place for the cost
  stage (``_Model.fix_keeps_if_minimal``); a consequence of the proven optimum.

LP polishing (``polish=True``; adds starts and a bound, never a constraint)
--------------------------------------------------------------------------
On balance scenarios the gap left by the plain search is mostly the incumbent, not the
bound: at 20 nodes x 2,000 shards (rebalance to 2%) one sequential worker keeps the
engine's plan (36.31 M bytes units) for 60 s, while a MIP solver finds 33.05 M and proves
no more than the LP bound (32.21 M) either. So each stage of :func:`solve_exact` (the
transfer-cost stage: only the last step, its LP is slow and far too weak to help):

* solves the LP relaxation of the stage with HiGHS (:func:`_relax`, 2 s there) and keeps
  its Lagrangian bound, recomputed from the duals with a float-error envelope, so the
  reported bound is valid whatever the LP solver's tolerances;
* when that bound does not already prove the hint, dives (:func:`_lp_dive`): on a copy
  of the model, every shard the LP places integrally is fixed there and the rest (28
  shards in that case) is searched (when that rounding cannot be completed, RINS: the
  pairs where LP and hint agree are fixed); the result, if better, becomes the hint;
* searches the stage with one worker in CP-SAT's interleaved mode, the LP tree search
  taking turns with large-neighbourhood steps (a sequential solve never runs LNS).

The bounds, proofs of repairs and every constraint are those of the model; polishing
cannot cut off an optimum (tests/test_exact.py compares it with the plain model and with
enumeration). What the measurements ruled out is listed in :func:`_run`.

Integer scaling
---------------
CP-SAT needs integers. Per resource we pick a unit: when every demand is a whole number
(bytes usually are) the unit is their greatest common divisor and the model is exact;
otherwise it is ``1 / 2**28`` of the largest node limit, demands are rounded *up* and
limits *down*, so whatever the model accepts :func:`~placement.constraints.check` accepts
too (the model may reject a placement within about ``replicas per node / 2**28`` of a
limit). Bytes in the objective are rounded to ``1 / 2**20`` of the largest shard unless
exact, so two plans closer than that may be ranked either way.

Determinism
-----------
With a fixed ``seed`` and ``workers``, CP-SAT follows the same search path: with one
worker the search is sequential, and with several we set ``interleave_search`` (CP-SAT's
deterministic parallel mode). A wall-clock ``time_limit_s`` that cuts a search short
stops it at a load-dependent point, so the same answer is guaranteed only for runs that
end with a proof (OPTIMAL or INFEASIBLE) before the limit, or when ``deterministic_time``
(CP-SAT's work-based limit) is used instead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from placement.constraints import check, node_load
from placement.errors import InfeasibleError, InvalidValueError
from placement.model import EMPTY, NodeState, State
from placement.plan import REASONS, Plan, transfer_cost
from placement.solvers.options import check_options

__all__ = [
    "PRESSURE_STEPS",
    "ExactResult",
    "infeasible_core",
    "plan_exact",
    "solve_exact",
    "solve_subproblem",
]

#: Resolution of the balance objective: one step is 1/10,000 of the cluster mean.
PRESSURE_STEPS = 10_000

_STATUS = {
    cp_model.OPTIMAL: "OPTIMAL",
    cp_model.FEASIBLE: "FEASIBLE",
    cp_model.INFEASIBLE: "INFEASIBLE",
    cp_model.UNKNOWN: "UNKNOWN",
    cp_model.MODEL_INVALID: "MODEL_INVALID",
}
# Steps per node limit when demands are not whole numbers (see "Integer scaling").
_FINE_STEPS = float(2**28)
_OBJ_STEPS = float(2**20)
# Share of a polished stage's time for the LP dive (see _run); the LP itself may take up
# to a quarter. At 20 x 2,000 rebalance the dive's 28-shard neighbourhood is at 33.10 M
# units after 13 s (0.3 of the stage) and the whole-model LNS then reaches 33.00 M.
_DIVE_SHARE = 0.3


@dataclass(frozen=True, eq=False)
class ExactResult:
    """What the exact solver found, with its proof status.

    Attributes
    ----------
    nodes : ndarray of int32, shape (S, W), or None
        Target placement (kept replicas stay in their slots); None when no solution.
    status : str
        ``"OPTIMAL"`` (every stage proven), ``"FEASIBLE"`` (a valid placement, not proven
        best), ``"INFEASIBLE"`` (proven: no placement meets every hard constraint and
        budget) or ``"UNKNOWN"`` (no solution within the time limit).
    objective : dict
        ``excess_pressure`` (stage 1, largest weighted utilization over the target,
        relative to the mean; 0 when within target), ``bytes_moved``, ``transfer_cost``
        of the solution, computed in floating point from the placement.
    bound : dict
        Best proven lower bounds: ``excess_pressure`` over every placement, and
        ``bytes_moved`` / ``transfer_cost`` over placements at least as balanced as the
        solution's stage-1 value (as the lexicographic order defines it).
    gap : float or None
        Relative gap ``(bytes - bound) / bytes`` of the bytes stage (0 when proven; None
        without a solution).
    time_s : float
        Wall-clock time, model building included.
    stages : tuple of dict
        Per stage: name, status, integer objective and bound, time; with polishing also
        ``lp_bound`` (the LP relaxation's safe bound, model units), ``lp_s`` and ``dive``
        (the objective of the LP dive's start) when they ran.
    stats : dict
        Model size and scaling facts.
    """

    nodes: np.ndarray | None
    status: str
    objective: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    gap: float | None = None
    time_s: float = 0.0
    stages: tuple[dict[str, Any], ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Problem data: numpy only, no solver objects.
# ---------------------------------------------------------------------------------------
@dataclass
class _Budget:
    max_moves: int | None = None
    max_bytes: float | None = None
    max_moves_per_node: int | None = None
    max_moves_per_group: int | None = None


@dataclass
class _Data:
    """Everything the CP-SAT model needs, as arrays over candidate (shard, node) pairs."""

    state: State
    start: np.ndarray  # (S, W) placement the search starts from (fixed outside the subset)
    free_shards: np.ndarray  # (F,) shard indices optimized
    free_node: np.ndarray  # (N,) bool
    pair_s: np.ndarray  # (P,) shard index
    pair_n: np.ndarray  # (P,) node index
    pair_keep: np.ndarray  # (P,) bool: the node holds the shard in the original placement
    pair_bytes: np.ndarray  # (P,) float bytes if the pair is a move (0 for keeps)
    pair_cost: np.ndarray  # (P,) float transfer cost if a move
    need: dict[int, int]  # free shard -> replicas to place on free nodes
    fixed_rows: dict[int, list[int]]  # free shard -> nodes kept fixed (outside node subset)
    pinned_pairs: list[tuple[int, int]]
    infeasible_reason: str | None
    unit: np.ndarray  # (R,) value of one integer step per resource
    exact_units: np.ndarray  # (R,) bool
    d_int: np.ndarray  # (S, R) int64 demand in units (only free shards' rows used)
    lim_int: np.ndarray  # (N, R) int64 free limit in units for free active nodes
    # Balance rows: for (node, resource): G * sum d_int x - B z <= A.
    bal_n: np.ndarray
    bal_r: np.ndarray
    bal_g: np.ndarray
    bal_a: np.ndarray
    bal_b: np.ndarray
    z_fixed: int
    z_max: int
    mean: np.ndarray  # (R,)
    weights: np.ndarray  # (R,)
    target: float
    budget: _Budget
    const_moves: int
    const_bytes: float
    const_node_moves: np.ndarray  # (N,) int
    const_group_moves: np.ndarray  # (G,) int
    bytes_unit: float
    bytes_exact: bool
    cost_unit: float
    sym_classes: list[np.ndarray]


def _units(demand: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer unit per resource: the gcd of whole-number demands, else a fine grid."""
    n_res = demand.shape[1]
    unit = np.ones(n_res)
    exact = np.zeros(n_res, dtype=bool)
    for r in range(n_res):
        d = demand[:, r]
        nz = d[d > 0]
        top = float(max(limits[:, r].max(initial=0.0), nz.max(initial=0.0)))
        if nz.size == 0:
            unit[r], exact[r] = max(top, 1.0) / _FINE_STEPS, False
            continue
        if np.all(nz == np.round(nz)) and nz.max() < 2.0**52:
            g = float(np.gcd.reduce(nz.astype(np.int64)))
            # Exact only while the numbers stay small enough for CP-SAT's int64 sums.
            if top / g <= 2.0**40:
                unit[r], exact[r] = g, True
                continue
        unit[r] = max(top, 1.0) / _FINE_STEPS
    return unit, exact


def _to_units(values: np.ndarray, unit: float, exact: bool, *, up: bool) -> np.ndarray:
    q = np.asarray(values, dtype=np.float64) / unit
    if exact and up:
        return np.rint(q).astype(np.int64)  # a whole multiple of the unit
    # Rounding demand up and limits down keeps every model solution valid in floats; the
    # 1e-9 forgives float noise in a quotient that is a whole number.
    return (np.ceil(q - 1e-9) if up else np.floor(q + 1e-9)).astype(np.int64)


def _prepare(
    state: State,
    start: np.ndarray,
    free_shards: np.ndarray,
    free_node: np.ndarray,
    budget: _Budget,
    target: float,
    weights: np.ndarray,
) -> _Data:
    c, s = state.cluster, state.shards
    orig = state.placement.nodes
    n_nodes, n_res = c.n_nodes, c.n_resources
    active, alive = c.active, c.alive
    size_j = c.size_index
    size = s.demand[:, size_j]
    is_free_shard = np.zeros(s.n_shards, dtype=bool)
    is_free_shard[free_shards] = True

    # The part that stays as it is: non-free shards, and free shards' replicas on nodes
    # outside the subset (replicas on failed nodes are lost and never kept).
    fixed = start.copy()
    fs_rows = fixed[free_shards]
    drop = (fs_rows >= 0) & (free_node[np.maximum(fs_rows, 0)] | ~alive[np.maximum(fs_rows, 0)])
    fs_rows[drop] = EMPTY
    fixed[free_shards] = fs_rows
    bg_load = node_load(state, fixed)

    limit = c.capacity * state.headroom[None, :]
    unit, exact = _units(s.demand[free_shards], limit[active] if active.any() else limit)
    d_int = np.zeros((s.n_shards, n_res), dtype=np.int64)
    lim_int = np.zeros((n_nodes, n_res), dtype=np.int64)
    for r in range(n_res):
        d_int[free_shards, r] = _to_units(s.demand[free_shards, r], unit[r], exact[r], up=True)
        # The 1e-12 slack only absorbs the float error of headroom x capacity; check()
        # itself tolerates 1e-9.
        lim_int[:, r] = _to_units(
            limit[:, r] * (1 + 1e-12) - bg_load[:, r], unit[r], exact[r], up=False
        )

    # Candidate pairs: free shard x free active node in an allowed region.
    allowed = s.allowed_regions[s.residency_class[free_shards]][:, c.region_of]  # (F, N)
    cand = allowed & (active & free_node)[None, :]
    fi, pair_n = np.nonzero(cand)
    pair_s = free_shards[fi]
    in_orig = (orig[pair_s] == pair_n[:, None]).any(axis=1)
    pair_bytes = np.where(in_orig, 0.0, size[pair_s])

    # Transfer cost of each potential move: cheapest live original replica's region.
    per_gb = c.region_graph.cost_per_gb
    o_rows = orig[free_shards]
    o_live = (o_rows >= 0) & alive[np.maximum(o_rows, 0)]
    o_reg = c.region_of[np.maximum(o_rows, 0)]
    n_regions = len(c.regions)
    cheapest = np.full((len(free_shards), n_regions), np.inf)
    for j in range(o_rows.shape[1]):
        cost_j = np.where(o_live[:, j, None], per_gb[o_reg[:, j]], np.inf)
        cheapest = np.minimum(cheapest, cost_j)
    cheapest[~np.isfinite(cheapest)] = 0.0
    pair_cost = np.where(in_orig, 0.0, size[pair_s] / 1e9 * cheapest[fi, c.region_of[pair_n]])

    need: dict[int, int] = {}
    fixed_rows: dict[int, list[int]] = {}
    for k, sh in enumerate(free_shards.tolist()):
        kept = [int(n) for n in fs_rows[k] if n >= 0]
        fixed_rows[sh] = kept
        need[sh] = int(s.replicas[sh]) - len(kept)

    infeasible_reason = None
    pinned_pairs: list[tuple[int, int]] = []
    ps, pj = np.nonzero(state.placement.pinned & is_free_shard[:, None])
    pair_index = {
        (a, b): i for i, (a, b) in enumerate(zip(pair_s.tolist(), pair_n.tolist(), strict=True))
    }
    for sh, j in zip(ps.tolist(), pj.tolist(), strict=True):
        n = int(orig[sh, j])
        if not alive[n]:
            continue  # a pinned replica on a failed node is lost: nothing to keep
        if free_node[n]:
            if (sh, n) not in pair_index:
                infeasible_reason = (
                    f"shard {s.ids[sh]!r} is pinned on node {c.node_ids[n]!r}, which is "
                    "not active or not in an allowed region"
                )
            else:
                pinned_pairs.append((sh, n))
        elif n not in fixed_rows.get(sh, []):
            infeasible_reason = f"pinned replica of {s.ids[sh]!r} is not in the start placement"

    # Balance: mean utilization of the final state (every shard fully replicated on
    # active nodes), the same mean the greedy engine balances against.
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    act_cap = c.capacity[active].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(act_cap > 0, total / act_cap, 0.0)
    bal_rows: list[tuple[int, int, int, int, int]] = []
    z_fixed = 0
    z_max = 0
    steps = PRESSURE_STEPS
    for r in range(n_res):
        if weights[r] <= 0 or mean[r] <= 0:
            continue
        w = float(weights[r])
        # Nodes outside the subset keep their load: their excess is a floor for z.
        others = active & ~free_node & (c.capacity[:, r] > 0)
        if others.any():
            p = w * bg_load[others, r] / (c.capacity[others, r] * mean[r]) - (1 + target)
            z_fixed = max(z_fixed, math.ceil(steps * float(p.max()) - 1e-6))
        top = w * float(state.headroom[r]) / mean[r] - (1 + target)
        z_max = max(z_max, math.ceil(steps * max(top, 0.0)) + 1)
        for n in np.flatnonzero(active & free_node & (c.capacity[:, r] > 0)).tolist():
            cap_mean = float(c.capacity[n, r] * mean[r])
            # load <= cap*mean*((1+t) + z/steps)/w, in demand units, scaled by an integer
            # g so that one z step is about 1e6: relative rounding error 1e-6 of a step.
            a = (cap_mean * (1 + target) / w - bg_load[n, r]) / unit[r]
            b = cap_mean / (w * steps * unit[r])
            g = max(1, round(1e6 / b))
            # The 1e-3 (a billionth of a z step) absorbs float error in g*a, so that a
            # load exactly at the target is z = 0, not 1.
            bal_rows.append((n, r, g, math.floor(g * a + 1e-3), max(1, round(g * b))))
    z_fixed = max(z_fixed, 0)
    z_max = max(z_max, z_fixed)
    bal = np.array(bal_rows, dtype=np.int64).reshape(-1, 5)

    # Budget usage of the fixed part: replicas in `fixed` that the original lacks, and
    # original replicas on alive nodes that `fixed` dropped, outside the free pairs.
    n_groups = max(len(s.group_names), 1)
    const_node = np.zeros(n_nodes, dtype=np.int64)
    const_group = np.zeros(n_groups, dtype=np.int64)
    new_in_fixed = (fixed >= 0) & ~(fixed[:, :, None] == orig[:, None, :]).any(axis=2)
    rows, cols = np.nonzero(new_in_fixed)
    const_moves = int(rows.size)
    const_bytes = float(size[rows].sum())
    np.add.at(const_node, fixed[rows, cols], 1)
    grp = s.group[rows]
    np.add.at(const_group, grp[grp >= 0], 1)
    gone = (orig >= 0) & ~(orig[:, :, None] == fixed[:, None, :]).any(axis=2)
    gone &= alive[np.maximum(orig, 0)]
    # Original replicas of free shards on free nodes are decided by the model.
    gone[free_shards] &= ~free_node[np.maximum(orig[free_shards], 0)]
    rows, cols = np.nonzero(gone)
    np.add.at(const_node, orig[rows, cols], 1)

    # Interchangeable nodes: same capacity, region and spread domain, active, in the
    # subset, holding nothing now or before. Any solution stays a solution with the same
    # objective when their contents are permuted, so their loads may be ordered.
    level = state.spread_level_index
    holds = np.zeros(n_nodes, dtype=bool)
    holds[orig[orig >= 0]] = True
    holds[start[start >= 0]] = True
    blank = active & free_node & ~holds & (bg_load == 0).all(axis=1) & (const_node == 0)
    sym_classes: list[np.ndarray] = []
    if blank.sum() >= 2:
        idx = np.flatnonzero(blank)
        keys = np.column_stack([c.capacity[idx], c.domain_of[idx, 0], c.domain_of[idx, level]])
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        for k in np.unique(inverse):
            members = idx[inverse.ravel() == k]
            if members.size >= 2:
                sym_classes.append(members)

    sz = size[free_shards]
    bytes_exact = bool(np.all(sz == np.round(sz)) and sz.max(initial=0) < 2.0**40)
    bytes_unit = 1.0 if bytes_exact else max(float(sz.max(initial=0.0)), 1.0) / _OBJ_STEPS
    if bytes_exact and sz.size and (sz > 0).any():
        bytes_unit = float(np.gcd.reduce(sz[sz > 0].astype(np.int64)))
    cost_unit = max(float(pair_cost.max(initial=0.0)), 1e-12) / _OBJ_STEPS

    return _Data(
        state=state,
        start=start,
        free_shards=free_shards,
        free_node=free_node,
        pair_s=pair_s,
        pair_n=pair_n,
        pair_keep=in_orig,
        pair_bytes=pair_bytes,
        pair_cost=pair_cost,
        need=need,
        fixed_rows=fixed_rows,
        pinned_pairs=pinned_pairs,
        infeasible_reason=infeasible_reason,
        unit=unit,
        exact_units=exact,
        d_int=d_int,
        lim_int=lim_int,
        bal_n=bal[:, 0],
        bal_r=bal[:, 1],
        bal_g=bal[:, 2],
        bal_a=bal[:, 3],
        bal_b=bal[:, 4],
        z_fixed=z_fixed,
        z_max=z_max,
        mean=mean,
        weights=weights,
        target=target,
        budget=budget,
        const_moves=const_moves,
        const_bytes=const_bytes,
        const_node_moves=const_node,
        const_group_moves=const_group,
        bytes_unit=bytes_unit,
        bytes_exact=bytes_exact,
        cost_unit=cost_unit,
        sym_classes=sym_classes,
    )


# ---------------------------------------------------------------------------------------
# The CP-SAT model.
# ---------------------------------------------------------------------------------------
class _Model:
    def __init__(self, data: _Data, *, symmetry_breaking: bool, redundant: bool) -> None:
        self.data = d = data
        st = d.state
        c, s = st.cluster, st.shards
        self.m = m = cp_model.CpModel()
        n_pairs = d.pair_s.size
        self.x = [m.new_bool_var(f"x{k}") for k in range(n_pairs)]
        self.redundant = redundant
        x = self.x
        pair_s, pair_n = d.pair_s, d.pair_n
        self.by_shard = _group(pair_s)
        self.by_node = _group(pair_n)
        self._same_as_start: tuple[np.ndarray, np.ndarray] | None = None
        self.move_idx = np.flatnonzero(~d.pair_keep)
        self.keep_idx = np.flatnonzero(d.pair_keep)

        # Replication: the free part of each shard gets exactly what the fixed part lacks.
        for sh in d.free_shards.tolist():
            ks = self.by_shard.get(sh, np.zeros(0, dtype=np.int64))
            if ks.size:
                m.add(sum(x[k] for k in ks.tolist()) == d.need[sh])
            elif d.need[sh] > 0:
                m.add_bool_or([])  # no eligible node at all: infeasible

        # Spread: at most max_per_domain per domain, counting the fixed replicas.
        level = st.spread_level_index
        dom = c.domain_of[:, level]
        k_max = st.policy.max_per_domain
        keys = pair_s.astype(np.int64) * (int(dom.max(initial=0)) + 1) + dom[pair_n]
        for ks in _group(keys).values():
            sh = int(pair_s[ks[0]])
            in_dom = sum(1 for n in d.fixed_rows[sh] if dom[n] == dom[pair_n[ks[0]]])
            room = k_max - in_dom
            if ks.size > room:
                m.add(sum(x[k] for k in ks.tolist()) <= room)

        # Regions: y[s, g] may be 1 only if a replica lies in g.
        region = c.region_of
        self.y: dict[tuple[int, int], Any] = {}
        for sh in d.free_shards.tolist():
            req = min(st.policy.min_regions, int(s.replicas[sh]))
            have = {int(region[n]) for n in d.fixed_rows[sh]}
            missing = req - len(have)
            found = self.by_shard.get(sh)
            if missing <= 0 or found is None:
                if missing > 0:
                    m.add_bool_or([])
                continue
            ks = found
            ys = []
            for g, kg in _group(region[pair_n[ks]]).items():
                if g in have:
                    continue
                yv = m.new_bool_var(f"y{sh}_{g}")
                m.add(yv <= sum(x[k] for k in ks[kg].tolist()))
                self.y[(sh, int(g))] = yv
                ys.append(yv)
            m.add(sum(ys) >= missing)

        # Pins.
        pair_index = {
            (a, b): i for i, (a, b) in enumerate(zip(pair_s.tolist(), pair_n.tolist(), strict=True))
        }
        for sh, n in d.pinned_pairs:
            m.add(x[pair_index[(sh, n)]] == 1)
        if d.infeasible_reason is not None:
            m.add_bool_or([])

        # Capacity with headroom, in integer units (see the module docstring).
        for n, ks in self.by_node.items():
            for r in range(c.n_resources):
                coefs = d.d_int[pair_s[ks], r]
                if coefs.sum() > d.lim_int[n, r]:
                    m.add(_wsum(x, ks, coefs) <= int(d.lim_int[n, r]))

        # Budgets.
        b = d.budget
        mv = self.move_idx
        if b.max_moves is not None:
            m.add(sum(x[k] for k in mv.tolist()) <= b.max_moves - d.const_moves)
        if b.max_bytes is not None:
            unit = d.unit[c.size_index]
            cap = _to_units(
                np.array([b.max_bytes * (1 + 1e-12) - d.const_bytes]),
                unit,
                bool(d.exact_units[c.size_index]),
                up=False,
            )[0]
            m.add(_wsum(x, mv, d.d_int[pair_s[mv], c.size_index]) <= int(cap))
        if b.max_moves_per_node is not None:
            self._per_node_budget(b.max_moves_per_node)
        if b.max_moves_per_group is not None:
            grp = s.group[pair_s[mv]]
            for g, kg in _group(grp).items():
                if g < 0:
                    continue
                limit_g = b.max_moves_per_group - int(d.const_group_moves[g])
                if kg.size > limit_g:
                    m.add(sum(x[k] for k in mv[kg].tolist()) <= limit_g)

        # Balance: z bounds the weighted excess of every (active node, resource).
        self.z = m.new_int_var(d.z_fixed, d.z_max, "z")
        for i in range(d.bal_n.size):
            n, r = int(d.bal_n[i]), int(d.bal_r[i])
            ks = self.by_node.get(n, np.zeros(0, dtype=np.int64))
            coefs = d.d_int[pair_s[ks], r] * int(d.bal_g[i])
            m.add(_wsum(x, ks, coefs) - int(d.bal_b[i]) * self.z <= int(d.bal_a[i]))

        if symmetry_breaking:
            self._break_symmetry()
        if redundant:
            self._cover_cuts(None)

        self.bytes_coef = np.rint(d.pair_bytes[mv] / d.bytes_unit).astype(np.int64)
        self.cost_coef = np.rint(d.pair_cost[mv] / d.cost_unit).astype(np.int64)
        self.bytes_expr = _wsum(x, mv, self.bytes_coef)
        self.cost_expr = _wsum(x, mv, self.cost_coef)

    def _per_node_budget(self, limit: int) -> None:
        """Moves into a node (move variables on it) plus moves out of it (original
        replicas not kept): ``in + (held - kept) <= limit``."""
        d, m, x = self.data, self.m, self.x
        st = d.state
        c = st.cluster
        orig = st.placement.nodes
        held = np.zeros(c.n_nodes, dtype=np.int64)
        fs = d.free_shards
        rows = orig[fs]
        ok = (rows >= 0) & c.alive[np.maximum(rows, 0)] & d.free_node[np.maximum(rows, 0)]
        np.add.at(held, rows[ok], 1)
        for n in np.flatnonzero(d.free_node & c.alive).tolist():
            ks = self.by_node.get(n, np.zeros(0, dtype=np.int64))
            moves_in = ks[~d.pair_keep[ks]]
            keeps = ks[d.pair_keep[ks]]
            room = limit - int(d.const_node_moves[n]) - int(held[n])
            # in - kept <= room
            if moves_in.size + held[n] > limit - int(d.const_node_moves[n]):
                m.add(
                    sum(x[k] for k in moves_in.tolist()) - sum(x[k] for k in keeps.tolist()) <= room
                )

    def _break_symmetry(self) -> None:
        """Order the size load of interchangeable (empty, identical) nodes: valid because
        permuting their contents keeps every constraint and the objective."""
        d, m, x = self.data, self.m, self.x
        j = d.state.cluster.size_index
        for members in d.sym_classes:
            loads = []
            for n in members.tolist():
                ks = self.by_node.get(n, np.zeros(0, dtype=np.int64))
                loads.append(_wsum(x, ks, d.d_int[d.pair_s[ks], j]))
            for a, b in zip(loads, loads[1:], strict=False):
                m.add(a >= b)

    def _cover_cuts(self, z_cap: int | None) -> None:
        """Redundant cardinality cuts per node: at most ``k`` of its replicas fit, where
        ``k`` is how many of the smallest fit within its free limit. The LP relaxation
        would otherwise keep every replica fractionally up to the limit; these rows make
        it count whole replicas, which tightens the bound on moves and bytes. Valid for
        every integer solution since any kept set fits, so its size is at most ``k``."""
        d, m, x = self.data, self.m, self.x
        c = d.state.cluster
        cap = d.lim_int.copy()
        if z_cap is not None:
            # Balance rows give a second limit once z is fixed: G*load <= A + B*z.
            for i in range(d.bal_n.size):
                n, r = int(d.bal_n[i]), int(d.bal_r[i])
                lim = (int(d.bal_a[i]) + int(d.bal_b[i]) * z_cap) // int(d.bal_g[i])
                cap[n, r] = min(cap[n, r], lim)
        for n, ks in self.by_node.items():
            for subset in (ks[d.pair_keep[ks]], ks):
                if subset.size < 2:
                    continue
                k_fit = subset.size
                for r in range(c.n_resources):
                    sizes = np.sort(d.d_int[d.pair_s[subset], r])
                    fit = int(np.searchsorted(np.cumsum(sizes), cap[n, r], side="right"))
                    k_fit = min(k_fit, fit)
                if k_fit < subset.size:
                    m.add(sum(x[k] for k in subset.tolist()) <= k_fit)

    def fix_keeps_if_minimal(self, bytes_int: int) -> None:
        """When the bytes optimum is the unavoidable minimum, keep every current replica.

        Each shard must create at least ``need - (its keep pairs)`` replicas whatever the
        plan. If the proven bytes optimum equals the sum of those, no optimal plan moves
        a keepable replica of a shard with positive size (that would add its size), so
        fixing those keep variables to 1 removes no optimum of the next stage. Presolve
        cannot see this through the per-shard sums; without it the transfer-cost stage
        searches the whole assignment again.
        """
        d, m, x = self.data, self.m, self.x
        floor = 0
        fixable: list[np.ndarray] = []
        coef_of_shard = np.zeros(d.state.shards.n_shards, dtype=np.int64)
        coef_of_shard[d.pair_s[self.move_idx]] = self.bytes_coef
        for sh in d.free_shards.tolist():
            ks = self.by_shard.get(sh, np.zeros(0, dtype=np.int64))
            keeps = ks[d.pair_keep[ks]]
            floor += int(coef_of_shard[sh]) * max(0, d.need[sh] - keeps.size)
            if keeps.size <= d.need[sh] and coef_of_shard[sh] > 0:
                fixable.append(keeps)
        if floor != bytes_int:
            return
        for keeps in fixable:
            for k in keeps.tolist():
                m.add(x[k] == 1)

    # -- hints and values -----------------------------------------------------------
    def hint(self, rows: np.ndarray) -> None:
        """Hint a full placement (rows of every shard); aux variables get their values."""
        d, m = self.data, self.m
        m.clear_hints()
        val = self.values_from_rows(rows)
        region = d.state.cluster.region_of
        y_on = [
            bool((val[self.by_shard[sh]] & (region[d.pair_n[self.by_shard[sh]]] == g)).any())
            for sh, g in self.y
        ]
        # Straight into the proto: add_hint per variable cost 1 s in 20 s of LNS steps.
        hint = m.proto.solution_hint
        hint.vars.extend([v.index for v in self.x] + [v.index for v in self.y.values()])
        hint.values.extend([int(v) for v in val.tolist()] + [int(v) for v in y_on])
        m.add_hint(self.z, self.z_of(val))

    def hinted_objective(self) -> float | None:
        """The current objective at the hint (None without a complete hint)."""
        proto = self.m.proto
        hint = proto.solution_hint
        value = dict(zip(list(hint.vars), list(hint.values), strict=True))
        obj = proto.objective
        try:
            total = sum(c * value[v] for v, c in zip(obj.vars, obj.coeffs, strict=True))
        except KeyError:
            return None
        return _objective_value(proto, float(total))

    def hint_values(self) -> np.ndarray | None:
        """The hinted values of the pair variables (None unless every one is hinted)."""
        hint = self.m.proto.solution_hint
        value = dict(zip(list(hint.vars), list(hint.values), strict=True))
        try:
            return np.array([value[v.index] for v in self.x], dtype=bool)
        except KeyError:
            return None

    def trivial_bound(self) -> float:
        """The least the current objective can be over the variables' domains alone
        (stage 1 from the hint's z = the floor of z needs no LP to be proven)."""
        proto = self.m.proto
        obj = proto.objective
        total = 0.0
        for v, c in zip(obj.vars, obj.coeffs, strict=True):
            dom = list(proto.variables[v].domain)
            total += min(c * dom[0], c * dom[-1])
        return _objective_value(proto, total)

    def values_from_rows(self, rows: np.ndarray) -> np.ndarray:
        d = self.data
        return (rows[d.pair_s] == d.pair_n[:, None]).any(axis=1)

    def z_of(self, val: np.ndarray) -> int:
        d = self.data
        z = d.z_fixed
        for i in range(d.bal_n.size):
            n, r = int(d.bal_n[i]), int(d.bal_r[i])
            ks = self.by_node.get(n, np.zeros(0, dtype=np.int64))
            lhs = int((d.d_int[d.pair_s[ks], r] * val[ks]).sum()) * int(d.bal_g[i])
            need = -(-(lhs - int(d.bal_a[i])) // int(d.bal_b[i]))
            z = max(z, need)
        return min(max(z, d.z_fixed), d.z_max)

    def rows_from_values(self, val: np.ndarray) -> np.ndarray:
        """The start placement with the free part replaced; kept replicas keep their slot."""
        d = self.data
        out = d.start.copy()
        if self._same_as_start is None:
            self._same_as_start = self._start_values()
        base, same = self._same_as_start
        # Only shards whose pairs changed, or whose start row the start values do not
        # give back (a replica dropped on a dead or non-candidate node), are rebuilt.
        changed = np.zeros(d.state.shards.n_shards, dtype=bool)
        changed[d.pair_s[val != base]] = True
        redo = d.free_shards[changed[d.free_shards] | ~same]
        for sh in redo.tolist():
            ks = self.by_shard.get(sh, np.zeros(0, dtype=np.int64))
            chosen = set(d.fixed_rows[sh]) | {int(n) for n in d.pair_n[ks[val[ks]]]}
            row = out[sh]
            keep = np.array([n >= 0 and int(n) in chosen for n in row.tolist()])
            row[~keep] = EMPTY
            new = sorted(chosen - {int(n) for n in row[keep].tolist()})
            free_slots = np.flatnonzero(row == EMPTY)
            row[free_slots[: len(new)]] = new
            out[sh] = row
        return out

    def _start_values(self) -> tuple[np.ndarray, np.ndarray]:
        """The pair values of the start rows, and per free shard whether those values
        give its start row back (every replica on a free node is a candidate pair, and
        none is on a dead node)."""
        d = self.data
        base = self.values_from_rows(d.start)
        rows = d.start[d.free_shards]
        safe = np.maximum(rows, 0)
        alive = d.state.cluster.alive
        on_free = (rows >= 0) & d.free_node[safe]
        dead = (rows >= 0) & ~alive[safe]
        picked = np.zeros(d.state.shards.n_shards, dtype=np.int64)
        np.add.at(picked, d.pair_s[base], 1)
        same = (on_free.sum(axis=1) == picked[d.free_shards]) & ~dead.any(axis=1)
        return base, same


def _objective_value(proto: Any, linear_part: float) -> float:
    """What CP-SAT reports as the objective for a value of the objective's linear part:
    ``scaling_factor * (linear part + offset)`` (a factor of 0 means 1). Our objectives
    have neither, but the bound and the hint's value must be read on CP-SAT's scale."""
    obj = proto.objective
    factor = obj.scaling_factor or 1.0
    return factor * (linear_part + obj.offset)


def _group(keys: np.ndarray) -> dict[int, np.ndarray]:
    """Indices of *keys* grouped by value (sorted, stable)."""
    if keys.size == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    cuts = np.flatnonzero(np.diff(sk)) + 1
    return {
        int(sk[a]): order[a:b]
        for a, b in zip(np.r_[0, cuts].tolist(), np.r_[cuts, sk.size].tolist(), strict=True)
    }


def _wsum(x: Sequence[Any], idx: np.ndarray, coefs: np.ndarray) -> Any:
    return cp_model.LinearExpr.weighted_sum([x[k] for k in idx.tolist()], coefs.tolist())


# ---------------------------------------------------------------------------------------
# Solving.
# ---------------------------------------------------------------------------------------
def _solver(
    time_s: float,
    seed: int,
    workers: int,
    deterministic_time: float | None,
    *,
    lns: bool = False,
) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = max(time_s, 0.01)
    p.random_seed = seed
    p.num_workers = workers
    if workers > 1:
        p.interleave_search = True  # CP-SAT's deterministic parallel mode
    elif lns:
        # Still one thread, but CP-SAT's deterministic interleaved mode: the LP-based
        # tree search (``default_lp``, the one sequential search that proves bounds) takes
        # turns with its large-neighbourhood searches, which a sequential solve never runs.
        # On the balance stages most of the gap is the incumbent, not the bound: at
        # 20 x 2,000 rebalance the sequential search moves the engine's 36.31 M-unit plan
        # to 36.30 M in 45 s, the interleaved one to 35.60 M (and to 33.18 M from the
        # LP dive's start, see _lp_dive). Sequential search is kept wherever the LP
        # relaxation already proves the hint optimal (repairs): nothing is left to find.
        p.interleave_search = True
        p.subsolvers.append("default_lp")
    if deterministic_time is not None:
        p.max_deterministic_time = deterministic_time
    return solver


def _run(
    model: _Model,
    deadline: float,
    share: float,
    seed: int,
    workers: int,
    deterministic_time: float | None,
    name: str,
    *,
    polish: bool = False,
    lp: bool = True,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Solve the model's current stage; with *polish*, an LP-guided start first.

    Polishing (every stage of :func:`solve_exact`; the cost stage without *lp*): the LP
    relaxation (:func:`_relax`) gives a bound and a point; when the bound does not already
    prove the hinted solution optimal, a dive (:func:`_lp_dive`) searches the
    neighbourhood of the LP point for a better start, and the stage's search runs with
    LNS (without *lp*: LNS only). None of it
    constrains the stage: the dive is a separate model whose answer is only a hint, and
    the LP bound only raises the reported bound (a proof when it meets the objective).
    In the balance stage the dive finds the 2% goal at 15 x 500 rebalance in 1.8 s,
    which the search from the engine's plan (0.39% above it) misses in 30 s.

    Measured and left out (20 x 2,000 rebalance, bytes stage, LP bound 32.21 M units):

    * per-node "must leave" rows (the integer min-knapsack of replicas that must leave a
      node to get under its stage-1 caps in every resource): the integer knapsack exceeds
      the fractional one by under 0.1% on every node, so the rows do not move the bound;
    * reduced-cost fixing from the LP: with the best incumbent (33.18 M) 30 of 36,808
      pair variables could be fixed, 2,552 only within 0.6% of the bound; CP-SAT's own LP
      already does this propagation;
    * aggregating identical replicas into counts: the synthetic instances have 2,000
      distinct (size, iops) pairs in 2,000 shards, nothing to merge;
    * other one-worker settings on the dive's neighbourhood (15 s): ``linearization_level
      = 2`` 34.59 M, ``linearization_level = 0`` 35.29 M, ``optimize_with_lb_tree_search``
      no solution, interleaved (kept) 33.42 M;
    * HiGHS as the MIP solver of the whole stage: 33.05 M after 200 s with its bound at
      32.22 M; cuts and branching barely move the LP bound, so no setting proves these
      stages in 60 s: the gap left is integrality over tight two-resource caps.
    """
    t0 = time.perf_counter()
    budget_s = (deadline - t0) * share
    relax: _Relaxation | None = None
    lns = False
    info: dict[str, Any] = {"stage": name}
    hinted = model.hinted_objective() if polish else None
    if polish and lp and (hinted is None or hinted > model.trivial_bound()):
        relax = _relax(model, 0.25 * budget_s)
        if relax is not None:
            info["lp_bound"] = round(relax.bound, 3)
            info["lp_s"] = round(time.perf_counter() - t0, 3)
        # LNS unless the LP bound already proves the hint (no LP in time: LNS too).
        lns = relax is None or hinted is None or math.ceil(relax.bound - 1e-9) < hinted
        if relax is not None and lns:
            dt = None if deterministic_time is None else _DIVE_SHARE * deterministic_time
            left = deadline - time.perf_counter()
            dive = _lp_dive(model, relax, min(_DIVE_SHARE * budget_s, left), seed, dt)
            if dive is not None:
                info["dive"] = dive[1]
                if hinted is None or dive[1] < hinted:
                    model.hint(model.rows_from_values(dive[0]))
    left = t0 + budget_s - time.perf_counter()
    dt = deterministic_time
    solver = _solver(max(left, 0.05), seed, workers, dt, lns=lns)
    code = solver.solve(model.m)
    status = _STATUS.get(code, "UNKNOWN")
    info.update({"status": status, "time_s": round(time.perf_counter() - t0, 3)})
    val = None
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        val = np.array([solver.boolean_value(v) for v in model.x], dtype=bool)
        info["objective"] = solver.objective_value
        info["bound"] = solver.best_objective_bound
        if relax is not None:
            # The LP bound is valid for every integer point; the objective is integral.
            info["bound"] = max(info["bound"], float(math.ceil(relax.bound - 1e-9)))
            if status == "FEASIBLE" and info["bound"] >= info["objective"]:
                info["status"] = "OPTIMAL"
    return info, val


@dataclass(frozen=True)
class _Relaxation:
    """The LP relaxation of one stage: its optimal point and a bound on the stage."""

    x: np.ndarray  # (P,) LP values of the pair variables, in [0, 1]
    bound: float  # lower bound on the stage objective (model units), for integer points


def _relax(model: _Model, time_limit_s: float) -> _Relaxation | None:
    """Solve the LP relaxation of the model's current objective with HiGHS.

    Every constraint of the model is linear (checked on the proto: anything else returns
    None), so the relaxation is the proto with integrality dropped. The bound is not the
    LP solver's objective but the Lagrangian bound of its duals recomputed here: for any
    ``lam <= 0`` on the ``<=`` rows and any ``mu`` on the equalities, every point of the
    box that satisfies the rows has ``c.x >= lam.b + mu.e + sum_j min(d_j l_j, d_j u_j)``
    with ``d = c - A'lam - E'mu``. That holds for any duals, so the bound is valid whatever
    the LP solver's tolerances; it is then lowered by an envelope of the float error of
    its own evaluation.
    """
    import scipy.optimize
    import scipy.sparse as sp

    proto = model.m.proto
    n_var = len(proto.variables)
    if n_var == 0 or time_limit_s <= 0.01:
        return None
    lo_v = np.empty(n_var)
    hi_v = np.empty(n_var)
    for i, v in enumerate(proto.variables):
        dom = list(v.domain)
        lo_v[i], hi_v[i] = dom[0], dom[-1]
    rows: list[int] = []
    cols: list[int] = []
    vals: list[int] = []
    lo_r: list[float] = []
    hi_r: list[float] = []
    for i, ct in enumerate(proto.constraints):
        # Recent ortools wrap the proto (has_linear); older releases hand out protobuf.
        has_linear = getattr(ct, "has_linear", None)
        linear = has_linear() if has_linear else ct.WhichOneof("constraint") == "linear"
        if not linear or len(ct.enforcement_literal):
            return None
        lin = ct.linear
        vs = list(lin.vars)
        if any(v < 0 for v in vs):
            return None
        rows.extend([i] * len(vs))
        cols.extend(vs)
        vals.extend(lin.coeffs)
        dom = list(lin.domain)
        lo_r.append(dom[0])
        hi_r.append(dom[-1])
    mat = sp.csr_matrix(
        (np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(len(lo_r), n_var)
    )
    lo = np.asarray(lo_r, dtype=np.float64)
    hi = np.asarray(hi_r, dtype=np.float64)
    lo[lo <= -(2.0**62)] = -np.inf  # CP-SAT's "unbounded" is +-2**63 - 1
    hi[hi >= 2.0**62] = np.inf
    obj = proto.objective
    ovars = list(obj.vars)
    if any(v < 0 for v in ovars):
        return None
    c = np.zeros(n_var)
    np.add.at(c, ovars, np.asarray(list(obj.coeffs), dtype=np.float64))
    eq = lo == hi
    up = ~eq & np.isfinite(hi)
    down = ~eq & np.isfinite(lo)
    a_ub = sp.vstack([mat[up], -mat[down]]).tocsr()
    b_ub = np.concatenate([hi[up], -lo[down]])
    # Rows scaled to a largest coefficient of 1 (the balance rows reach 1e9): HiGHS then
    # needs no scaling of its own, and the duals stay meaningful.
    scale = 1.0 / np.maximum(abs(a_ub).max(axis=1).toarray().ravel(), 1e-300)
    a_ub = sp.diags(scale) @ a_ub
    b_ub = b_ub * scale
    a_eq, b_eq = mat[eq], lo[eq]
    res = scipy.optimize.linprog(
        c,
        A_ub=a_ub if b_ub.size else None,
        b_ub=b_ub if b_ub.size else None,
        A_eq=a_eq if b_eq.size else None,
        b_eq=b_eq if b_eq.size else None,
        bounds=np.column_stack([lo_v, hi_v]),
        method="highs",
        options={"time_limit": time_limit_s},
    )
    if res.status != 0 or res.x is None:
        return None
    lam = np.minimum(res.ineqlin.marginals, 0.0) if b_ub.size else np.zeros(0)
    mu = res.eqlin.marginals if b_eq.size else np.zeros(0)
    red = c - (a_ub.T @ lam if b_ub.size else 0.0) - (a_eq.T @ mu if b_eq.size else 0.0)
    terms = np.where(red > 0, red * lo_v, red * hi_v)
    bound = float(lam @ b_ub + mu @ b_eq + terms.sum())
    # Float error envelope: a sum of n float terms is off by at most n * 2**-53 of the
    # sum of their magnitudes (the classical bound; n counts the longest sum involved).
    # Wide enough for safety, narrow enough that a bound equal to an integer optimum
    # still rounds up to it (1e-9 relative would cost 3 units of a 2.3e7 objective).
    big = np.maximum(np.abs(lo_v), np.abs(hi_v))
    mag = float(
        np.abs(lam) @ np.abs(b_ub)
        + np.abs(mu) @ np.abs(b_eq)
        + np.abs(terms).sum()
        + np.abs(c) @ big
        + (abs(a_ub).T @ np.abs(lam) if b_ub.size else np.zeros(n_var)) @ big
        + (abs(a_eq).T @ np.abs(mu) if b_eq.size else np.zeros(n_var)) @ big
    )
    n_terms = n_var + len(lo_r) + 2
    bound = _objective_value(proto, bound - 2.0 * n_terms * 2.0**-53 * mag - 1e-9)
    idx = np.array([v.index for v in model.x], dtype=np.int64)
    return _Relaxation(x=np.clip(res.x[idx], 0.0, 1.0), bound=bound)


def _lp_dive(
    model: _Model,
    relax: _Relaxation,
    time_limit_s: float,
    seed: int,
    deterministic_time: float | None,
) -> tuple[np.ndarray, float] | None:
    """A start near the LP optimum, searched on a copy of the model with most pairs fixed.

    First neighbourhood: every shard the LP places integrally is fixed there, the rest is
    free. The LP point of a balance stage is nearly integral (20 x 2,000 rebalance: 58 of
    36,808 values fractional, on 28 shards) and far from the hint (700 pairs differ from
    the engine's plan); the 28 free shards are solved well in seconds: 33.42 M units in
    15 s against the engine's 36.31 M, where the full model's own search reaches 35.60 M
    in 45 s. When that rounding cannot be completed (proven infeasible, as on small
    clusters whose replicas are few and large), the second neighbourhood is RINS's: fix
    the pairs where the LP point and the hint agree, hinted, so the hint stays feasible
    and the answer is never worse. Nothing here changes the stage's model.
    """
    if time_limit_s <= 0.05:
        return None
    d = model.data
    t_end = time.perf_counter() + time_limit_s
    tol = 1e-6
    integral = (relax.x <= tol) | (relax.x >= 1 - tol)
    rounded = relax.x > 0.5
    frac_shards = np.unique(d.pair_s[~integral])
    neighbourhoods = [(~np.isin(d.pair_s, frac_shards), False)]
    hint = model.hint_values()
    if hint is not None:
        neighbourhoods.append((integral & (rounded == hint), True))
    for fix, hinted in neighbourhoods:
        left = t_end - time.perf_counter()
        if left <= 0.05:
            return None
        copy = model.m.clone()
        if not hinted:
            copy.clear_hints()
        var = [copy.get_bool_var_from_proto_index(v.index) for v in model.x]
        for k in np.flatnonzero(fix).tolist():
            copy.add(var[k] == int(rounded[k]))
        solver = _solver(left, seed, 1, deterministic_time, lns=True)
        code = solver.solve(copy)
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            val = np.array([solver.boolean_value(v) for v in var], dtype=bool)
            return val, float(solver.objective_value)
        if code != cp_model.INFEASIBLE:
            return None  # out of time: no point in a wider neighbourhood
    return None


def _solve(
    data: _Data,
    *,
    hint_rows: np.ndarray | None,
    time_limit_s: float,
    seed: int,
    workers: int,
    deterministic_time: float | None,
    symmetry_breaking: bool,
    redundant_constraints: bool,
    t0: float,
    polish: bool = False,
    cost_work_share: float = 1.0,
) -> ExactResult:
    deadline = t0 + time_limit_s
    st = data.state
    model = _Model(data, symmetry_breaking=symmetry_breaking, redundant=redundant_constraints)
    stats: dict[str, Any] = {
        "engine": "exact",
        "variables": len(model.x) + len(model.y) + 1,
        "pairs": int(data.pair_s.size),
        "exact_units": {
            r: bool(e) for r, e in zip(st.cluster.resources, data.exact_units.tolist(), strict=True)
        },
        "symmetric_node_classes": len(data.sym_classes),
        "build_s": round(time.perf_counter() - t0, 3),
        "seed": seed,
        "workers": workers,
    }
    if hint_rows is not None:
        rows = _symmetric_hint(data, hint_rows) if symmetry_breaking else hint_rows
        model.hint(rows)
    stages: list[dict[str, Any]] = []

    # Stage 1: balance.
    model.m.minimize(model.z)
    info, val = _run(
        model, deadline, 0.5, seed, workers, deterministic_time, "balance", polish=polish
    )
    stages.append(info)
    if val is None:
        status = "INFEASIBLE" if info["status"] == "INFEASIBLE" else "UNKNOWN"
        if data.infeasible_reason:
            stats["reason"] = data.infeasible_reason
        return ExactResult(
            nodes=None,
            status=status,
            time_s=time.perf_counter() - t0,
            stages=tuple(stages),
            stats=stats,
        )
    proven = info["status"] == "OPTIMAL"
    z_best = round(info["objective"])
    z_bound = math.ceil(info["bound"] - 1e-9)

    # Stage 2: bytes at that balance.
    model.m.add(model.z <= z_best)
    if redundant_constraints:
        model._cover_cuts(z_best)
    model.m.clear_objective()
    model.m.minimize(model.bytes_expr)
    model.hint(model.rows_from_values(val))
    has_cost = bool(model.cost_coef.any())
    info2, val2 = _run(
        model,
        deadline,
        0.8 if has_cost else 1.0,
        seed,
        workers,
        deterministic_time,
        "bytes",
        polish=polish,
    )
    stages.append(info2)
    if val2 is not None:
        val = val2
    proven = proven and info2["status"] == "OPTIMAL"
    bytes_int = int(model.bytes_coef[val[model.move_idx]].sum())
    bytes_bound_int = math.ceil(info2.get("bound", 0.0) - 1e-9)

    # Stage 3: transfer cost at those bytes.
    cost_bound = 0.0
    # Transfer cost is only a tie-break: skip it when the solution's cost is already 0
    # (the trivial bound), and give it at most a quarter of the time limit otherwise.
    if has_cost and int(model.cost_coef[val[model.move_idx]].sum()) > 0:
        model.m.add(model.bytes_expr <= bytes_int)
        model.fix_keeps_if_minimal(bytes_int)
        model.m.clear_objective()
        model.m.minimize(model.cost_expr)
        model.hint(model.rows_from_values(val))
        share = min(1.0, 0.25 * time_limit_s / max(deadline - time.perf_counter(), 1e-9))
        info3, val3 = _run(
            model,
            deadline,
            share,
            seed,
            workers,
            None if deterministic_time is None else cost_work_share * deterministic_time,
            "cost",
            polish=polish,
            # LNS only: the cost LP is slow (4-6 s at 20 x 2,000, against 2 s for bytes)
            # and its bound far below any plan (0.33 M against 5.6 M units), so it only
            # ate the stage's time (skew 5%: no answer at all in the 10 s left).
            lp=False,
        )
        stages.append(info3)
        if val3 is not None:
            val = val3
            cost_bound = max(0.0, info3["bound"]) * data.cost_unit
        proven = proven and info3["status"] == "OPTIMAL"

    rows = model.rows_from_values(val)
    objective = _objective(data, rows)
    bytes_bound = max(0.0, bytes_bound_int * data.bytes_unit) + data.const_bytes
    bytes_obj = objective["bytes_moved"]
    if bytes_int == bytes_bound_int or bytes_obj <= 0:
        gap = 0.0
    else:
        gap = max(0.0, (bytes_obj - bytes_bound) / bytes_obj)
    return ExactResult(
        nodes=rows,
        status="OPTIMAL" if proven else "FEASIBLE",
        objective=objective,
        bound={
            "excess_pressure": max(z_bound, 0) / PRESSURE_STEPS,
            "bytes_moved": min(bytes_bound, bytes_obj),
            "transfer_cost": min(cost_bound, objective["transfer_cost"]),
        },
        gap=gap,
        time_s=time.perf_counter() - t0,
        stages=tuple(stages),
        stats=stats,
    )


def _objective(data: _Data, rows: np.ndarray) -> dict[str, float]:
    """Objective terms of a placement, in floating point (as the report measures them)."""
    st = data.state
    c, s = st.cluster, st.shards
    orig = st.placement.nodes
    load = node_load(st, rows)
    excess = 0.0
    for r in range(c.n_resources):
        if data.weights[r] <= 0 or data.mean[r] <= 0:
            continue
        ok = c.active & (c.capacity[:, r] > 0)
        if ok.any():
            p = data.weights[r] * load[ok, r] / (c.capacity[ok, r] * data.mean[r])
            excess = max(excess, float(p.max()) - (1 + data.target))
    new = (rows >= 0) & ~(rows[:, :, None] == orig[:, None, :]).any(axis=2)
    sh, slot = np.nonzero(new)
    cost = transfer_cost(st, orig, sh, rows[sh, slot].astype(np.int64))
    return {
        "excess_pressure": max(excess, 0.0),
        "bytes_moved": float(s.demand[sh, c.size_index].sum()),
        "transfer_cost": float(cost.sum()),
    }


def objective_of(
    state: State,
    rows: np.ndarray,
    *,
    target_imbalance: float = 0.02,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """The exact model's objective terms of a whole placement (no model is built).

    *weights* is the per-resource array :func:`check_options` returns (default 1 each).
    The terms are those of :attr:`ExactResult.objective`: ``excess_pressure`` (largest
    weighted utilization over ``1 + target_imbalance`` times the mean, 0 when within),
    ``bytes_moved`` and ``transfer_cost`` against ``state.placement``.

    >>> import placement
    >>> st = placement.synthetic_state(15, 60, seed=3)
    >>> objective_of(st, st.placement.nodes, target_imbalance=10.0)
    {'excess_pressure': 0.0, 'bytes_moved': 0.0, 'transfer_cost': 0.0}
    """
    w = np.ones(state.cluster.n_resources) if weights is None else np.asarray(weights, float)
    start = _check_rows(state, rows, "rows")
    data = _prepare(
        state,
        start,
        np.zeros(0, dtype=np.int64),
        np.zeros(state.cluster.n_nodes, dtype=bool),
        _Budget(),
        float(target_imbalance),
        w,
    )
    return _objective(data, start)


def _symmetric_hint(data: _Data, rows: np.ndarray) -> np.ndarray:
    """Relabel interchangeable nodes in a hint so that it satisfies the symmetry order
    (size load non-increasing along each class)."""
    if not data.sym_classes:
        return rows
    st = data.state
    j = st.cluster.size_index
    load = node_load(st, rows)[:, j]
    mapping = np.arange(st.cluster.n_nodes)
    for members in data.sym_classes:
        by_load = members[np.argsort(-load[members], kind="stable")]
        mapping[by_load] = members  # the i-th most loaded becomes the i-th member
    out = np.where(rows >= 0, mapping[np.maximum(rows, 0)], rows)
    return out.astype(rows.dtype)


# ---------------------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------------------
def _validate(
    state: State,
    *,
    max_moves: int | None,
    max_bytes: float | None,
    max_moves_per_node: int | None,
    max_moves_per_group: int | None,
    target_imbalance: float,
    weights: Mapping[str, float] | None,
    time_limit_s: float,
    workers: int,
) -> np.ndarray:
    w = check_options(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        max_moves_per_node=max_moves_per_node,
        max_moves_per_group=max_moves_per_group,
        target_imbalance=target_imbalance,
        time_limit_s=time_limit_s,
        weights=weights,
    )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidValueError(f"workers must be a whole number >= 1, got {workers!r}.")
    return w


def solve_exact(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    target_imbalance: float = 0.02,
    weights: Mapping[str, float] | None = None,
    time_limit_s: float = 60.0,
    seed: int = 0,
    hint: np.ndarray | None = None,
    workers: int = 1,
    deterministic_time: float | None = None,
    symmetry_breaking: bool = True,
    redundant_constraints: bool = True,
    polish: bool = True,
) -> ExactResult:
    """Solve the placement problem exactly (balance, then bytes, then transfer cost).

    Parameters
    ----------
    state : State
        The cluster as it is; failed and draining nodes are emptied.
    max_moves, max_bytes, max_moves_per_node, max_moves_per_group : optional
        Budget of the whole plan, as in :func:`placement.planner.plan`. A move puts a
        replica on a node that did not hold it; moves per node count moves into and out
        of the node (copies lost on a failed node count for nobody).
    target_imbalance : float
        Utilization within ``(1 + target_imbalance) x mean`` counts as balanced.
    weights : mapping of resource to float, optional
        Balance weight per resource (default 1; 0 ignores a resource for balance).
    time_limit_s : float
        Wall-clock limit for everything, hint included. Stage 1 may use half of it.
    seed : int
        CP-SAT's random seed.
    hint : ndarray of int, shape (S, W), optional
        A placement to start from. Default: the greedy engine's plan
        (:func:`placement.solvers.greedy.solve_greedy`), given at most a fifth of the time.
    workers : int
        CP-SAT search workers (1: sequential). With more than one, CP-SAT's deterministic
        parallel mode is used.
    deterministic_time : float, optional
        CP-SAT's work-based limit per stage (about seconds on a typical machine); the
        same input then gives the same answer even when the limit is reached.
    symmetry_breaking, redundant_constraints : bool
        Model strengthening, on by default; off only to test that it cuts no optimum.
    polish : bool
        LP-guided search in the bytes and cost stages (on by default): the LP relaxation
        (HiGHS) bounds the stage, a dive from its point gives a better start, and the
        one-worker search interleaves large-neighbourhood steps. It only adds starts and
        a bound, never a constraint; off to compare.

    Returns
    -------
    ExactResult

    Raises
    ------
    InvalidValueError
        A parameter is out of range.

    Examples
    --------
    >>> from placement.model import Cluster, Placement, Policy, Shards, State
    >>> c = Cluster.build(node_ids=["a", "b", "c", "d"], resources=["disk_bytes"],
    ...     capacity=[[100]] * 4, levels=["region", "zone"],
    ...     location=[["eu", "z1"], ["eu", "z2"], ["eu", "z3"], ["eu", "z4"]],
    ...     state=["active", "active", "active", "draining"])
    >>> s = Shards.build(c, demand=[[10], [20]], replicas=2)
    >>> st = State(c, s, Placement.build([[0, 3], [1, 2]], n_nodes=4), Policy())
    >>> r = solve_exact(st, target_imbalance=10.0, time_limit_s=5)
    >>> r.status, r.objective["bytes_moved"], 3 in r.nodes
    ('OPTIMAL', 10.0, False)
    """
    t0 = time.perf_counter()
    w = _validate(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        max_moves_per_node=max_moves_per_node,
        max_moves_per_group=max_moves_per_group,
        target_imbalance=target_imbalance,
        weights=weights,
        time_limit_s=time_limit_s,
        workers=workers,
    )
    budget = _Budget(max_moves, max_bytes, max_moves_per_node, max_moves_per_group)
    if hint is None:
        from placement.solvers.greedy import Budget, solve_greedy

        greedy = solve_greedy(
            state,
            budget=Budget(max_moves, max_bytes, max_moves_per_node, max_moves_per_group),
            target_imbalance=float(target_imbalance),
            min_gain=0.5,
            weights=w,
            time_limit_s=max(0.05, time_limit_s / 5),
        )
        hint = greedy.nodes
    else:
        hint = _check_rows(state, hint, "hint")
    data = _prepare(
        state,
        state.placement.nodes,
        np.arange(state.shards.n_shards),
        np.ones(state.cluster.n_nodes, dtype=bool),
        budget,
        float(target_imbalance),
        w,
    )
    return _solve(
        data,
        hint_rows=hint,
        time_limit_s=max(time_limit_s - (time.perf_counter() - t0), 0.05),
        seed=seed,
        workers=workers,
        deterministic_time=deterministic_time,
        symmetry_breaking=symmetry_breaking,
        redundant_constraints=redundant_constraints,
        t0=time.perf_counter(),
        polish=polish,
    )


def _check_rows(state: State, rows: Any, name: str) -> np.ndarray:
    arr = np.asarray(rows)
    want = state.placement.nodes.shape
    if arr.shape != want or arr.dtype.kind not in "iu":
        raise InvalidValueError(f"{name} must be an integer node matrix of shape {want}.")
    if ((arr < EMPTY) | (arr >= state.cluster.n_nodes)).any():
        raise InvalidValueError(
            f"{name} holds node indices outside 0..{state.cluster.n_nodes - 1}."
        )
    return arr.astype(np.int32)


def solve_subproblem(
    state: State,
    nodes_matrix: np.ndarray,
    shard_subset: Any,
    node_subset: Any,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    target_imbalance: float = 0.02,
    weights: Mapping[str, float] | None = None,
    time_limit_s: float = 5.0,
    seed: int = 0,
    workers: int = 1,
    deterministic_time: float | None = None,
    cost_work_share: float = 1.0,
) -> tuple[np.ndarray, ExactResult]:
    """Re-optimize a neighbourhood of a working placement (one step of an LNS).

    The replicas of *shard_subset* that lie on *node_subset* (and those lost on failed
    nodes) are placed again over the active nodes of *node_subset*; everything else stays
    as in *nodes_matrix*. The objective is the global one: the balance excess of nodes
    outside the subset is a floor for stage 1, and moves and bytes are counted against
    ``state.placement`` (the plan's starting point), budgets included, so an accepted
    neighbourhood solution is directly a better plan.

    Parameters
    ----------
    state : State
        The problem; ``state.placement`` is where the plan starts.
    nodes_matrix : ndarray of int, shape (S, W)
        The current working placement (for example the engine's result).
    shard_subset, node_subset : array-like of int
        Shard and node indices of the neighbourhood.
    time_limit_s : float
        Wall-clock limit of this step; the working rows are hinted, so the answer is never
        worse than them when they are valid.
    max_moves, ..., workers, deterministic_time
        As in :func:`solve_exact` (a deterministic limit makes the step reproducible).
    cost_work_share : float
        Share of *deterministic_time* the transfer-cost stage (a tie-break) may use.

    Returns
    -------
    rows : ndarray of int32, shape (len(shard_subset), W)
        New rows for *shard_subset*, in its order (the old rows when nothing was found).
    result : ExactResult
        Status and objective of the whole placement with those rows.

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(15, 60, seed=3)
    >>> rows, res = solve_subproblem(st, st.placement.nodes, [0, 1, 2], list(range(15)),
    ...                              time_limit_s=5)
    >>> rows.shape, res.status in ("OPTIMAL", "FEASIBLE")
    ((3, 3), True)
    """
    t0 = time.perf_counter()
    w = _validate(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        max_moves_per_node=max_moves_per_node,
        max_moves_per_group=max_moves_per_group,
        target_imbalance=target_imbalance,
        weights=weights,
        time_limit_s=time_limit_s,
        workers=workers,
    )
    start = _check_rows(state, nodes_matrix, "nodes_matrix")
    shards = np.unique(np.asarray(shard_subset, dtype=np.int64))
    order = np.asarray(shard_subset, dtype=np.int64)
    nodes = np.asarray(node_subset, dtype=np.int64)
    if shards.size and (shards.min() < 0 or shards.max() >= state.shards.n_shards):
        raise InvalidValueError("shard_subset holds indices outside the shards.")
    if nodes.size and (nodes.min() < 0 or nodes.max() >= state.cluster.n_nodes):
        raise InvalidValueError("node_subset holds indices outside the nodes.")
    free_node = np.zeros(state.cluster.n_nodes, dtype=bool)
    free_node[nodes] = True
    data = _prepare(
        state,
        start,
        shards,
        free_node,
        _Budget(max_moves, max_bytes, max_moves_per_node, max_moves_per_group),
        float(target_imbalance),
        w,
    )
    result = _solve(
        data,
        hint_rows=start,
        time_limit_s=max(time_limit_s - (time.perf_counter() - t0), 0.05),
        seed=seed,
        workers=workers,
        deterministic_time=deterministic_time,
        symmetry_breaking=True,
        redundant_constraints=True,
        t0=time.perf_counter(),
        cost_work_share=cost_work_share,
    )
    out = start if result.nodes is None else result.nodes
    return out[order].copy(), result


def plan_exact(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    target_imbalance: float = 0.02,
    weights: Mapping[str, float] | None = None,
    time_limit_s: float = 60.0,
    seed: int = 0,
    hint: np.ndarray | None = None,
    workers: int = 1,
    deterministic_time: float | None = None,
) -> Plan:
    """Plan with the exact solver: a :class:`~placement.plan.Plan` like
    :func:`placement.planner.plan` returns, with the proof in ``stats``.

    ``stats`` holds ``status``, ``objective``, ``bound`` and ``gap`` of the solve; the
    plan's ``lower_bound_bytes`` is the larger of the planner's analytic bound and the
    solver's proven bound (valid for every plan at least as balanced).

    Raises
    ------
    InfeasibleError
        No valid plan exists (proven), or none was found in time; its ``diagnosis``
        attribute (see :func:`placement.diagnose.diagnose`) names the conflict.
    InvalidValueError
        A parameter is out of range.

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(15, 60, seed=3)
    >>> p = plan_exact(st, target_imbalance=0.5, time_limit_s=10)
    >>> p.after["violations"], p.stats["status"]
    (0, 'OPTIMAL')
    """
    from placement.diffing import plan_from_target

    t0 = time.perf_counter()
    budget: dict[str, Any] = {
        "max_moves": max_moves,
        "max_bytes": max_bytes,
        "max_moves_per_node": max_moves_per_node,
        "max_moves_per_group": max_moves_per_group,
    }
    result = solve_exact(
        state,
        **budget,
        target_imbalance=target_imbalance,
        weights=weights,
        time_limit_s=time_limit_s,
        seed=seed,
        hint=hint,
        workers=workers,
        deterministic_time=deterministic_time,
    )
    if result.nodes is None:
        # Imported here: diagnose builds on this module (it is the layer above).
        from placement.diagnose import diagnose

        diagnosis = diagnose(state, **budget, time_limit_s=min(10.0, time_limit_s))
        proven = result.status == "INFEASIBLE"
        raise InfeasibleError(
            ("No valid plan exists: " if proven else "No valid plan found in time: ")
            + diagnosis.summary(),
            diagnosis=diagnosis,
        )
    before = state.placement.nodes
    final = result.nodes
    s_chg, j_chg = np.nonzero(final != before)
    reasons = np.full(before.shape, -1, dtype=np.int8)
    reasons[s_chg, j_chg] = slot_reasons(
        state, s_chg.astype(np.int64), before[s_chg, j_chg].astype(np.int64)
    )
    stats: dict[str, Any] = dict(result.stats)
    stats.update(
        {
            "status": result.status,
            "objective": result.objective,
            "bound": result.bound,
            "gap": result.gap,
            "stages": list(result.stages),
        }
    )
    # The same diff, re-check and evidence as every plan; the bytes bound is the larger
    # of the analytic one and what CP-SAT proved.
    p = plan_from_target(
        state,
        final,
        reasons,
        stats,
        max_moves=max_moves,
        max_bytes=max_bytes,
        allow_partial=True,
        t0=t0,
    )
    if p.after["violations"]:  # pragma: no cover - the model encodes every rule check() tests
        raise AssertionError(f"internal error: exact solution violates {p.after}")
    p.stats["analytic_bound_bytes"] = p.lower_bound_bytes
    return dataclasses.replace(
        p, lower_bound_bytes=max(p.lower_bound_bytes, result.bound.get("bytes_moved", 0.0))
    )


def slot_reasons(state: State, shard: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Why each slot changed: the first rule its source replica breaks, else balance."""
    c = state.cluster
    v = check(state)
    idx = {name: i for i, name in enumerate(REASONS)}
    out = np.full(shard.size, idx["balance"], dtype=np.int8)
    residency = {(int(a), int(b)) for a, b in v.residency.tolist()}
    spread = set(v.spread[:, 0].tolist())
    regions = set(v.regions[:, 0].tolist())
    over = np.zeros(c.n_nodes, dtype=bool)
    over[v.capacity[:, 0]] = True
    for k, (s, a) in enumerate(zip(shard.tolist(), source.tolist(), strict=True)):
        if a < 0:
            out[k] = idx["restore-replication"]
        elif c.state[a] == NodeState.FAILED:
            out[k] = idx["failed-node"]
        elif c.state[a] == NodeState.DRAINING:
            out[k] = idx["drain"]
        elif (s, a) in residency:
            out[k] = idx["residency"]
        elif s in spread:
            out[k] = idx["spread"]
        elif s in regions:
            out[k] = idx["min-regions"]
        elif over[a]:
            out[k] = idx["capacity"]
    return out


# ---------------------------------------------------------------------------------------
# Infeasibility cores (used by placement.diagnose on small instances).
# ---------------------------------------------------------------------------------------
def infeasible_core(
    state: State, budget: Mapping[str, Any], *, time_limit_s: float = 10.0
) -> tuple[bool | None, list[tuple[str, int]]]:
    """An irreducible set of constraint groups that cannot hold together.

    Every hard rule is guarded by an assumption literal per group: ``capacity`` and
    ``drain`` per node, ``spread``, ``regions``, ``residency`` and ``pin`` per shard,
    ``max_moves``, ``max_bytes``, ``max_moves_per_node`` per node and
    ``max_moves_per_group`` per group. Replication (``replicas`` distinct alive nodes) is
    never relaxed. Variables exist for every alive node, so dropping ``drain`` or
    ``residency`` really allows a replica there.

    Returns
    -------
    feasible : bool or None
        True (a placement exists), False (core found) or None (time ran out).
    core : list of (kind, index)
        Empty unless infeasible; deletion-minimal: removing any group makes the rest
        satisfiable (or undecided in the time left, in which case the group stays).
    """
    t0 = time.perf_counter()
    c, s, pol = state.cluster, state.shards, state.policy
    orig = state.placement.nodes
    alive = np.flatnonzero(c.alive)
    m = cp_model.CpModel()
    lits: dict[tuple[str, int], Any] = {}

    def lit(kind: str, i: int) -> Any:
        if (kind, i) not in lits:
            lits[(kind, i)] = m.new_bool_var(f"{kind}[{i}]")
        return lits[(kind, i)]

    x = {(sh, int(n)): m.new_bool_var("") for sh in range(s.n_shards) for n in alive}
    limit = c.capacity * state.headroom[None, :]
    unit, exact = _units(s.demand, limit[alive] if alive.size else limit)
    d_int = np.column_stack(
        [_to_units(s.demand[:, r], unit[r], exact[r], up=True) for r in range(c.n_resources)]
    )
    lim_int = np.column_stack(
        [
            _to_units(limit[:, r] * (1 + 1e-12), unit[r], exact[r], up=False)
            for r in range(c.n_resources)
        ]
    )
    dom = c.domain_of[:, state.spread_level_index]
    allowed = s.region_allowed()[:, c.region_of]
    held = [set(orig[sh][orig[sh] >= 0].tolist()) for sh in range(s.n_shards)]
    for sh in range(s.n_shards):
        m.add(sum(x[(sh, int(n))] for n in alive) == int(s.replicas[sh]))
        outside = [x[(sh, int(n))] for n in alive if not allowed[sh, n]]
        if outside:
            m.add(sum(outside) == 0).only_enforce_if(lit("residency", sh))
        for d in np.unique(dom[alive]).tolist():
            members = [x[(sh, int(n))] for n in alive if dom[n] == d]
            if len(members) > pol.max_per_domain:
                m.add(sum(members) <= pol.max_per_domain).only_enforce_if(lit("spread", sh))
        req = min(pol.min_regions, int(s.replicas[sh]))
        if req > 1:
            ys = []
            for g in np.unique(c.region_of[alive]).tolist():
                yv = m.new_bool_var("")
                m.add(yv <= sum(x[(sh, int(n))] for n in alive if c.region_of[n] == g))
                ys.append(yv)
            m.add(sum(ys) >= req).only_enforce_if(lit("regions", sh))
        for j in np.flatnonzero(state.placement.pinned[sh]).tolist():
            n = int(orig[sh, j])
            if c.alive[n]:
                m.add(x[(sh, n)] == 1).only_enforce_if(lit("pin", sh))
    for n in alive.tolist():
        on = [x[(sh, n)] for sh in range(s.n_shards)]
        if c.state[n] == NodeState.DRAINING:
            m.add(sum(on) == 0).only_enforce_if(lit("drain", n))
        for r in range(c.n_resources):
            if int(d_int[:, r].sum()) > lim_int[n, r]:
                m.add(
                    cp_model.LinearExpr.weighted_sum(on, d_int[:, r].tolist()) <= int(lim_int[n, r])
                ).only_enforce_if(lit("capacity", n))
    moves = [(sh, n) for (sh, n) in x if n not in held[sh]]
    size_j = c.size_index
    if budget.get("max_moves") is not None:
        m.add(sum(x[k] for k in moves) <= int(budget["max_moves"])).only_enforce_if(
            lit("max_moves", 0)
        )
    if budget.get("max_bytes") is not None:
        cap = _to_units(
            np.array([budget["max_bytes"] * (1 + 1e-12)]), unit[size_j], exact[size_j], up=False
        )[0]
        m.add(
            cp_model.LinearExpr.weighted_sum(
                [x[k] for k in moves], [int(d_int[k[0], size_j]) for k in moves]
            )
            <= int(cap)
        ).only_enforce_if(lit("max_bytes", 0))
    if budget.get("max_moves_per_node") is not None:
        lim = int(budget["max_moves_per_node"])
        for n in alive.tolist():
            into = [x[(sh, n)] for sh in range(s.n_shards) if n not in held[sh]]
            stays = [x[(sh, n)] for sh in range(s.n_shards) if n in held[sh]]
            # moves in + (held - kept) <= limit
            m.add(sum(into) - sum(stays) <= lim - len(stays)).only_enforce_if(
                lit("max_moves_per_node", n)
            )
    if budget.get("max_moves_per_group") is not None:
        lim = int(budget["max_moves_per_group"])
        for g in range(len(s.group_names)):
            mine = [x[k] for k in moves if s.group[k[0]] == g]
            if len(mine) > lim:
                m.add(sum(mine) <= lim).only_enforce_if(lit("max_moves_per_group", g))

    keys = list(lits)

    def solve(active_keys: list[tuple[str, int]]) -> tuple[str, list[tuple[str, int]]]:
        m.clear_assumptions()
        m.add_assumptions([lits[k] for k in active_keys])
        left = t0 + time_limit_s - time.perf_counter()
        # Cores need a sequential search: one worker.
        solver = _solver(max(left, 0.01), 0, 1, None)
        code = solver.solve(m)
        if code == cp_model.INFEASIBLE:
            index = {lits[k].index: k for k in active_keys}
            core = [index[i] for i in solver.sufficient_assumptions_for_infeasibility()]
            return "INFEASIBLE", [k for k in active_keys if k in set(core)]
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return "FEASIBLE", []
        return "UNKNOWN", []

    status, core = solve(keys)
    if status == "FEASIBLE":
        return True, []
    if status == "UNKNOWN":
        return None, []
    # Deletion: drop each group in turn; keep it only if the rest become satisfiable.
    for k in list(core):
        if k not in core or time.perf_counter() > t0 + time_limit_s:
            continue
        trial = [q for q in core if q != k]
        status, smaller = solve(trial)
        if status == "INFEASIBLE":
            core = smaller if smaller else trial
    return False, core
