"""From a solver's target placement to a :class:`~placement.plan.Plan`: diff, untangle, check,
bound; and the evidence every plan carries (imbalance, the bytes lower bound).

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

from placement.balance_lp import must_leave_bytes, solve_balance_lp
from placement.constraints import Violations, check, node_load, recheck
from placement.errors import InfeasibleError
from placement.latency import client_service
from placement.model import NodeState, State
from placement.plan import REASONS, Plan, transfer_cost

__all__ = ["LP_BOUND_UP_TO", "imbalance", "lower_bound_bytes", "plan_from_target", "slot_reasons"]

#: Up to this many active nodes, plans also carry the balance LP's bound (it costs at
#: most about a fifth of the planning time there).
LP_BOUND_UP_TO = 2000


def imbalance(
    state: State, nodes: np.ndarray, load: np.ndarray | None = None
) -> dict[str, float | None]:
    """Imbalance ratio per resource (interchange definition) of a placement."""
    c = state.cluster
    load = node_load(state, nodes) if load is None else load
    out: dict[str, float | None] = {}
    act = c.active
    for j, r in enumerate(c.resources):
        cap = c.capacity[act, j]
        total_cap = cap.sum()
        total = load[act, j].sum()
        if total_cap <= 0 or total <= 0:
            out[r] = None
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(cap > 0, load[act, j] / cap, np.where(load[act, j] > 0, np.inf, 0.0))
        out[r] = float(util.max() / (total / total_cap) - 1)
    return out


def lower_bound_bytes(
    state: State,
    target_nodes: np.ndarray,
    *,
    violations: Violations | None = None,
    load: np.ndarray | None = None,
    target_load: np.ndarray | None = None,
    detail: dict[str, Any] | None = None,
    lp: bool = False,
    per_node_lp_s: float = 0.0,
) -> float:
    """Bytes that every plan reaching the target's peak utilizations must move.

    The sum of: replicas to (re)create (on failed nodes or missing), everything on
    draining nodes, and for each active node the largest of what must leave it anyway
    (replicas outside their residency) and, per resource r, the fewest bytes whose
    removal brings its r-load down to the peak r-utilization ``u_r`` the target reaches.
    That last term is a fractional knapsack: remove the replicas with the most r per byte
    first. Each term counts bytes no plan with the same peaks can avoid; none twice.
    *violations*, *load* (of the current placement) and *target_load* may be passed when
    the caller has them already.

    With *lp*, on clusters of up to :data:`LP_BOUND_UP_TO` active nodes with two or
    more loaded resources, the aggregated LP of :mod:`placement.balance_lp` (nodes
    grouped, 8 bins, the binned resource conserved) is solved at the same peaks as well
    and the larger bound is returned: it also sees that bytes must land under the peaks
    in every resource (tiers S and M: 0.04-0.08 s and 0.2-0.3 s). It beats the knapsack only for plans whose
    peaks need trades; at the peaks of the others it equalled it on every benchmark
    scenario. *detail*, if given, receives both values and the LP's time.

    With *per_node_lp_s* > 0 as well, the same LP with one group per node and 16 bins
    runs within that many seconds (tier S: about 1% above the grouped one; it takes
    seconds where the grouped LP takes a tenth, so only plans that searched longer, like
    ``method="lns"``, ask for it). ``detail["lp_per_node_bytes"]`` has its value.
    """
    c, s = state.cluster, state.shards
    size_j = c.size_index
    nodes = state.placement.nodes
    v = check(state, nodes) if violations is None else violations
    size = s.demand[:, size_j]
    created = float(size[v.failed[:, 0]].sum()) if len(v.failed) else 0.0
    missing = np.maximum(s.replicas - (nodes >= 0).sum(axis=1), 0)
    created += float((missing * size).sum())
    load = node_load(state, nodes) if load is None else load
    drained = float(load[c.state == NodeState.DRAINING, size_j].sum())
    per_node = np.zeros(c.n_nodes)
    if len(v.residency):
        np.add.at(per_node, v.residency[:, 1], size[v.residency[:, 0]])
    after = node_load(state, target_nodes) if target_load is None else target_load
    act = c.active
    rows, cols = np.nonzero(nodes >= 0)
    where = nodes[rows, cols]
    on_active = act[where]
    rows, where = rows[on_active], where[on_active]
    peak_caps = np.full((c.n_nodes, c.n_resources), np.inf)
    loaded = 0
    for j in range(c.n_resources):
        capj = c.capacity[:, j]
        ok = act & (capj > 0)
        if not ok.any() or load[ok, j].sum() <= 0:
            continue
        loaded += 1
        u_peak = float((after[ok, j] / capj[ok]).max())
        # (A relative tolerance: the node at the peak itself must not show a rounding
        # excess of a few bytes when nothing needs to move.)
        peak_caps[ok, j] = u_peak * capj[ok] * (1 + 1e-12)
    need = np.maximum(load - peak_caps, 0.0)  # 0 where the cap is inf
    per_node = must_leave_bytes(where, rows, s.demand, need, size_j, per_node)
    bound = created + drained + float(np.where(act, per_node, 0.0).sum())
    if detail is not None:
        detail["knapsack_bytes"] = bound
    if lp and loaded > 1 and int(act.sum()) <= LP_BOUND_UP_TO:
        relaxed = solve_balance_lp(
            state, peak_caps, bins=8, exact_groups_up_to=0, violations=v, load=load
        )
        if detail is not None:
            detail["lp_bytes"] = relaxed.bytes_bound if relaxed.status == "optimal" else None
            detail["lp_s"] = round(relaxed.seconds, 4)
        if relaxed.status == "optimal":
            bound = max(bound, relaxed.bytes_bound)
        if per_node_lp_s > 0:
            fine = solve_balance_lp(
                state,
                peak_caps,
                bins=16,
                exact_groups_up_to=int(act.sum()),
                violations=v,
                load=load,
                time_limit_s=per_node_lp_s,
            )
            if detail is not None:
                detail["lp_per_node_bytes"] = fine.bytes_bound if fine.status == "optimal" else None
                detail["lp_per_node_s"] = round(fine.seconds, 4)
            if fine.status == "optimal":
                bound = max(bound, fine.bytes_bound)
    return bound


def _untangle(
    shard: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    reason: np.ndarray,
    n_nodes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rewrite shards with several changed slots as a set difference.

    Slot-wise, A->B in one slot and B->C in another would be two moves, the first onto a
    node that still holds the shard; as sets it is the single move A->C. *shard* must be
    sorted. Per shard, the sources that are not also targets are paired, in order, with
    the targets that are not also sources (created replicas have source -1 and always
    count); each pair keeps the reason of its source's slot.
    """
    if shard.size == 0:
        return shard, source, target, reason
    if n_nodes is None:
        n_nodes = int(max(source.max(), target.max())) + 1
    base = shard * (n_nodes + 1)
    src_key = base + source + 1
    tgt_key = base + target + 1
    # Only shards with several changed slots can tangle (most have one: skip them).
    same = shard[1:] == shard[:-1]
    multi = np.zeros(shard.size, dtype=bool)
    multi[1:] |= same
    multi[:-1] |= same
    removed = np.ones(shard.size, dtype=bool)
    added = np.ones(shard.size, dtype=bool)
    if multi.any():
        removed[multi] = (source[multi] < 0) | ~np.isin(src_key[multi], tgt_key[multi])
        added[multi] = ~np.isin(tgt_key[multi], src_key[multi])
    if removed.all() and added.all():
        return shard, source, target, reason
    # Both selections keep the shard order, and every shard has as many of one as of
    # the other, so the k-th removed and the k-th added belong to the same shard.
    if removed.sum() != added.sum():  # pragma: no cover - each slot replaces one replica
        raise AssertionError("internal error: unbalanced slot changes")
    return shard[removed], source[removed], target[added], reason[removed]


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
    after: Violations | None = None,
    latency_target_ms: float | None = None,
    t0: float | None = None,
    lp_bound: bool = False,
    per_node_lp_s: float = 0.0,
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
    after : optional
        :func:`~placement.constraints.check` of *target_nodes*, if at hand.
    latency_target_ms : float, optional
        Latency target of the before/after client metrics (default: the policy's).
    t0 : float, optional
        ``time.perf_counter()`` at the start of planning, for ``stats["time_s"]``.
    lp_bound : bool
        Also try the balance LP's bound (see :func:`lower_bound_bytes`); worth its time
        only for plans that trade.
    per_node_lp_s : float
        With *lp_bound*: seconds for the LP with one group per node as well (see
        :func:`lower_bound_bytes`).

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
    changed_rows = np.unique(changed_s)  # shards whose row the plan changes
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
    # Only the changed rows are checked again (recheck equals check, entry for entry;
    # 0.25 s less at a million shards).
    after_v = (
        recheck(state, before_v, final, changed_rows, load=after_load) if after is None else after
    )
    if (max_moves is not None and shard.size > max_moves) or (
        max_bytes is not None and size.sum() > max_bytes * (1 + 1e-12)
    ):
        raise AssertionError("internal error: the plan exceeds its budget")
    t_end = time.perf_counter()
    bound_detail: dict[str, Any] = {}
    bound = lower_bound_bytes(
        state,
        final,
        violations=before_v,
        load=before_load,
        target_load=after_load,
        detail=bound_detail,
        lp=lp_bound,
        per_node_lp_s=per_node_lp_s,
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
    # Client service of the target: only the shards the plan changes are served anew.
    services: list[Any] = []
    before_metrics = _metrics(
        state, before_nodes, before_load, before_v, latency_target_ms, service=services
    )
    before_svc = services[0]
    out_stats = dict(stats or {})
    out_stats.update(
        {
            "time_s": round(time.perf_counter() - t0, 4),
            "bound_s": round(t_bound, 4),
            "bound": bound_detail,
        }
    )
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
        before=before_metrics,
        after=_metrics(
            state, final, after_load, after_v, latency_target_ms, since=(before_svc, changed_rows)
        ),
        stats=out_stats,
    )


def _metrics(
    state: State,
    nodes: np.ndarray,
    load: np.ndarray,
    v: Violations,
    latency_target_ms: float | None,
    since: tuple[Any, np.ndarray] | None = None,
    service: list[Any] | None = None,
) -> dict[str, Any]:
    """Imbalance, violations and client latency of a placement; *since* as in
    :func:`~placement.latency.client_service`; *service*, if given, receives the
    client service computed."""
    svc = client_service(state, nodes, target_ms=latency_target_ms, since=since)
    if service is not None:
        service.append(svc)
    return {
        "imbalance": imbalance(state, nodes, load),
        "violations": v.total,
        "violation_counts": v.counts(),
        "latency": svc.summary(),
    }
