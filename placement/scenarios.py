"""Cluster events as state transforms, each followed by one call to :func:`plan`.

Each ``with_*`` function returns a new :class:`State` (inputs are never mutated); each
``plan_*`` function applies the event and plans for it in one call.

>>> import placement
>>> st = placement.synthetic_state(60, 3000, seed=1)
>>> new_state, p = plan_drain(st, [st.cluster.node_ids[0]])
>>> p.after["violations"], set(p.reason_names()) <= {"drain", "balance"}
(0, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from placement.errors import UnknownIdError, format_ids
from placement.model import Cluster, NodeState, Placement, State
from placement.plan import Plan
from placement.planner import plan

__all__ = [
    "plan_add_nodes",
    "plan_capacity_change",
    "plan_drain",
    "plan_failure",
    "plan_geo",
    "plan_rebalance",
    "with_capacity",
    "with_new_nodes",
    "with_node_state",
]


def _indices(state: State, node_ids: Iterable[str]) -> np.ndarray:
    index = state.cluster.node_index()
    ids = list(node_ids)
    unknown = [n for n in ids if n not in index]
    if unknown:
        raise UnknownIdError(
            f"Unknown node id(s) {format_ids(unknown)}; they are not in the cluster."
        )
    return np.array([index[n] for n in ids], dtype=np.int64)


def with_node_state(state: State, node_ids: Iterable[str], node_state: str | NodeState) -> State:
    """The state with the given nodes marked active, draining or failed."""
    ns = node_state if isinstance(node_state, NodeState) else NodeState.parse(str(node_state))
    new = state.cluster.state.copy()
    new[_indices(state, node_ids)] = ns
    return state.with_cluster(state.cluster.with_state(new))


def with_failed_domain(state: State, level: str, domain: str) -> State:
    """The state with every node of one domain (e.g. a zone) failed."""
    c = state.cluster
    k = c.level_index(level)
    names = c.domain_names[k]
    if domain not in names:
        raise UnknownIdError(f"Unknown {level} {domain!r}; known: {format_ids(names, limit=10)}.")
    members = np.flatnonzero(c.domain_of[:, k] == names.index(domain))
    return with_node_state(state, [c.node_ids[i] for i in members], NodeState.FAILED)


def with_capacity(state: State, changes: Mapping[str, Mapping[str, float]]) -> State:
    """The state with new capacities, ``{node_id: {resource: capacity}}``."""
    c = state.cluster
    cap = c.capacity.copy()
    idx = _indices(state, changes)
    for i, values in zip(idx.tolist(), changes.values(), strict=True):
        for res, value in values.items():
            cap[i, c.resource_index(res)] = value
    return state.with_cluster(_rebuild(c, capacity=cap))


def with_new_nodes(
    state: State,
    node_ids: Sequence[str],
    capacity: Any,
    location: Sequence[Sequence[str]],
    *,
    bandwidth_bps: Sequence[float] | None = None,
) -> State:
    """The state with empty new nodes added (active)."""
    c = state.cluster
    n_new = len(node_ids)
    cap = np.vstack(
        [c.capacity, np.asarray(capacity, dtype=np.float64).reshape(n_new, c.n_resources)]
    )
    loc = c.locations() + [list(x) for x in location]
    bw = np.concatenate(
        [
            c.bandwidth_bps,
            np.full(n_new, np.nan) if bandwidth_bps is None else np.asarray(bandwidth_bps, float),
        ]
    )
    cluster = _rebuild(
        c,
        node_ids=[*c.node_ids, *node_ids],
        capacity=cap,
        location=loc,
        state=np.concatenate([c.state, np.zeros(n_new, dtype=np.int8)]),
        bandwidth_bps=bw,
    )
    p = state.placement
    return State(
        cluster,
        state.shards,
        Placement.build(p.nodes, n_nodes=cluster.n_nodes, pinned=p.pinned),
        state.policy,
    )


def _rebuild(c: Cluster, **changes: Any) -> Cluster:
    args: dict[str, Any] = {
        "node_ids": c.node_ids,
        "resources": c.resources,
        "capacity": c.capacity,
        "levels": c.levels,
        "location": c.locations(),
        "size_resource": c.size_resource,
        "state": c.state,
        "bandwidth_bps": c.bandwidth_bps,
        "links": c.link_records(),
        "regions": c.regions,
    }
    args.update(changes)
    return Cluster.build(**args)


def plan_add_nodes(
    state: State,
    node_ids: Sequence[str],
    capacity: Any,
    location: Sequence[Sequence[str]],
    **options: Any,
) -> tuple[State, Plan]:
    """Nodes joined: move onto them only what balance needs."""
    new = with_new_nodes(state, node_ids, capacity, location)
    return new, plan(new, **options)


def plan_drain(state: State, node_ids: Iterable[str], **options: Any) -> tuple[State, Plan]:
    """Graceful departure: empty the nodes (their replicas stay readable meanwhile)."""
    new = with_node_state(state, node_ids, NodeState.DRAINING)
    options.setdefault("trigger_imbalance", new.policy.imbalance_warning)
    return new, plan(new, **options)


def plan_failure(
    state: State, node_ids: Iterable[str] = (), *, zone: str | None = None, **options: Any
) -> tuple[State, Plan]:
    """Emergency: nodes (or a whole zone) failed; restore replication, fewest live replicas first.

    Balancing is left for later (``trigger_imbalance`` defaults to the critical level) so the
    emergency plan moves only what the failure forces.
    """
    new = with_failed_domain(state, state.spread_level, zone) if zone is not None else state
    ids = list(node_ids)
    if ids:
        new = with_node_state(new, ids, NodeState.FAILED)
    options.setdefault("trigger_imbalance", new.policy.imbalance_critical)
    return new, plan(new, **options)


def plan_capacity_change(
    state: State, changes: Mapping[str, Mapping[str, float]], **options: Any
) -> tuple[State, Plan]:
    """Capacities changed: relieve nodes now above headroom, rebalance if needed."""
    new = with_capacity(state, changes)
    return new, plan(new, **options)


def plan_rebalance(
    state: State, *, maintenance: bool = False, **options: Any
) -> tuple[State, Plan]:
    """Load drifted: act only above the policy's warning level; stop inside the target.

    ``maintenance=True`` is the bulk rebalance of a maintenance window: always act, and
    aim tighter (1%).
    """
    if maintenance:
        options.setdefault("target_imbalance", 0.01)
    else:
        options.setdefault("trigger_imbalance", state.policy.imbalance_warning)
    return state, plan(state, **options)


def plan_geo(
    state: State,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    latency_target_ms: float | None = None,
    compliance_goal: float | None = None,
    coverage_goal: float | None = None,
    slo_share: float | None = None,
    time_limit_s: float = 10.0,
    seed: int = 0,
    allow_partial: bool = False,
) -> Plan:
    """The weekly geographic optimization: repair, then bring replicas near their clients.

    First the engine repairs what violates the policy (no balancing: balance is not this
    scenario's goal, and the geo phase keeps every node below the repaired placement's
    highest pressure); then :func:`placement.solvers.geo.improve_latency` moves replicas
    toward their clients until latency compliance and regional coverage reach their goals,
    within what is left of the budget, fewest bytes and lowest transfer cost first. The
    plan is built from the final placement like every plan
    (:func:`placement.diffing.plan_from_target`); its moves for latency have the reason
    ``"latency"``, and ``stats["geo"]`` holds the geo phase's figures (compliance and
    coverage before and after, benefit per GB, the latency lower bound on bytes).

    Parameters
    ----------
    state : State
    max_moves, max_bytes : optional
        Budget of the whole plan, repairs included.
    latency_target_ms : float, optional
        Default: the policy's ``latency_target_ms``, else the runbook's 50 ms. The state
        itself is left unchanged (so the plan matches its hash).
    compliance_goal, coverage_goal : float, optional
        Shares of client demand in [0, 1]; default ``policy.coverage_target`` (runbook:
        80%). 1.0 goes as far as the budget and the cluster allow.
    slo_share : float, optional
        Share of a shard's client demand whose region the latency SLO protects
        (default :data:`placement.latency.DEFAULT_SLO_SHARE`).
    time_limit_s : float
        For the whole plan; the geo phase gets what the repair leaves (at least 10%).
    seed : int
    allow_partial : bool
        As for :func:`placement.planner.plan`.

    Returns
    -------
    Plan

    Raises
    ------
    InvalidValueError, InfeasibleError

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(30, 600, seed=2)
    >>> p = plan_geo(st, compliance_goal=1.0, coverage_goal=1.0, max_moves=40)
    >>> p.n_moves <= 40 and p.after["violations"] == 0
    True
    >>> p.after["latency"]["compliance"] >= p.before["latency"]["compliance"]
    True
    """
    import math
    import time

    from placement.diffing import plan_from_target, slot_reasons
    from placement.errors import InvalidValueError
    from placement.latency import DEFAULT_SLO_SHARE, latency_levels
    from placement.solvers.geo import improve_latency, polish_exact

    t0 = time.perf_counter()
    levels = latency_levels(state.policy, target_ms=latency_target_ms)
    for name, goal in (("compliance_goal", compliance_goal), ("coverage_goal", coverage_goal)):
        if goal is not None and not (isinstance(goal, (int, float)) and 0 <= goal <= 1):
            raise InvalidValueError(f"{name} must be a share in [0, 1], got {goal!r}.")
    share = DEFAULT_SLO_SHARE if slo_share is None else slo_share
    if not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise InvalidValueError(f"slo_share must be in (0, 1], got {share!r}.")
    if not (
        isinstance(time_limit_s, (int, float)) and time_limit_s > 0 and math.isfinite(time_limit_s)
    ):
        raise InvalidValueError(f"time_limit_s must be a positive number, got {time_limit_s!r}.")
    # Repairs only: an infinite trigger keeps the engine from balancing.
    repaired = plan(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        trigger_imbalance=math.inf,
        time_limit_s=time_limit_s,
        seed=seed,
        allow_partial=allow_partial,
    )
    # The whole plan keeps the budget: the geo phase gets what the repairs left. (A geo
    # move of a slot the repair moved already costs no extra move in the final diff, so
    # this is on the safe side.)
    moves_left = None if max_moves is None else max(max_moves - repaired.n_moves, 0)
    bytes_left = None if max_bytes is None else max(max_bytes - repaired.bytes_moved, 0.0)
    left_s = max(time_limit_s - (time.perf_counter() - t0), 0.1 * time_limit_s)
    final, geo = improve_latency(
        state,
        repaired.target_nodes,
        max_moves=moves_left,
        max_bytes=bytes_left,
        target_ms=levels.target_ms,
        compliance_goal=compliance_goal,
        coverage_goal=coverage_goal,
        slo_share=share,
        time_limit_s=left_s,
        seed=seed,
    )
    stats = dict(repaired.stats)
    for key in ("time_s", "bound_s"):
        stats.pop(key, None)
    stats["repair_moves"] = repaired.n_moves
    stats["geo"] = geo.to_dict()
    if (final != repaired.target_nodes).any():
        final, stats["geo"]["exact_polish"] = polish_exact(
            state,
            repaired.target_nodes,
            final,
            target_ms=levels.target_ms,
            slo_share=share,
            max_moves=moves_left,
            max_bytes=bytes_left,
            seed=seed,
        )
    return plan_from_target(
        state,
        final,
        slot_reasons(state.placement.nodes, repaired),
        stats,
        default_reason="latency",
        max_moves=max_moves,
        max_bytes=max_bytes,
        allow_partial=allow_partial,
        latency_target_ms=levels.target_ms,
        t0=t0,
    )
