"""From a solver's target placement to a :class:`~placement.plan.Plan`: diff, untangle, check,
bound.

What :func:`placement.planner.plan` does after its solver, as one reusable step, so every
planning path (the engine, the geo scenario, later others) builds its plan the same way:

1. the diff, slot by slot, between the state's placement and the target (solvers keep
   replicas in their slots, so a replica moved twice is one move and one moved back is
   none); each changed slot keeps the reason the solver gave it;
2. untangling: per shard, as a set difference (A->B and B->C become A->C);
3. moves ordered by reason (repairs first, in :data:`~placement.plan.REASONS` order),
   stable within a reason;
4. the target re-checked with :func:`placement.constraints.check`, the budget verified,
   and the evidence attached: before/after imbalance, violations and client latency
   (:mod:`placement.latency`), and the planner's lower bound on bytes.

Examples
--------
>>> import numpy as np, placement
>>> st = placement.synthetic_state(30, 300, seed=1)
>>> target = st.placement.nodes.copy()
>>> p = plan_from_target(st, target)  # no change: an empty plan
>>> p.n_moves, p.after["violations"]
(0, 0)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from placement.constraints import Violations, check, node_load
from placement.errors import InfeasibleError
from placement.latency import client_service
from placement.model import State
from placement.plan import REASONS, Plan, transfer_cost
from placement.planner import _untangle, imbalance, lower_bound_bytes

__all__ = ["plan_from_target", "slot_reasons"]


def slot_reasons(before_nodes: np.ndarray, plan: Plan) -> np.ndarray:
    """The reason of each slot a plan changes, shape (S, W), -1 where unchanged.

    For a plan whose ``target_nodes`` keep replicas in their slots (every engine plan):
    each move's reason goes to the slot of its shard that holds its target afterwards.

    >>> import placement
    >>> from placement.scenarios import plan_drain
    >>> st = placement.synthetic_state(30, 300, seed=1)
    >>> new, p = plan_drain(st, [st.cluster.node_ids[0]])
    >>> r = slot_reasons(new.placement.nodes, p)
    >>> int((r >= 0).sum()) == p.n_moves
    True
    """
    out = np.full(before_nodes.shape, -1, dtype=np.int8)
    if plan.n_moves == 0:
        return out
    rows = plan.target_nodes[plan.shard]  # (M, W)
    hit = rows == plan.target[:, None]
    slot = hit.argmax(axis=1)
    ok = hit.any(axis=1)
    out[plan.shard[ok], slot[ok]] = plan.reason[ok]
    return out


def plan_from_target(
    state: State,
    target_nodes: np.ndarray,
    reasons: np.ndarray | None = None,
    stats: dict[str, Any] | None = None,
    *,
    default_reason: str = "balance",
    max_moves: int | None = None,
    max_bytes: float | None = None,
    allow_partial: bool = False,
    before: Violations | None = None,
    before_load: np.ndarray | None = None,
    latency_target_ms: float | None = None,
    t0: float | None = None,
) -> Plan:
    """The plan that takes *state* to *target_nodes*, with its evidence.

    Parameters
    ----------
    state : State
    target_nodes : ndarray of int, shape (S, W)
        The target placement, slot-aligned with ``state.placement.nodes`` (a replica that
        stays keeps its slot).
    reasons : ndarray of int8, shape (S, W), optional
        Index into :data:`~placement.plan.REASONS` of each changed slot; -1 (or no
        array) gives *default_reason*.
    stats : dict, optional
        Solver statistics, copied into ``Plan.stats`` (with ``time_s`` and ``bound_s``).
    default_reason : str
    max_moves, max_bytes : optional
        The budget the plan must keep (a breach is an internal error).
    allow_partial : bool
        Return the plan even if hard constraints remain violated; otherwise raise.
    before, before_load : optional
        :func:`~placement.constraints.check` and :func:`~placement.constraints.node_load`
        of the state's placement, if at hand.
    latency_target_ms : float, optional
        Latency target of the before/after client metrics (default: the policy's).
    t0 : float, optional
        ``time.perf_counter()`` at the start of planning, for ``stats["time_s"]``.

    Returns
    -------
    Plan

    Raises
    ------
    InfeasibleError
        The target violates hard constraints (unless *allow_partial*).
    """
    t0 = time.perf_counter() if t0 is None else t0
    c = state.cluster
    before_nodes = state.placement.nodes
    final = np.array(target_nodes, dtype=np.int32, copy=True)
    final.setflags(write=False)
    before_load = node_load(state, before_nodes) if before_load is None else before_load
    before_v = check(state, before_nodes, load=before_load) if before is None else before

    changed_s, changed_j = np.nonzero(final != before_nodes)
    default = np.int8(REASONS.index(default_reason))
    order = np.argsort(changed_s, kind="stable")
    shard = changed_s[order].astype(np.int64)
    slot = changed_j[order]
    source = before_nodes[shard, slot].astype(np.int64)
    target = final[shard, slot].astype(np.int64)
    if reasons is None:
        reason = np.full(shard.size, default, dtype=np.int8)
    else:
        given = reasons[shard, slot]
        reason = np.where(given >= 0, given, default).astype(np.int8)
    shard, source, target, reason = _untangle(shard, source, target, reason, c.n_nodes)
    by_reason = np.argsort(reason, kind="stable")
    shard, source, target, reason = (
        shard[by_reason],
        source[by_reason],
        target[by_reason],
        reason[by_reason],
    )
    size = state.shards.demand[shard, c.size_index]

    after_load = node_load(state, final)
    after_v = check(state, final, load=after_load)
    if (max_moves is not None and shard.size > max_moves) or (
        max_bytes is not None and size.sum() > max_bytes * (1 + 1e-12)
    ):
        raise AssertionError("internal error: the plan exceeds its budget")
    t_end = time.perf_counter()
    bound = lower_bound_bytes(
        state, final, violations=before_v, load=before_load, target_load=after_load
    )
    t_bound = time.perf_counter() - t_end

    problems = {k: v for k, v in after_v.counts().items() if v}
    if problems and not allow_partial:
        described = after_v.describe(state, limit=3)
        detail = "; ".join(
            f"{k} x{n} (e.g. {', '.join(str(d) for d in described[k])})"
            for k, n in problems.items()
        )
        raise InfeasibleError(
            f"No valid plan found: after {shard.size} moves these hard constraints still fail: "
            f"{detail}. Raise the budget (max_moves / max_bytes), add capacity or relax the "
            "policy, or pass allow_partial=True for the best partial plan."
        )
    out_stats = dict(stats or {})
    out_stats.update({"time_s": round(time.perf_counter() - t0, 4), "bound_s": round(t_bound, 4)})
    return Plan(
        state_sha256=state.sha256(),
        shard=shard,
        source=source,
        target=target,
        size_bytes=size,
        cost=transfer_cost(state, before_nodes, shard, target),
        reason=reason,
        target_nodes=final,
        lower_bound_bytes=bound,
        before=_metrics(state, before_nodes, before_load, before_v, latency_target_ms),
        after=_metrics(state, final, after_load, after_v, latency_target_ms),
        stats=out_stats,
    )


def _metrics(
    state: State,
    nodes: np.ndarray,
    load: np.ndarray,
    v: Violations,
    latency_target_ms: float | None,
) -> dict[str, Any]:
    svc = client_service(state, nodes, target_ms=latency_target_ms)
    return {
        "imbalance": imbalance(state, nodes, load),
        "violations": v.total,
        "violation_counts": v.counts(),
        "latency": svc.summary(),
    }
