"""Planning: repair first, then improve balance, within a disruption budget.

:func:`plan` is the public entry point. It runs a solver, turns the solver's final
placement into the minimal move set (the diff from the current placement, so search
churn never reaches a plan), re-checks the target against
:func:`placement.constraints.check`, and attaches the evidence: before/after metrics, a
lower bound on the bytes any plan of the same balance must move, and the ratio to it.

Objective composition (priorities, then weights):

1. hard constraints (capacity with headroom, spread, regions, residency, drains, pins,
   budget) — never traded;
2. restore replication, fewest live replicas first;
3. balance: lower the highest *pressure* (``max_r w_r util_r / mean_r``) toward
   ``1 + target_imbalance``, each move accepted only if it lowers the peak by at least
   ``min_gain`` of what its bytes could;
4. latency, when the policy sets ``latency_target_ms``: replicas move toward their
   clients within what the budget left, never above the peak reached (and balance moves
   never serve clients worse);
5. bytes moved, then transfer cost: targets in regions that already hold a live
   replica are preferred (a copy from there is free), and every move's cost is reported.

When the fast engine leaves violations that counting arguments do not prove
unavoidable, a CP-SAT neighbourhood is re-placed (small tight clusters, where single
moves get stuck). ``method="lns"`` then lets CP-SAT re-solve neighbourhoods of two or
three nodes of the engine's plan for the rest of the time limit
(:mod:`placement.solvers.lns`); ``method="exact"`` solves the whole problem with CP-SAT.

Examples
--------
>>> import placement
>>> st = placement.example_state()
>>> p = plan(st, time_limit_s=5)
>>> p.after["violations"]
0
>>> p.bytes_moved >= p.lower_bound_bytes > 0
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from placement.constraints import Violations, check, node_load, recheck
from placement.diffing import imbalance, lower_bound_bytes, plan_from_target
from placement.errors import InfeasibleError, InvalidValueError, PlacementError
from placement.model import State
from placement.plan import REASONS, Plan
from placement.solvers.greedy import Budget, solve_greedy
from placement.solvers.options import check_options

__all__ = ["imbalance", "lower_bound_bytes", "plan"]


def _repair_with_cp_sat(
    state: State,
    nodes: np.ndarray,
    remaining: Violations,
    *,
    budget: dict[str, Any],
    weights: Mapping[str, float] | None,
    target_imbalance: float,
    time_limit_s: float,
    seed: int,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Re-place a neighbourhood of the violating shards with CP-SAT; None if no better.

    The neighbourhood: the shards that still violate something, the nodes that hold them
    or could take them (the least pressured active nodes of their allowed regions), and
    the smaller replicas on those nodes, which CP-SAT may move to make room. Small
    clusters (up to 200,000 shard-node pairs) are taken whole. Balance is held at what
    the engine reached (or the target, if looser), so the repair spends no bytes on it.
    """
    from placement.solvers.exact import solve_subproblem  # OR-Tools only when needed

    c, s = state.cluster, state.shards
    bad = np.unique(
        np.concatenate(
            [
                remaining.failed[:, 0],
                remaining.draining[:, 0],
                remaining.under_replicated,
                remaining.spread[:, 0],
                remaining.regions[:, 0],
                remaining.residency[:, 0],
            ]
        ).astype(np.int64)
    )
    over_nodes = np.unique(remaining.capacity[:, 0]).astype(np.int64)
    if s.n_shards * c.n_nodes <= 200_000:
        shard_subset = np.arange(s.n_shards)
        node_subset = np.arange(c.n_nodes)
    else:
        load = node_load(state, nodes)
        act = c.active
        with np.errstate(divide="ignore", invalid="ignore"):
            pressure = np.where(act, (load / np.maximum(c.capacity, 1e-300)).max(axis=1), np.inf)
        regions = s.allowed_regions[s.residency_class[bad]].any(axis=0) if bad.size else None
        ok = act if regions is None else act & regions[c.region_of]
        cool = np.flatnonzero(ok)[np.argsort(pressure[ok], kind="stable")[:60]]
        holding = (
            nodes[bad][nodes[bad] >= 0].astype(np.int64) if bad.size else np.zeros(0, np.int64)
        )
        node_subset = np.unique(np.concatenate([cool, holding, over_nodes]))
        on = np.isin(nodes, node_subset).any(axis=1)
        others = np.flatnonzero(on)
        others = others[np.argsort(s.demand[others, c.size_index], kind="stable")[:1500]]
        shard_subset = np.unique(np.concatenate([bad, others]))
    reached = imbalance(state, nodes)
    worst = max((x for x in reached.values() if x is not None), default=0.0)
    t0 = time.perf_counter()
    try:
        rows, res = solve_subproblem(
            state,
            nodes,
            shard_subset,
            node_subset,
            target_imbalance=max(float(target_imbalance), worst),
            weights=weights,
            time_limit_s=max(time_limit_s, 0.1),
            # CP-SAT's deterministic clock (one worker): the same input and seed give the
            # same plan however busy the machine is, as long as the wall limit is not hit.
            deterministic_time=_CP_SAT_REPAIR_WORK,
            seed=seed,
            **budget,
        )
    except PlacementError:
        return None, {"accepted": False, "status": "error"}
    info: dict[str, Any] = {
        "status": res.status,
        "shards": int(shard_subset.size),
        "nodes": int(node_subset.size),
        "time_s": round(time.perf_counter() - t0, 3),
    }
    candidate = nodes.copy()
    candidate[shard_subset] = rows
    after = check(state, candidate)
    info["accepted"] = after.total < remaining.total
    info["violations_left"] = int(after.total if info["accepted"] else remaining.total)
    return (candidate if info["accepted"] else None), info


def _improve_latency(
    state: State,
    nodes: np.ndarray,
    max_moves: int | None,
    max_bytes: float | None,
    time_left_s: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The latency phase within the budget the earlier phases left (counted on the safe
    side: every changed slot as a move). Returns (nodes, slots it changed, stats)."""
    from placement.latency import client_service
    from placement.solvers.geo import improve_latency, polish_exact

    before = state.placement.nodes
    # Plans should not lower the share of client demand served within the target (the
    # interchange spec): aim at least at the input's compliance, which repairs and
    # balance moves may have eroded, as well as the policy's coverage target.
    served = client_service(state, before).compliance
    goal = max(state.policy.coverage_target, served if served is not None else 0.0)
    changed = nodes != before
    rows = np.nonzero(changed)[0]
    used_bytes = float(state.shards.demand[rows, state.cluster.size_index].sum())
    moves_left = None if max_moves is None else max(max_moves - int(changed.sum()), 0)
    bytes_left = None if max_bytes is None else max(max_bytes - used_bytes, 0.0)
    out, stats = improve_latency(
        state,
        nodes,
        max_moves=moves_left,
        max_bytes=bytes_left,
        compliance_goal=min(goal, 1.0),
        time_limit_s=max(time_left_s, 0.5),
        seed=seed,
    )
    info = stats.to_dict()
    if (out != nodes).any():
        out, info["exact_polish"] = polish_exact(
            state, nodes, out, max_moves=moves_left, max_bytes=bytes_left, seed=seed
        )
    return out, out != nodes, info


#: Deterministic work units (about seconds of one core) for the CP-SAT repair step.
_CP_SAT_REPAIR_WORK = 1.0


def _maybe_feasible(state: State, max_moves: int | None, max_bytes: float | None) -> bool:
    """False when counting arguments already prove that no valid plan exists."""
    from placement.diagnose import diagnose

    try:
        d = diagnose(state, max_moves=max_moves, max_bytes=max_bytes, use_cp_sat=False)
    except Exception:  # noqa: BLE001 - the diagnosis is advisory here
        return True
    return d.feasible is not False


def _diagnose(state: State, **budget: Any) -> Any:
    """Why the engine found no valid plan: counting arguments at any size, plus a CP-SAT
    core on small instances. None if the diagnosis itself fails (it must never hide the
    original error)."""
    from placement.diagnose import diagnose  # OR-Tools only on this error path

    pairs = state.shards.n_shards * state.cluster.n_nodes
    try:
        return diagnose(state, time_limit_s=5.0, use_cp_sat=pairs <= 20_000, **budget)
    except Exception:  # noqa: BLE001 - a failed diagnosis must not mask the infeasibility
        return None


def plan(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    target_imbalance: float = 0.02,
    trigger_imbalance: float | None = None,
    min_gain: float = 0.5,
    weights: Mapping[str, float] | None = None,
    time_limit_s: float = 10.0,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], bool | None] | None = None,
    allow_partial: bool = False,
    method: str = "fast",
    latency: bool = True,
    lns_steps: int | None = None,
) -> Plan:
    """Plan the smallest safe set of moves: repair every violation, then balance.

    Parameters
    ----------
    state : State
        The cluster as it is (failed and draining nodes marked in ``cluster.state``).
    max_moves, max_bytes : optional
        Disruption budget for the whole plan, repairs included.
    max_moves_per_node, max_moves_per_group : optional
        Most moves into or out of one node / of one group's shards.
    target_imbalance : float
        Balancing stops once every active node's pressure is within ``1 + target``.
    trigger_imbalance : float, optional
        Balance only if the current peak pressure exceeds ``1 + trigger`` (repairs always
        run). None balances whenever above the target.
    min_gain : float
        In (0, 1]: a balance move must lower the peak by at least this share of what its
        bytes could (1 demands perfect moves; small values allow more churn).
    weights : mapping of resource to float, optional
        Balance weight of each resource (default 1 each; 0 ignores a resource).
    time_limit_s : float
        Wall-clock limit; the best plan found so far is returned when it passes.
    seed : int
        Recorded for reproducibility; the greedy engine is deterministic for a given input.
    progress : callable, optional
        Called with a dict (phase, done, total, moves, bytes_moved) about every thousand
        steps; returning False stops early with the best plan so far.
    allow_partial : bool
        Return a plan even if hard constraints remain violated (e.g. the budget is too
        small, or capacity is missing); its ``after["violations"]`` says how many.
    latency : bool
        When the policy sets ``latency_target_ms`` and shards have clients, finish with
        the latency phase (:func:`placement.solvers.geo.improve_latency`): replicas move
        toward their clients within what the budget left, never raising any node above
        the peak pressure reached; its moves have reason ``"latency"``. False skips it.
    method : {"fast", "lns", "exact"}
        ``"fast"``: the vectorized engine (any size). ``"lns"``: the engine, then CP-SAT
        re-solves neighbourhoods of two or three nodes of its plan
        (:func:`placement.solvers.lns.improve`) until the time limit, *lns_steps*, or no
        neighbourhood improves; the plan is never worse than the engine's, and on small
        clusters it closes most of the engine's distance to exact mode (the closing
        measurements are in ``docs/engine.md``). Skipped, with the reason in
        ``stats["lns"]``, when the plan is not valid or the latency phase moved replicas
        (the CP-SAT model does not see client latency). ``"exact"``: the CP-SAT model of
        :mod:`placement.solvers.exact`, hinted with the engine's plan, which proves
        optimality on small instances (about 20 nodes and 2,000 shards) and otherwise
        returns its best plan and bound within *time_limit_s*.
    lns_steps : int, optional
        With ``method="lns"``: most neighbourhoods to solve. Each runs for a fixed
        amount of CP-SAT's deterministic time, so a search that ends by steps (or
        converges) gives the same plan for the same seed on any machine; one cut short
        by *time_limit_s* depends on the machine's speed.

    Returns
    -------
    Plan

    Raises
    ------
    InvalidValueError
        A parameter is out of range.
    InfeasibleError
        No plan within the budget satisfies every hard constraint (unless *allow_partial*).
        Its ``diagnosis`` names the conflicting constraints and a fix, when found.
    """
    t0 = time.perf_counter()
    w = check_options(
        state,
        max_moves=max_moves,
        max_bytes=max_bytes,
        max_moves_per_node=max_moves_per_node,
        max_moves_per_group=max_moves_per_group,
        target_imbalance=target_imbalance,
        trigger_imbalance=trigger_imbalance,
        time_limit_s=time_limit_s,
        weights=weights,
    )
    if not 0 < min_gain <= 1:
        raise InvalidValueError(f"min_gain must be in (0, 1], got {min_gain!r}.")
    if method not in ("fast", "lns", "exact"):
        raise InvalidValueError(f"method must be 'fast', 'lns' or 'exact', got {method!r}.")
    if lns_steps is not None and (
        isinstance(lns_steps, bool) or not isinstance(lns_steps, (int, np.integer)) or lns_steps < 0
    ):
        raise InvalidValueError(f"lns_steps must be a whole number >= 0, got {lns_steps!r}.")
    if method == "exact":
        from placement.solvers.exact import plan_exact  # OR-Tools only when asked for

        if trigger_imbalance is not None:
            # Below the trigger, balance must not get worse but need not improve: aim
            # at the current imbalance (the exact model has no separate trigger).
            now = imbalance(state, state.placement.nodes)
            worst = max((x for x in now.values() if x is not None), default=0.0)
            if worst <= trigger_imbalance:
                target_imbalance = max(float(target_imbalance), worst)
        return plan_exact(
            state,
            max_moves=max_moves,
            max_bytes=max_bytes,
            max_moves_per_node=max_moves_per_node,
            max_moves_per_group=max_moves_per_group,
            target_imbalance=target_imbalance,
            weights=weights,
            time_limit_s=time_limit_s,
            seed=seed,
        )

    before_nodes = state.placement.nodes
    before_load = node_load(state, before_nodes)
    before_v = check(state, before_nodes, load=before_load)
    before_imb = imbalance(state, before_nodes, before_load)
    do_balance = True
    if trigger_imbalance is not None:
        worst = max((x for x in before_imb.values() if x is not None), default=0.0)
        do_balance = worst > trigger_imbalance

    result = solve_greedy(
        state,
        budget=Budget(max_moves, max_bytes, max_moves_per_node, max_moves_per_group),
        target_imbalance=float(target_imbalance),
        min_gain=float(min_gain),
        weights=w,
        time_limit_s=float(time_limit_s),
        progress=progress,
        balance=do_balance,
        seed=int(seed),
        before=before_v,
    )
    final = result.nodes
    repair_info: dict[str, Any] = {}
    # The engine changed few rows of most plans: check those again, not every row.
    remaining = recheck(state, before_v, final, np.flatnonzero((final != before_nodes).any(axis=1)))
    time_left = time_limit_s - (time.perf_counter() - t0)
    if remaining and time_left > 0.5 and _maybe_feasible(state, max_moves, max_bytes):
        # The one-move-at-a-time repair cannot make room by moving other replicas out of
        # the way (small, tight clusters): let CP-SAT re-place a neighbourhood.
        repaired, repair_info = _repair_with_cp_sat(
            state,
            final,
            remaining,
            budget=dict(
                max_moves=max_moves,
                max_bytes=max_bytes,
                max_moves_per_node=max_moves_per_node,
                max_moves_per_group=max_moves_per_group,
            ),
            weights=weights,
            target_imbalance=target_imbalance,
            time_limit_s=time_left - 0.25,
            seed=seed,
        )
        if repaired is not None:
            final = repaired
    geo_changed = None
    if latency and state.policy.latency_target_ms is not None and state.shards.clients.nnz:
        final, geo_changed, geo_info = _improve_latency(
            state, final, max_moves, max_bytes, time_limit_s - (time.perf_counter() - t0), seed
        )
        repair_info = {**repair_info, "geo": geo_info} if repair_info else {"geo": geo_info}
    final.setflags(write=False)

    # Each changed slot serves the reason of the engine's first move out of it: a drained
    # replica later moved again for balance is still a drain. (The diff itself, chains
    # untangled, the re-check and the bound are plan_from_target's.)
    reasons = np.full(before_nodes.shape, -1, dtype=np.int8)
    recorded = np.zeros(before_nodes.shape, dtype=bool)
    if result.shard:
        rec_s = np.asarray(result.shard, dtype=np.int64)
        rec_j = np.asarray(result.slot, dtype=np.int64)
        rec_r = np.asarray(result.reason, dtype=np.int8)
        keys = rec_s * before_nodes.shape[1] + rec_j
        _, first = np.unique(keys, return_index=True)  # index of each slot's first record
        reasons[rec_s[first], rec_j[first]] = rec_r[first]
        recorded[rec_s, rec_j] = True
    if geo_changed is not None:  # slots only the latency phase moved serve latency
        reasons[geo_changed & ~recorded] = REASONS.index("latency")
    if repair_info.get("accepted"):
        # Slots CP-SAT changed have no engine record: name the rule each source breaks.
        from placement.solvers.exact import slot_reasons

        s_new, j_new = np.nonzero((final != before_nodes) & (reasons < 0))
        reasons[s_new, j_new] = slot_reasons(state, s_new, before_nodes[s_new, j_new])
    stats = dict(result.stats)
    if "geo" in repair_info:
        stats["latency"] = repair_info.pop("geo")
    if repair_info:
        stats["cp_sat_repair"] = repair_info
    stats.update({"seed": seed, "balanced": do_balance})
    # The check made before the repair and latency steps still holds if they changed
    # nothing (a check costs 0.25 s at a million shards).
    result_plan = plan_from_target(
        state,
        final,
        reasons,
        stats,
        max_moves=max_moves,
        max_bytes=max_bytes,
        allow_partial=True,
        before=before_v,
        before_load=before_load,
        after=remaining if final is result.nodes else None,
        t0=t0,
        # (Trades are what the knapsack bound cannot see.)
        lp_bound=bool(stats.get("traded")),
    )
    if result_plan.after["violations"] and not allow_partial:
        after_v = check(state, result_plan.target_nodes)
        described = after_v.describe(state, limit=3)
        detail = "; ".join(
            f"{k} x{n} (e.g. {', '.join(str(d) for d in described[k])})"
            for k, n in after_v.counts().items()
            if n
        )
        hint = (
            "Raise the budget (max_moves / max_bytes)"
            if (max_moves is not None or max_bytes is not None)
            else "Add capacity or relax the policy"
        )
        diagnosis = _diagnose(
            state,
            max_moves=max_moves,
            max_bytes=max_bytes,
            max_moves_per_node=max_moves_per_node,
            max_moves_per_group=max_moves_per_group,
        )
        if diagnosis is not None and diagnosis.conflicts:
            hint = f"Diagnosis: {diagnosis.summary()} Or"
        else:
            hint += ","
        raise InfeasibleError(
            f"No valid plan found: after {result_plan.n_moves} moves these hard constraints "
            f"still fail: {detail}. {hint} pass allow_partial=True for the best partial plan.",
            diagnosis=diagnosis,
        )
    if method == "lns":
        result_plan = _improve_by_lns(
            state,
            result_plan,
            weights=w,
            target_imbalance=target_imbalance if do_balance else _current_worst(before_imb),
            budget=dict(
                max_moves=max_moves,
                max_bytes=max_bytes,
                max_moves_per_node=max_moves_per_node,
                max_moves_per_group=max_moves_per_group,
            ),
            latency_moved=geo_changed is not None and bool(geo_changed.any()),
            time_left_s=time_limit_s - (time.perf_counter() - t0),
            seed=seed,
            steps=lns_steps,
            progress=progress,
            t0=t0,
        )
    return result_plan


def _current_worst(imb: Mapping[str, float | None]) -> float:
    return max((x for x in imb.values() if x is not None), default=0.0)


def _improve_by_lns(
    state: State,
    fast: Plan,
    *,
    weights: np.ndarray,
    target_imbalance: float,
    budget: dict[str, Any],
    latency_moved: bool,
    time_left_s: float,
    seed: int,
    steps: int | None,
    progress: Callable[[dict[str, Any]], bool | None] | None,
    t0: float,
) -> Plan:
    """The engine's plan improved by :func:`placement.solvers.lns.improve`, re-checked."""
    if fast.after["violations"]:
        fast.stats["lns"] = {"skipped": "the engine's plan is partial; LNS improves valid plans"}
        return fast
    if latency_moved:
        fast.stats["lns"] = {
            "skipped": "the latency phase moved replicas; CP-SAT does not see latency"
        }
        return fast
    from placement.diffing import LP_BOUND_UP_TO
    from placement.solvers.exact import slot_reasons
    from placement.solvers.lns import improve

    traded = bool(fast.stats.get("traded"))
    # A plan that trades is bounded by the balance LP; after a long search the LP with
    # one group per node is worth its seconds (a tenth of the time left, at most 30 s).
    lp_s = (
        min(0.1 * time_left_s, 30.0)
        if traded and int(state.cluster.active.sum()) <= LP_BOUND_UP_TO
        else 0.0
    )
    res = improve(
        state,
        fast.target_nodes,
        weights=weights,
        target_imbalance=float(target_imbalance),
        **budget,
        # Leave the diff, the re-check and the bound their time (0.5 s at a million
        # shards) inside the limit.
        time_limit_s=max(time_left_s - lp_s - 0.1 - 0.5e-6 * state.shards.n_shards, 0.0),
        seed=seed,
        max_steps=steps,
        progress=progress,
    )
    info = {
        "steps": res.steps,
        "improved": res.improved,
        "stopped": res.stopped,
        "time_s": res.time_s,
        "objective_before": res.objective_before,
        "objective": res.objective,
    }
    if res.improved == 0:
        fast.stats["lns"] = info
        return fast
    before_nodes = state.placement.nodes
    final = res.rows
    # A slot the engine also moved keeps the engine's reason (a drained replica stays a
    # drain); a slot only LNS moved is named by the rule its source breaks, else balance.
    reasons = np.full(before_nodes.shape, -1, dtype=np.int8)
    s_chg, j_chg = np.nonzero(final != before_nodes)
    width = state.cluster.n_nodes + 1
    fast_keys = fast.shard.astype(np.int64) * width + fast.source + 1
    order = np.argsort(fast_keys, kind="stable")
    keys = s_chg.astype(np.int64) * width + before_nodes[s_chg, j_chg] + 1
    if order.size:
        at = np.minimum(np.searchsorted(fast_keys[order], keys), order.size - 1)
        hit = fast_keys[order][at] == keys
        reasons[s_chg[hit], j_chg[hit]] = fast.reason[order[at[hit]]]
    s_new, j_new = np.nonzero((final != before_nodes) & (reasons < 0))
    reasons[s_new, j_new] = slot_reasons(state, s_new, before_nodes[s_new, j_new])
    stats = {k: v for k, v in fast.stats.items() if k not in ("time_s", "bound_s", "bound")}
    stats["lns"] = info
    stats["fast_bytes_moved"] = fast.bytes_moved
    out = plan_from_target(
        state,
        final,
        reasons,
        stats,
        max_moves=budget["max_moves"],
        max_bytes=budget["max_bytes"],
        allow_partial=True,
        t0=t0,
        lp_bound=traded,
        per_node_lp_s=lp_s,
    )
    if out.after["violations"]:  # pragma: no cover - the model encodes every rule check() tests
        raise AssertionError(f"internal error: the LNS plan violates {out.after}")
    return out
