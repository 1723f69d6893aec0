"""After (partial) execution: what was done, and a plan that finishes the job.

:func:`verify` compares an *observed* state, read from the cluster after some or all of
a plan's moves ran, with the plan and the state it was made for. Each move is

* **done**: its target holds the shard and its source no longer does;
* **copied**: its target holds the shard but its source still does too (only the delete
  is missing; the copy is safe);
* **pending**: not started, or started and not finished, and it can still run: its target
  is active and does not hold the shard, and a live replica remains to copy from;
* **failed**: it can no longer run as planned: its target node failed or is draining, its
  source replica disappeared before the copy landed, or no live replica is left.

It also lists **unexpected changes** (replicas that appeared or vanished where no move
explains them, node states that changed) and **replica integrity**: shards under-replicated,
below ``min_available`` or lost (no live replica) in the observed state.

:func:`resume` turns the same inputs into a plan for the observed state: the original
plan's pending moves that still apply come first (their targets are kept), and if the
result is still invalid (a node died midway, a move failed) the planner repairs what is
left from there. Each step is idempotent: resuming a finished execution gives an empty
plan, and resuming the same observation twice gives the same plan.

Examples
--------
>>> import placement
>>> from placement.scenarios import plan_drain
>>> st = placement.synthetic_state(30, 600, seed=1)
>>> new, p = plan_drain(st, [st.cluster.node_ids[0]])
>>> verify(new, p, new).counts()["pending"] == p.n_moves   # nothing ran yet
True
>>> done = new.with_placement(placement.Placement.build(p.target_nodes, n_nodes=new.cluster.n_nodes))
>>> report = verify(new, p, done)
>>> report.complete, resume(new, p, done).n_moves
(True, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import check, node_load
from placement.errors import InvalidValueError, format_ids
from placement.model import EMPTY, NodeState, Placement, State
from placement.plan import REASONS, Plan, apply_moves, transfer_cost

__all__ = ["VerifyReport", "resume", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    """How an observed state compares with a plan (see the module notes).

    Attributes
    ----------
    done, copied, pending, failed : ndarray of int
        Indices of the plan's moves in each status.
    failure : dict of int to str
        Why each failed move failed.
    unexpected : list of dict
        Changes no move explains: ``{"kind": "replica-added" | "replica-removed" |
        "node-state" | "node-added", ...ids}``.
    under_replicated, below_min, lost : list of str
        Shard ids in the observed state with fewer live replicas than ``replicas`` /
        than ``min_available`` / with none at all.
    """

    n_moves: int
    done: np.ndarray
    copied: np.ndarray
    pending: np.ndarray
    failed: np.ndarray
    failure: dict[int, str]
    unexpected: list[dict[str, Any]]
    under_replicated: list[str]
    below_min: list[str]
    lost: list[str]
    observed_violations: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "moves": self.n_moves,
            "done": int(self.done.size),
            "copied": int(self.copied.size),
            "pending": int(self.pending.size),
            "failed": int(self.failed.size),
            "unexpected": len(self.unexpected),
            "under_replicated": len(self.under_replicated),
            "below_min": len(self.below_min),
            "lost": len(self.lost),
        }

    @property
    def complete(self) -> bool:
        """Every move done (or copied), none failed, no unexpected change, no shard lost."""
        return (
            self.pending.size == 0
            and self.failed.size == 0
            and not self.unexpected
            and not self.lost
        )

    @property
    def ok(self) -> bool:
        """Nothing went wrong (moves may still be pending)."""
        return self.failed.size == 0 and not self.unexpected and not self.lost

    def to_dict(self, *, limit: int | None = 50) -> dict[str, Any]:
        cut = slice(None) if limit is None else slice(0, limit)
        return {
            "complete": self.complete,
            "ok": self.ok,
            "counts": self.counts(),
            "failed": [{"move": int(k), "why": self.failure[int(k)]} for k in self.failed[cut]],
            "pending": self.pending[cut].tolist(),
            "copied": self.copied[cut].tolist(),
            "unexpected": self.unexpected[cut],
            "under_replicated": self.under_replicated[cut],
            "below_min": self.below_min[cut],
            "lost": self.lost[cut],
            "observed_violations": self.observed_violations,
        }

    def to_text(self, *, limit: int | None = 20) -> str:
        c = self.counts()
        head = (
            f"{c['done']} of {c['moves']} moves done, {c['copied']} copied (delete pending), "
            f"{c['pending']} pending, {c['failed']} failed; {c['unexpected']} unexpected "
            f"changes; shards: {c['lost']} lost, {c['below_min']} below min_available, "
            f"{c['under_replicated']} under-replicated"
        )
        lines = [("complete: " if self.complete else "") + head]
        cut = slice(None) if limit is None else slice(0, limit)
        for k in self.failed[cut].tolist():
            lines.append(f"  failed move {k}: {self.failure[k]}")
        for u in self.unexpected[cut]:
            lines.append("  unexpected " + ", ".join(f"{k}={v}" for k, v in u.items()))
        if self.lost:
            lines.append(f"  lost shards: {format_ids(self.lost, limit=10)}")
        if self.below_min:
            lines.append(f"  below min_available: {format_ids(self.below_min, limit=10)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Mapped:
    """The plan's moves and the state's placement in the observed state's indices."""

    shard: np.ndarray
    source: np.ndarray
    target: np.ndarray
    initial: np.ndarray  # (S_obs, W) the state's placement, rows in observed order


def _map(state: State, plan: Plan, observed: State) -> _Mapped:
    c, o = state.cluster, observed.cluster
    obs_node = o.node_index()
    missing = [n for n in c.node_ids if n not in obs_node]
    if missing:
        raise InvalidValueError(
            f"The observed state lacks nodes {format_ids(missing)} of the planned state; an "
            "observation must list every node (mark a dead node 'failed' rather than drop it)."
        )
    obs_shard = observed.shards.id_index()
    sids = state.shards.ids.tolist()
    lacking = [x for x in sids if x not in obs_shard]
    if lacking or observed.shards.n_shards != state.shards.n_shards:
        extra = observed.shards.n_shards - (len(sids) - len(lacking))
        raise InvalidValueError(
            f"The observed state does not have the planned state's shards (missing "
            f"{format_ids(lacking) or 'none'}, {extra} extra); verify against the state the "
            "plan was made for."
        )
    node_map = np.array([obs_node[n] for n in c.node_ids], dtype=np.int64)
    shard_map = np.array([obs_shard[x] for x in sids], dtype=np.int64)
    nodes = state.placement.nodes
    mapped = np.where(nodes >= 0, node_map[np.maximum(nodes, 0)], EMPTY)
    width = max(mapped.shape[1], observed.placement.width)
    initial = np.full((observed.shards.n_shards, width), EMPTY, dtype=np.int64)
    initial[shard_map, : mapped.shape[1]] = mapped
    src = plan.source
    return _Mapped(
        shard=shard_map[plan.shard],
        source=np.where(src >= 0, node_map[np.maximum(src, 0)], EMPTY),
        target=node_map[plan.target],
        initial=initial,
    )


def verify(state: State, plan: Plan, observed: State) -> VerifyReport:
    """Compare an observed state after (partial) execution with a plan.

    Parameters
    ----------
    state : State
        The state the plan was made for.
    plan : Plan
    observed : State
        The cluster as read now: the same nodes (maybe more) and shards; dead nodes
        marked failed.

    Returns
    -------
    VerifyReport

    Raises
    ------
    InvalidValueError
        The observed state lacks nodes or shards of the planned one.
    """
    mp = _map(state, plan, observed)
    o = observed.cluster
    obs_nodes = observed.placement.nodes
    obs_state = o.state
    planned_state = state.cluster.state
    status = np.empty(plan.n_moves, dtype=np.int8)  # 0 done, 1 copied, 2 pending, 3 failed
    failure: dict[int, str] = {}
    nid = o.node_ids
    for k in range(plan.n_moves):
        s, a, b = int(mp.shard[k]), int(mp.source[k]), int(mp.target[k])
        row = set(obs_nodes[s][obs_nodes[s] >= 0].tolist())
        # A replica planned from a failed node (or created) has no source copy to delete.
        src_real = a >= 0 and planned_state[plan.source[k]] != NodeState.FAILED
        if b in row:
            status[k] = 1 if (src_real and a in row) else 0
            continue
        live = [n for n in row if obs_state[n] != NodeState.FAILED]
        if obs_state[b] != NodeState.ACTIVE:
            why = f"target node {nid[b]!r} is now {NodeState(obs_state[b]).name.lower()}"
        elif src_real and a not in row:
            why = (
                f"the source replica on {nid[a]!r} is gone but the target {nid[b]!r} does not "
                "hold the shard"
            )
        elif not live:
            why = "no live replica is left to copy from"
        else:
            status[k] = 2
            continue
        status[k] = 3
        failure[k] = (
            f"shard {str(observed.shards.ids[s])!r} {nid[a] if a >= 0 else '(new)'} -> {nid[b]}: {why}"
        )

    unexpected = _unexpected(state, observed, mp)
    v = check(observed)
    sid = observed.shards.ids
    return VerifyReport(
        n_moves=plan.n_moves,
        done=np.flatnonzero(status == 0),
        copied=np.flatnonzero(status == 1),
        pending=np.flatnonzero(status == 2),
        failed=np.flatnonzero(status == 3),
        failure=failure,
        unexpected=unexpected,
        under_replicated=[str(x) for x in sid[v.under_replicated]],
        below_min=[str(x) for x in sid[v.below_min]],
        lost=[str(x) for x in sid[v.unavailable]],
        observed_violations={k: n for k, n in v.counts().items() if n},
    )


def _unexpected(state: State, observed: State, mp: _Mapped) -> list[dict[str, Any]]:
    o = observed.cluster
    out: list[dict[str, Any]] = []
    obs_index = o.node_index()
    planned = state.cluster
    for i, n in enumerate(planned.node_ids):
        j = obs_index[n]
        if planned.state[i] != o.state[j]:
            out.append(
                {
                    "kind": "node-state",
                    "node": n,
                    "planned": NodeState(planned.state[i]).name.lower(),
                    "observed": NodeState(o.state[j]).name.lower(),
                }
            )
    known = set(planned.node_ids)
    out.extend({"kind": "node-added", "node": n} for n in o.node_ids if n not in known)
    # Only rows that differ from the planned state's placement can hold surprises.
    obs = observed.placement.nodes
    w = max(obs.shape[1], mp.initial.shape[1])
    a = np.sort(_pad(mp.initial, w), axis=1)
    b = np.sort(_pad(obs, w), axis=1)
    changed = np.flatnonzero((a != b).any(axis=1))
    if changed.size == 0:
        return out
    explained_add: dict[int, set[int]] = {}
    explained_del: dict[int, set[int]] = {}
    for s, src, tgt in zip(mp.shard.tolist(), mp.source.tolist(), mp.target.tolist(), strict=True):
        explained_add.setdefault(s, set()).add(tgt)
        if src >= 0:
            explained_del.setdefault(s, set()).add(src)
    sid, nid = observed.shards.ids, o.node_ids
    for s in changed.tolist():
        before = set(mp.initial[s][mp.initial[s] >= 0].tolist())
        after = set(obs[s][obs[s] >= 0].tolist())
        for n in sorted(after - before - explained_add.get(s, set())):
            out.append({"kind": "replica-added", "shard": str(sid[s]), "node": nid[n]})
        for n in sorted(before - after - explained_del.get(s, set())):
            out.append({"kind": "replica-removed", "shard": str(sid[s]), "node": nid[n]})
    return out


def _pad(a: np.ndarray, width: int) -> np.ndarray:
    if a.shape[1] >= width:
        return a
    out = np.full((a.shape[0], width), EMPTY, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def resume(state: State, plan: Plan, observed: State, /, **plan_options: Any) -> Plan:
    """A plan for the observed state that keeps the completed work and finishes the job.

    The original plan's pending moves that still apply to the observed placement are
    kept (same targets, same reasons). If the placement they lead to is valid, that is
    the plan; otherwise (a node died, a move failed) :func:`placement.planner.plan` repairs
    it from there, and the two are merged into one minimal move set from the observed
    placement.

    Parameters
    ----------
    state : State
        The state the original plan was made for.
    plan : Plan
    observed : State
        The cluster now.
    **plan_options
        Passed to :func:`placement.planner.plan` when a repair is needed;
        ``trigger_imbalance`` defaults to the policy's critical level (a resume restores
        safety; it does not start a new rebalance).

    Returns
    -------
    Plan
        Made for *observed* (its ``state_sha256``); empty when nothing is left to do.

    Raises
    ------
    InvalidValueError
        The observed state lacks nodes or shards of the planned one.
    InfeasibleError
        The observed state cannot be repaired (see :func:`placement.planner.plan`).
    """
    from placement.planner import imbalance, lower_bound_bytes
    from placement.planner import plan as make_plan

    report = verify(state, plan, observed)
    mp = _map(state, plan, observed)
    o = observed.cluster
    obs_nodes = observed.placement.nodes.astype(np.int64)
    # The original plan's pending moves, in plan order, where they still apply.
    keep = [
        k
        for k in report.pending.tolist()
        if int(mp.source[k]) < 0 or int(mp.source[k]) in obs_nodes[int(mp.shard[k])]
    ]
    kept = np.array(keep, dtype=np.int64)
    k_shard, k_source, k_target = mp.shard[kept], mp.source[kept], mp.target[kept]
    work = obs_nodes.copy()
    applied: list[int] = []
    for i, (s, a, b) in enumerate(
        zip(k_shard.tolist(), k_source.tolist(), k_target.tolist(), strict=True)
    ):
        row = work[s]
        if b in row:
            continue
        slots = np.flatnonzero(row == (a if a >= 0 else EMPTY))
        if slots.size == 0:
            continue
        row[slots[0]] = b
        applied.append(i)
    kept = kept[applied]
    reason_of: dict[tuple[int, int], int] = {}
    for k in kept.tolist():
        reason_of[(int(mp.shard[k]), int(mp.target[k]))] = int(plan.reason[k])

    final = work
    stats: dict[str, Any] = {
        "resumed_from": plan.state_sha256,
        "original_moves": plan.n_moves,
        "done": int(report.done.size + report.copied.size),
        "failed": int(report.failed.size),
        "kept": int(kept.size),
        "replanned": 0,
    }
    if check(observed, work):
        # Still invalid: repair from where the kept moves lead, then merge.
        options = dict(plan_options)
        options.setdefault("trigger_imbalance", observed.policy.imbalance_critical)
        interim = observed.with_placement(
            Placement.build(work, n_nodes=o.n_nodes, pinned=observed.placement.pinned)
        )
        repair = make_plan(interim, **options)
        final = repair.target_nodes.astype(np.int64)
        for s, b, r in zip(
            repair.shard.tolist(), repair.target.tolist(), repair.reason.tolist(), strict=True
        ):
            reason_of.setdefault((s, b), r)
        stats["replanned"] = repair.n_moves
    shard, source, target = _diff(obs_nodes, final)
    balance = REASONS.index("balance")
    reason = np.array(
        [
            reason_of.get((s, b), balance)
            for s, b in zip(shard.tolist(), target.tolist(), strict=True)
        ],
        dtype=np.int8,
    )
    check_nodes = apply_moves(obs_nodes, shard, source, target)
    if not np.array_equal(
        np.sort(check_nodes, axis=1), np.sort(_pad(final, check_nodes.shape[1]), axis=1)
    ):
        raise AssertionError("internal error: the resumed moves do not reach their target")
    before_load = node_load(observed, obs_nodes)
    before_v = check(observed, obs_nodes, load=before_load)
    after_load = node_load(observed, final)
    after_v = check(observed, final, load=after_load)
    return Plan(
        state_sha256=observed.sha256(),
        shard=shard,
        source=source,
        target=target,
        size_bytes=observed.shards.demand[shard, o.size_index],
        cost=transfer_cost(observed, obs_nodes, shard, target),
        reason=reason,
        target_nodes=final.astype(np.int32),
        lower_bound_bytes=lower_bound_bytes(
            observed, final, violations=before_v, load=before_load, target_load=after_load
        ),
        before={
            "imbalance": imbalance(observed, obs_nodes, before_load),
            "violations": before_v.total,
            "violation_counts": before_v.counts(),
        },
        after={
            "imbalance": imbalance(observed, final, after_load),
            "violations": after_v.total,
            "violation_counts": after_v.counts(),
        },
        stats=stats,
    )


def _diff(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fewest moves from one placement to another, shard by shard (as sets): each
    replica removed is paired with one added; extra additions are created (source -1).
    Moves are listed by shard, sources that are kept nowhere first."""
    w = max(before.shape[1], after.shape[1])
    a, b = _pad(before, w), _pad(after, w)
    changed = np.flatnonzero((np.sort(a, axis=1) != np.sort(b, axis=1)).any(axis=1))
    shard: list[int] = []
    source: list[int] = []
    target: list[int] = []
    for s in changed.tolist():
        old = [int(x) for x in a[s] if x >= 0]
        new = [int(x) for x in b[s] if x >= 0]
        removed = [x for x in old if x not in new]
        added = [x for x in new if x not in old]
        if len(removed) > len(added):
            raise AssertionError("internal error: a resumed placement drops a replica")
        removed += [EMPTY] * (len(added) - len(removed))
        for x, y in zip(removed, added, strict=True):
            shard.append(s)
            source.append(x)
            target.append(y)
    return (
        np.array(shard, dtype=np.int64),
        np.array(source, dtype=np.int64),
        np.array(target, dtype=np.int64),
    )
