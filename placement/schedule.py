"""Execution scheduling: order a plan's moves into waves that are safe at every instant.

The execution model
-------------------
A *move* ``(shard, source, target)`` copies the shard onto ``target`` from a *donor*, one
of the shard's live replicas (the scheduler chooses it), and then deletes the replica on
``source`` (nothing is deleted for a created replica, ``source = -1``; nothing needs to
be for a replica on a failed node, whose copy is already lost).

*Waves* run one after another; all moves of a wave start together and the wave ends when
the last one finishes. A move *completes* at some instant inside its wave: at that
instant its copy becomes a live replica and the source's replica is deleted, in one
metadata update (copy before delete). The moves of a wave complete in any order.

Two kinds of intermediate state are judged:

* the **in-flight state** of a wave, its worst instant for space: every node still holds
  all its replicas from the start of the wave and also the copies arriving during it. No
  node may exceed its *full* capacity (not the headroom) for any resource there. A copy
  counts with the shard's whole demand on every resource, as it will once it serves.
* the **settled states** of a wave: the placements obtained from the wave's start by
  completing any subset of its moves. An in-flight copy is not a replica yet, so
  availability and placement rules are judged on settled states: a shard never has fewer
  live replicas than ``min(min_available, what it had before)``; and none of its spread
  excess (replicas above ``max_per_domain`` in a domain), region deficit (regions below
  ``min(min_regions, replicas)``) or replicas outside its allowed regions may grow, unless
  it stays 0, i.e. a settled state never creates or worsens a breach.

A wave moves at most one replica of a shard, so a shard's settled states are just its
placement before and after that move, and the rules above hold for *every* completion
order once they hold move by move. It also means that a shard never has all its
replicas in motion at once. Moves of one shard therefore form a *chain*, one per wave,
in an order whose every step obeys the rules; when no order of the planned pairs is safe
(``a(zone 1) -> zone 2`` with ``b(zone 2) -> zone 1``), the shard's sources are paired
with its targets anew (``a -> zone 1``, ``b -> zone 2``): the same replicas, reached safely.

Limits per wave: at most ``max_concurrent_per_node`` transfers per node (a node counts
each copy it sends as a donor and each copy it receives), optionally at most
``max_bytes_in_flight`` bytes copied (a move larger than that runs alone).

Duration model
--------------
Bytes flow at full rate, shared ideally: a wave lasts as long as its busiest resource
needs, the largest of each node's bytes in and bytes out x 8 / its ``bandwidth_bps``
(full duplex) and each directed region link's bytes x 8 / the link's ``bandwidth_bps``
(a copy between regions crosses the links of the lowest-latency path, as
:class:`~placement.model.RegionGraph` routes them). The total is the sum over waves.

The **lower bound** is what no schedule can beat under that model: the busiest node's
bytes in (or the bytes out it must send as the only donor) over its bandwidth, and the
busiest link's bytes when the donors' regions are chosen as well as possible (a small
linear program over (target region, donor regions) classes, which also guides the
choice of donors).

Ordering
--------
Moves are packed greedily in priority order: restores first (a missing replica or one on
a failed node; fewest live replicas first), then evacuations of draining nodes, then
other repairs (residency, spread, regions, capacity), then balance; larger moves first
within a class. A lower-priority move may share a wave with higher-priority ones but
never takes a slot one of them could use. Each wave is filled up to a time budget: the
*pace* (the busiest resource's time spread over the waves the concurrency limit forces)
or the largest move of the wave's leading class, whichever is longer, so that large
moves share waves instead of each stretching one. A last pass pulls moves of the final
waves into earlier ones that have room for them without lasting longer.

When moves wait on each other for space (a cycle of swaps between full nodes), one move
of the cycle goes through a temporary node with room (two moves: to the temporary node,
then on to the target); if no node can hold it, :class:`~placement.errors.SchedulingError`
names the cycle.

Examples
--------
>>> import placement
>>> from placement.planner import plan
>>> from placement.scenarios import plan_drain
>>> st = placement.synthetic_state(30, 600, seed=1)
>>> new, p = plan_drain(st, [st.cluster.node_ids[0]])
>>> sch = schedule(new, p)
>>> sch.n_waves >= 1 and sch.duration_s >= sch.lower_bound_s > 0
True
>>> sorted(np.concatenate(sch.waves()).tolist()) == list(range(sch.plan.n_moves))
True
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from placement.errors import InvalidValueError, SchedulingError, StateDriftError, format_ids
from placement.model import EMPTY, NodeState, State
from placement.plan import REASONS, Plan

__all__ = ["MOVE_CLASSES", "Schedule", "move_classes", "schedule"]

#: Priority classes of moves, in scheduling order.
MOVE_CLASSES: tuple[str, ...] = ("restore", "evacuate", "repair", "balance")

#: Reasons that are objectives (improvements), not repairs: scheduled last.
_OBJECTIVES = np.array([i for i, r in enumerate(REASONS) if r in ("balance", "latency")])
#: Relative tolerance of the capacity checks (float summation order), as in constraints.
_TOL = 1e-9


@dataclass(frozen=True, eq=False)
class Schedule:
    """A plan ordered into waves, with the donors chosen and the estimated duration.

    Attributes
    ----------
    plan : Plan
        The scheduled plan, ``plan.wave`` filled in. It is the input plan, plus, when a
        cycle had to be broken, temporary moves appended at the end (a move ``a -> b``
        then reads ``a -> t`` and an appended move ``t -> b`` follows it).
    donor : ndarray of int64, shape (M,)
        Node each move copies from (a live replica at its wave's start); -1 when the
        shard has no live replica left (nothing can be copied: the data is lost).
    temporary : ndarray of bool, shape (M,)
        True for the moves that exist only to break a cycle (their two hops).
    wave_duration_s : ndarray of float64, shape (W,)
        Estimated duration of each wave.
    lower_bound_s : float
        No schedule of these moves can take less (see the module notes).
    stats : dict
        Limits used, time budget per wave, scheduling time, lost moves, ...
    """

    plan: Plan
    donor: np.ndarray
    temporary: np.ndarray
    wave_duration_s: np.ndarray
    lower_bound_s: float
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def n_waves(self) -> int:
        return int(self.wave_duration_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Estimated total duration: the sum of the waves' durations."""
        return float(self.wave_duration_s.sum())

    @property
    def ratio(self) -> float | None:
        """Estimated duration over its lower bound (1.0 is optimal); None when the bound is 0."""
        if self.lower_bound_s <= 0:
            return None if self.duration_s > 0 else 1.0
        return self.duration_s / self.lower_bound_s

    def waves(self) -> list[np.ndarray]:
        """Move indices of each wave, in execution order."""
        return self.plan.waves()

    def summary(self) -> dict[str, Any]:
        return {
            "waves": self.n_waves,
            "moves": self.plan.n_moves,
            "temporary_moves": int(self.temporary.sum()),
            "duration_s": self.duration_s,
            "lower_bound_s": self.lower_bound_s,
            "duration_over_bound": self.ratio,
            "wave_duration_s": [float(x) for x in self.wave_duration_s],
            **{k: v for k, v in self.stats.items() if k != "wave_duration_s"},
        }

    def to_document(self, state: State) -> dict[str, Any]:
        """The plan document with ``waves`` filled in; each move also names its donor
        (``copy_from``) and temporary hops say so (``temporary``): optional extensions."""
        doc = self.plan.to_document(state)
        node_ids = state.cluster.node_ids
        for m, d, tmp in zip(
            doc["moves"], self.donor.tolist(), self.temporary.tolist(), strict=True
        ):
            m["copy_from"] = node_ids[d] if d >= 0 else None
            if tmp:
                m["temporary"] = True
        doc["summary"]["schedule"] = json.loads(json.dumps(self.summary(), default=float))
        return doc

    def dump(self, state: State, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_document(state), f, indent=1)
            f.write("\n")


def move_classes(state: State, plan: Plan) -> np.ndarray:
    """Priority class of each move, an index into :data:`MOVE_CLASSES`.

    A move restores when it creates a replica or replaces one on a failed node, evacuates
    when its source is draining, is a repair when the planner gave a repair reason, and is
    balance otherwise (an objective: balance, or latency).
    """
    return _classes(state, plan.source, plan.reason)


def _classes(state: State, source: np.ndarray, reason: np.ndarray) -> np.ndarray:
    node_state = np.where(source >= 0, state.cluster.state[np.maximum(source, 0)], NodeState.FAILED)
    out = np.full(source.shape[0], 3, dtype=np.int8)
    out[~np.isin(reason, _OBJECTIVES)] = 2
    out[node_state == NodeState.DRAINING] = 1
    out[node_state == NodeState.FAILED] = 0
    return out


# -- public entry point ----------------------------------------------------------------


def schedule(
    state: State,
    plan: Plan,
    /,
    *,
    max_concurrent_per_node: int | None = None,
    max_bytes_in_flight: float | None = None,
    node_bandwidth_bps: float | np.ndarray | None = None,
    default_bandwidth_bps: float | None = None,
    region_links: bool = True,
    temporary_placements: bool = True,
    check_hash: bool = True,
) -> Schedule:
    """Order a plan's moves into waves that are safe at every instant.

    Parameters
    ----------
    state : State
        The state the plan was made for.
    plan : Plan
        The moves (a waves field it may have is ignored and recomputed).
    max_concurrent_per_node : int, optional
        Most transfers a node takes part in during a wave (as donor or target); default
        ``state.policy.max_concurrent_per_node`` (the runbook's 10).
    max_bytes_in_flight : float, optional
        Most bytes copied during one wave, over the whole cluster.
    node_bandwidth_bps : float or ndarray of shape (N,), optional
        Bandwidth of every node in bit/s; default ``cluster.bandwidth_bps``.
    default_bandwidth_bps : float, optional
        For nodes whose bandwidth is unknown (NaN); default the median of the known
        ones, or 10 Gbit/s when none is known.
    region_links : bool
        Throttle copies between regions by the region graph's link bandwidths.
    temporary_placements : bool
        Break cycles of moves between full nodes through a temporary node; if False (or
        no node has room) such a cycle raises :class:`SchedulingError`.
    check_hash : bool
        Refuse a plan made for another state (:class:`StateDriftError`).

    Returns
    -------
    Schedule

    Raises
    ------
    StateDriftError
        The plan's ``state_sha256`` is not the state's.
    InvalidValueError
        A parameter is out of range, or a move targets a node that is not active.
    SchedulingError
        Some moves cannot be ordered safely (a breach no order avoids, or a cycle
        between full nodes that no temporary placement breaks); the message names them.
    """
    t0 = time.perf_counter()
    if check_hash and plan.state_sha256 != state.sha256():
        raise StateDriftError(
            f"The plan was made for state {plan.state_sha256[:12]}..., not this state "
            f"({state.sha256()[:12]}...). The cluster has drifted: plan again."
        )
    c = state.cluster
    conc = (
        state.policy.max_concurrent_per_node
        if max_concurrent_per_node is None
        else max_concurrent_per_node
    )
    if isinstance(conc, bool) or not isinstance(conc, (int, np.integer)) or conc < 1:
        raise InvalidValueError(
            f"max_concurrent_per_node must be a whole number >= 1, got {conc!r}."
        )
    if max_bytes_in_flight is not None and not (
        isinstance(max_bytes_in_flight, (int, float)) and max_bytes_in_flight > 0
    ):
        raise InvalidValueError(
            f"max_bytes_in_flight must be a number > 0, got {max_bytes_in_flight!r}."
        )
    bad_target = c.state[plan.target] != NodeState.ACTIVE
    if bad_target.any():
        k = np.flatnonzero(bad_target)
        raise InvalidValueError(
            f"Moves {format_ids(k.tolist())} target nodes that are not active "
            f"({format_ids(c.node_ids[i] for i in plan.target[k].tolist())}); a copy must land "
            "on an active node. Plan again."
        )
    bw = _node_bandwidth(c.bandwidth_bps, node_bandwidth_bps, default_bandwidth_bps)
    net = _links(state, region_links)

    moves = _Moves.from_plan(state, plan)
    temporary_hops = 0
    repaired = 0
    for _attempt in range(100):
        chains = _sequence(state, moves)
        repaired += chains.repaired
        donors = _choose_donors(state, moves, chains, bw, net)
        packed = _pack(state, moves, chains, donors, bw, net, int(conc), max_bytes_in_flight)
        if packed.stuck is None:
            break
        if not temporary_placements:
            raise SchedulingError(_cycle_message(state, moves, packed.stuck, None))
        moves = _break_cycle(state, moves, packed.stuck)
        temporary_hops += 1
    else:  # pragma: no cover - every round breaks a cycle or raises
        raise SchedulingError(
            "More than 100 cycles of moves between full nodes; free space on the fullest "
            "nodes, or split the plan, and schedule again."
        )

    durations = _wave_durations(moves, donors.donor, packed.wave, bw, net, c.region_of)
    out_plan = moves.to_plan(plan, packed.wave, donors.donor, state)
    stats = {
        "max_concurrent_per_node": int(conc),
        "max_bytes_in_flight": max_bytes_in_flight,
        "wave_budget_s": packed.budget_s,
        "lower_bound_node_s": donors.lower_bound_node_s,
        "lower_bound_link_s": donors.lower_bound_link_s,
        "cross_region_bytes": float(
            moves.size[
                (donors.donor >= 0)
                & (c.region_of[np.maximum(donors.donor, 0)] != c.region_of[moves.target])
            ].sum()
        ),
        "lost_moves": int((donors.donor < 0).sum()),
        "cycles_broken": temporary_hops,
        "pairings_changed": repaired,
        "time_s": round(time.perf_counter() - t0, 4),
    }
    return Schedule(
        plan=out_plan,
        donor=donors.donor,
        temporary=moves.temporary.copy(),
        wave_duration_s=durations,
        lower_bound_s=max(donors.lower_bound_node_s, donors.lower_bound_link_s),
        stats=stats,
    )


# -- inputs ---------------------------------------------------------------------------


def _node_bandwidth(
    known: np.ndarray, override: float | np.ndarray | None, default: float | None
) -> np.ndarray:
    n = known.shape[0]
    if override is not None:
        bw = np.broadcast_to(np.asarray(override, dtype=np.float64), (n,)).copy()
    else:
        bw = known.astype(np.float64, copy=True)
    if default is None:
        finite = bw[np.isfinite(bw) & (bw > 0)]
        default = float(np.median(finite)) if finite.size else 1e10
    if not (math.isfinite(default) and default > 0):
        raise InvalidValueError(f"default_bandwidth_bps must be a number > 0, got {default!r}.")
    bw[np.isnan(bw)] = default
    if (~np.isfinite(bw) | (bw <= 0)).any():
        raise InvalidValueError("node_bandwidth_bps must be finite numbers > 0.")
    return bw


@dataclass(frozen=True)
class _Net:
    """Directed region links with a bandwidth, and the links each region pair's copies cross."""

    link_bps: np.ndarray  # (L,)
    link_names: tuple[tuple[str, str], ...]
    pair_links: np.ndarray  # (R, R, H) link ids along the lowest-latency path, -1 padded

    @property
    def n_links(self) -> int:
        return int(self.link_bps.shape[0])


def _links(state: State, enabled: bool) -> _Net:
    rg = state.cluster.region_graph
    n_reg = len(rg.regions)
    g = rg.graph
    names: list[tuple[str, str]] = []
    bps: list[float] = []
    ids: dict[tuple[str, str], int] = {}
    if enabled:
        for a, b, d in g.edges(data=True):
            if d.get("bandwidth_bps") is None:
                continue  # a link without bandwidth throttles nothing
            for u, v in ((a, b), (b, a)):
                ids[(u, v)] = len(names)
                names.append((u, v))
                bps.append(float(d["bandwidth_bps"]))
    paths: list[list[list[int]]] = [[[] for _ in range(n_reg)] for _ in range(n_reg)]
    if ids:
        index = {r: i for i, r in enumerate(rg.regions)}
        for src in g.nodes:
            # The same lowest-latency paths RegionGraph takes its bandwidth matrix from.
            _, routes = nx.single_source_dijkstra(g, src, weight="latency_ms")
            for dst, path in routes.items():
                hops = [ids[(u, v)] for u, v in zip(path, path[1:], strict=False) if (u, v) in ids]
                paths[index[src]][index[dst]] = hops
    depth = max((len(p) for row in paths for p in row), default=0)
    pair = np.full((n_reg, n_reg, max(depth, 1)), -1, dtype=np.int64)
    for i in range(n_reg):
        for j in range(n_reg):
            hops = paths[i][j]
            pair[i, j, : len(hops)] = hops
    return _Net(np.array(bps, dtype=np.float64), tuple(names), pair)


@dataclass
class _Moves:
    """The moves being scheduled (the plan's, plus temporary hops)."""

    shard: np.ndarray
    source: np.ndarray
    target: np.ndarray
    reason: np.ndarray
    size: np.ndarray
    demand: np.ndarray  # (M, R)
    klass: np.ndarray
    temporary: np.ndarray
    origin: np.ndarray  # index of the plan move it came from

    @classmethod
    def from_plan(cls, state: State, plan: Plan) -> _Moves:
        demand = state.shards.demand[plan.shard]
        return cls(
            shard=plan.shard.astype(np.int64),
            source=plan.source.astype(np.int64),
            target=plan.target.astype(np.int64),
            reason=plan.reason.astype(np.int8),
            size=demand[:, state.cluster.size_index].astype(np.float64),
            demand=demand,
            klass=move_classes(state, plan),
            temporary=np.zeros(plan.n_moves, dtype=bool),
            origin=np.arange(plan.n_moves),
        )

    @property
    def n(self) -> int:
        return int(self.shard.shape[0])

    def to_plan(self, plan: Plan, wave: np.ndarray, donor: np.ndarray, state: State) -> Plan:
        """The scheduled plan: these moves (the plan's, re-paired or split where needed)."""
        n = plan.n_moves
        same = (
            self.n == n
            and np.array_equal(self.source, plan.source)
            and np.array_equal(self.target, plan.target)
        )
        if same:
            return dataclasses.replace(plan, wave=wave.astype(np.int64))
        c = state.cluster
        safe = np.maximum(donor, 0)
        per_gb = c.region_graph.cost_per_gb[c.region_of[safe], c.region_of[self.target]]
        cost = np.where(donor >= 0, self.size / 1e9 * per_gb, 0.0)
        kept = (self.source[:n] == plan.source) & (self.target[:n] == plan.target)
        cost[:n][kept] = plan.cost[kept]
        return dataclasses.replace(
            plan,
            shard=self.shard.copy(),
            source=self.source.copy(),
            target=self.target.copy(),
            size_bytes=self.size.copy(),
            cost=cost,
            reason=self.reason.copy(),
            wave=wave.astype(np.int64),
        )


# -- the per-shard rules and chains ---------------------------------------------------


@dataclass(frozen=True)
class _Measures:
    live: np.ndarray
    spread_excess: np.ndarray
    region_deficit: np.ndarray
    outside: np.ndarray


def _measures(state: State, rows: np.ndarray, shard: np.ndarray) -> _Measures:
    """Per row: live replicas, spread excess, region deficit and replicas outside residency,
    with the meaning of :func:`placement.constraints.check` (live replicas only; rows never
    list a node twice)."""
    c, s, pol = state.cluster, state.shards, state.policy
    present = rows >= 0
    safe = np.where(present, rows, 0)
    live = present & c.alive[safe]
    n_live = live.sum(axis=1)
    # Sorted labels of the live replicas (dead ones get distinct negative fillers): a label
    # occurring more than k times shows up as equal entries k positions apart.
    filler = -1 - np.arange(rows.shape[1])[None, :]
    dom = np.sort(np.where(live, c.domain_of[safe, state.spread_level_index], filler), axis=1)
    k = pol.max_per_domain
    excess = (
        (dom[:, k:] == dom[:, :-k]).sum(axis=1) if k < rows.shape[1] else np.zeros(len(rows), int)
    )
    reg_raw = c.region_of[safe]
    reg = np.sort(np.where(live, reg_raw, filler), axis=1)
    spanned = n_live - (reg[:, 1:] == reg[:, :-1]).sum(axis=1)
    required = np.minimum(pol.min_regions, s.replicas[shard])
    deficit = np.maximum(required - spanned, 0)
    allowed = s.allowed_regions[s.residency_class[shard][:, None], reg_raw]
    outside = (live & ~allowed).sum(axis=1)
    return _Measures(n_live, excess, deficit, outside)


def _breaches(state: State, shard: np.ndarray, before: _Measures, after: _Measures) -> np.ndarray:
    """Which steps (before -> after) break a settled-state rule; see the module notes."""
    floor = np.minimum(state.shards.min_available[shard], before.live)
    bad = after.live < floor
    for name in ("spread_excess", "region_deficit", "outside"):
        a, b = getattr(after, name), getattr(before, name)
        bad |= (a > 0) & (a > b)
    return bad


def _apply_rows(rows: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Rows after one move each (source slot, or the first empty one, takes the target);
    None if a move does not apply."""
    key = np.where(source >= 0, source, EMPTY)
    hit = rows == key[:, None]
    if not hit.any(axis=1).all() or (rows == target[:, None]).any():
        return None
    out = rows.copy()
    out[np.arange(rows.shape[0]), hit.argmax(axis=1)] = target
    return out


@dataclass(frozen=True)
class _Chains:
    """Each shard's moves in execution order: the predecessor of each move (-1 for the
    first) and the shard's replicas just before the move (the donor candidates)."""

    pred: np.ndarray
    rows_before: np.ndarray  # (M, W)
    length: int
    repaired: int = 0  # shards whose sources were paired with targets anew


def _sequence(state: State, moves: _Moves) -> _Chains:
    nodes = state.placement.nodes
    m = moves.n
    order = np.argsort(moves.shard, kind="stable")  # plan order within each shard
    s_sorted = moves.shard[order]
    first = np.ones(m, dtype=bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    start_idx = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    pos = np.empty(m, dtype=np.int64)
    pos[order] = np.arange(m) - start_idx
    length = int(pos.max()) + 1 if m else 0

    counts = np.bincount(moves.shard, minlength=state.shards.n_shards)
    multi_shards = np.flatnonzero(counts >= 2)
    rows_before = nodes[moves.shard].astype(np.int64)
    pred = np.full(m, -1, dtype=np.int64)
    if m:
        pred[order[~first]] = order[np.flatnonzero(~first) - 1]

    # Plan order first, all chains at once, one position at a time.
    work = nodes[multi_shards].astype(np.int64)  # rows of the multi-move shards, as they go
    failing: set[int] = set()
    for p in range(length):
        at = np.flatnonzero(pos == p)
        if at.size == 0:
            continue
        sh = moves.shard[at]
        if p == 0:
            before_rows = rows_before[at]
        else:
            before_rows = work[np.searchsorted(multi_shards, sh)]
            rows_before[at] = before_rows
        after_rows = _apply_rows(before_rows, moves.source[at], moves.target[at])
        if after_rows is None:
            raise SchedulingError(
                "Some moves do not apply in plan order (a source that does not hold the "
                "shard, or a target that already does); re-read the plan against its state."
            )
        bad = _breaches(
            state, sh, _measures(state, before_rows, sh), _measures(state, after_rows, sh)
        )
        for k in np.flatnonzero(bad).tolist():
            s = int(sh[k])
            if counts[s] < 2:
                raise SchedulingError(_breach_message(state, moves, int(at[k])))
            failing.add(s)
        in_multi = counts[sh] >= 2
        if in_multi.any():
            work[np.searchsorted(multi_shards, sh[in_multi])] = after_rows[in_multi]

    # A shard whose plan order breaks a rule: try the other orders of its (few) moves,
    # and other pairings of its sources with its targets; all shards with the same
    # number of moves at once, then one by one for the rare longer chains.
    repaired = 0
    failing_arr = np.array(sorted(failing), dtype=np.int64)
    found: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for k in (2, 3):
        group = failing_arr[counts[failing_arr] == k]
        if group.size:
            ids = order[np.searchsorted(s_sorted, group)[:, None] + np.arange(k)[None, :]]
            found.update(_safe_orders(state, moves, group, ids))
    for s in failing_arr.tolist():
        if s in found:
            continue
        ids = order[s_sorted == s]
        one = _safe_order(state, moves, ids)
        if one is None:
            raise SchedulingError(
                f"No order of the {ids.size} moves of shard {str(state.shards.ids[s])!r} keeps every "
                f"intermediate placement safe ({_describe_moves(state, moves, ids)}): each "
                "order puts two replicas in one failure domain, leaves too few regions or "
                "steps outside its residency. Split these moves over two plans."
            )
        found[s] = one
    for seq, src, rows in found.values():
        if not np.array_equal(moves.source[seq], src):
            moves.source[seq] = src
            moves.klass[seq] = _classes(state, src, moves.reason[seq])
            repaired += 1
        pred[seq[0]] = -1
        pred[seq[1:]] = seq[:-1]
        rows_before[seq] = rows
    return _Chains(pred=pred, rows_before=rows_before, length=length, repaired=repaired)


def _apply_rows_masked(
    rows: np.ndarray, source: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_apply_rows` row by row: the rows after the moves that apply, and which do."""
    key = np.where(source >= 0, source, EMPTY)
    hit = rows == key[:, None]
    ok = hit.any(axis=1) & ~(rows == target[:, None]).any(axis=1)
    out = rows.copy()
    at = np.flatnonzero(ok)
    out[at, hit[at].argmax(axis=1)] = target[at]
    return out, ok


def _safe_orders(
    state: State, moves: _Moves, shards: np.ndarray, ids: np.ndarray
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`_safe_order` for many shards of k moves each (*ids*, shape (G, k), plan
    order), vectorized over the shards: every (pairing, order) is tried on all shards
    still without a safe one. Shards with none are left out of the result."""
    g, k = ids.shape
    start = state.placement.nodes[shards].astype(np.int64)
    sources = moves.source[ids]
    targets = moves.target[ids]
    independent = ~((targets[:, :, None] == sources[:, None, :]) & (sources[:, None, :] >= 0)).any(
        axis=(1, 2)
    )
    done = np.zeros(g, dtype=bool)
    out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    identity = tuple(range(k))
    for pairing in itertools.permutations(range(k)):
        for perm in itertools.permutations(range(k)):
            todo = ~done & (independent | (pairing == identity))
            if not todo.any():
                continue
            sub = np.flatnonzero(todo)
            src = sources[sub][:, list(pairing)]
            sh = shards[sub]
            row = start[sub]
            ok = np.ones(sub.size, dtype=bool)
            history = []
            for i in perm:
                after, applies = _apply_rows_masked(row, src[:, i], targets[sub, i])
                bad = _breaches(state, sh, _measures(state, row, sh), _measures(state, after, sh))
                ok &= applies & ~bad
                history.append(row)
                row = after
            for j in np.flatnonzero(ok).tolist():
                r = int(sub[j])
                seq = ids[r, list(perm)]
                out[int(shards[r])] = (
                    seq,
                    src[j, list(perm)],
                    np.stack([h[j] for h in history]),
                )
            done[sub[ok]] = True
            if done.all():
                return out
    return out


def _safe_order(
    state: State, moves: _Moves, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A safe order of one shard's moves: (move ids in order, the source of each, the rows
    before each); None if none is.

    Orders are tried first with the plan's pairing of sources and targets. If none is
    safe and the moves are independent (no move starts from another's target), sources
    are paired with targets differently: the shard reaches the same replicas either way,
    and a pairing such as zone a -> a', zone b -> b' may be safe where a -> b', b -> a'
    is not in any order.
    """
    s = int(moves.shard[ids[0]])
    start = state.placement.nodes[s].astype(np.int64)
    shard1 = np.array([s])
    sources = moves.source[ids]
    independent = not np.isin(moves.target[ids], sources[sources >= 0]).any()
    pairings = (
        itertools.permutations(range(ids.size))
        if independent and ids.size <= 4
        else iter([tuple(range(ids.size))])
    )
    for pairing in pairings:
        src = sources[list(pairing)]
        orders = (
            itertools.permutations(range(ids.size))
            if ids.size <= 5
            else iter([tuple(range(ids.size))])
        )
        for perm in orders:
            row = start[None, :]
            rows = []
            for i in perm:
                k = int(ids[i])
                after = _apply_rows(row, src[i : i + 1], moves.target[k : k + 1])
                if (
                    after is None
                    or _breaches(
                        state,
                        shard1,
                        _measures(state, row, shard1),
                        _measures(state, after, shard1),
                    )[0]
                ):
                    break
                rows.append(row[0])
                row = after
            else:
                order = list(perm)
                return ids[order], src[order], np.array(rows, dtype=np.int64)
    return None


# -- donors and the lower bound ---------------------------------------------------------


@dataclass(frozen=True)
class _Donors:
    donor: np.ndarray
    lower_bound_node_s: float
    lower_bound_link_s: float


def _choose_donors(
    state: State, moves: _Moves, chains: _Chains, bw: np.ndarray, net: _Net
) -> _Donors:
    """Pick each move's donor among the live replicas before it.

    Donors in an allowed region of the shard are preferred (no copy of the data passes
    through a region it may not live in when another donor exists), then donors in the
    target's own region (no link crossed). Between regions, the share of each donor
    region per (target region, candidate regions) class follows the linear program that
    minimises the busiest link's time; it is also the links' lower bound. Among nodes of
    the chosen region, the least loaded donor (expected bytes out over bandwidth) wins.
    """
    c, s = state.cluster, state.shards
    cand = chains.rows_before
    present = cand >= 0
    safe = np.where(present, cand, 0)
    live = present & c.alive[safe]
    creg = c.region_of[safe]
    allowed = s.allowed_regions[s.residency_class[moves.shard][:, None], creg] & live
    use = np.where(allowed.any(axis=1)[:, None], allowed, live)
    treg = c.region_of[moves.target]
    same = use & (creg == treg[:, None])
    has_same = same.any(axis=1)
    use = np.where(has_same[:, None], same, use)
    has_any = use.any(axis=1)

    link_bound = 0.0
    cross = has_any & ~has_same
    if net.n_links and cross.any():
        chosen_region, link_bound = _donor_regions(moves, cross, use, creg, treg, net)
        use[cross] &= creg[cross] == chosen_region[cross][:, None]

    # Node level: expected bytes out if each move split evenly over its candidates.
    n_use = np.maximum(use.sum(axis=1), 1)
    share = np.where(use, (moves.size / n_use)[:, None], 0.0)
    expected_out = np.bincount(safe[use], weights=share[use], minlength=c.n_nodes) * 8 / bw
    score = np.where(use, expected_out[safe], np.inf)
    pick = score.argmin(axis=1)
    donor = np.where(has_any, cand[np.arange(moves.n), pick], -1).astype(np.int64)

    # Node bound: bytes into each target, and out of each donor that is a move's only choice.
    copied = donor >= 0
    in_bytes = np.bincount(moves.target[copied], weights=moves.size[copied], minlength=c.n_nodes)
    forced = copied & (use.sum(axis=1) == 1) & ~(has_same & (same.sum(axis=1) > 1))
    out_bytes = np.bincount(donor[forced], weights=moves.size[forced], minlength=c.n_nodes)
    node_bound = float((np.maximum(in_bytes, out_bytes) * 8 / bw).max(initial=0.0))
    return _Donors(donor=donor, lower_bound_node_s=node_bound, lower_bound_link_s=link_bound)


def _donor_regions(
    moves: _Moves,
    cross: np.ndarray,
    use: np.ndarray,
    creg: np.ndarray,
    treg: np.ndarray,
    net: _Net,
) -> tuple[np.ndarray, float]:
    """Donor region of each cross-region move, and the least possible busiest-link time."""
    from scipy.optimize import linprog

    idx = np.flatnonzero(cross)
    n_reg = net.pair_links.shape[0]
    bits = (np.where(use[idx], np.left_shift(1, creg[idx]), 0)).astype(np.int64)
    mask = np.bitwise_or.reduce(bits, axis=1)
    key = treg[idx].astype(np.int64) * (1 << n_reg) + mask
    classes, inverse = np.unique(key, return_inverse=True)
    class_gb = np.bincount(inverse, weights=moves.size[idx] / 1e9)
    var_class: list[int] = []
    var_region: list[int] = []
    for k, code in enumerate(classes.tolist()):
        for r in range(n_reg):
            if code & (1 << r):
                var_class.append(k)
                var_region.append(r)
    n_var = len(var_class)
    n_links = net.n_links
    # Variables: GB of each class copied from each of its regions, then t (seconds).
    a_ub = np.zeros((n_links, n_var + 1))
    for v, (k, r) in enumerate(zip(var_class, var_region, strict=True)):
        j = int(classes[k] >> n_reg)
        for link in net.pair_links[r, j]:
            if link >= 0:
                a_ub[link, v] += 8e9 / net.link_bps[link]
    a_ub[:, -1] = -1.0
    a_eq = np.zeros((len(classes), n_var + 1))
    a_eq[var_class, np.arange(n_var)] = 1.0
    # Minimise the busiest link's time; a tiny weight on total link time prefers short paths.
    cost = np.append(a_ub[:, :-1].sum(axis=0) * 1e-6, 1.0)
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(n_links),
        A_eq=a_eq,
        b_eq=class_gb,
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:  # pragma: no cover - the program is always feasible and bounded
        x = np.zeros(n_var)
        first: dict[int, int] = {}
        for v, k in enumerate(var_class):
            first.setdefault(k, v)
        for k, v in first.items():
            x[v] = class_gb[k]
        bound = 0.0
    else:
        x = res.x[:-1]
        bound = float(res.x[-1])
    # Spread each class's moves over its regions in the program's proportions, evenly
    # along the priority order (a golden-ratio sequence) so every wave gets its share.
    var_class_arr = np.array(var_class)
    var_region_arr = np.array(var_region)
    chosen = np.full(moves.n, -1, dtype=np.int64)
    rank_in_class = np.empty(idx.size, dtype=np.int64)
    by_class = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(classes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_class[by_class] = np.arange(idx.size) - np.repeat(starts, counts)
    u = np.modf(rank_in_class * 0.6180339887498949)[0]
    for k in range(len(classes)):
        vs = np.flatnonzero(var_class_arr == k)
        share = np.maximum(x[vs], 0.0)
        total = share.sum()
        cum = np.cumsum(share) / total if total > 0 else np.linspace(1 / vs.size, 1, vs.size)
        members = by_class[starts[k] : starts[k] + counts[k]]
        pick = np.minimum(np.searchsorted(cum, u[members], side="right"), vs.size - 1)
        chosen[idx[members]] = var_region_arr[vs[pick]]
    return chosen, bound


# -- packing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Packed:
    wave: np.ndarray
    budget_s: float
    stuck: np.ndarray | None  # moves left when no wave could start, if any


def _group_ok(
    order: np.ndarray, key: np.ndarray, value: np.ndarray, room: np.ndarray
) -> np.ndarray:
    """For entries sorted by key (then priority): is the running total within the key's room?"""
    if order.size == 0:
        return np.ones(0, dtype=bool)
    k = key[order]
    v = value[order]
    cs = np.cumsum(v)
    start = np.ones(order.size, dtype=bool)
    np.not_equal(k[1:], k[:-1], out=start[1:])
    base = np.maximum.accumulate(np.where(start, cs - v, 0.0))
    return cs - base <= room[k]


def _pack(
    state: State,
    moves: _Moves,
    chains: _Chains,
    donors: _Donors,
    bw: np.ndarray,
    net: _Net,
    conc: int,
    max_flight: float | None,
) -> _Packed:
    """Fill waves in priority order; try a few per-wave time budgets, keep the fastest."""
    if moves.n == 0:
        return _Packed(np.zeros(0, dtype=np.int64), 0.0, None)
    c = state.cluster
    donor = donors.donor
    m = moves.n
    link_of = _move_links(moves, donor, c.region_of, net)
    # The busiest resource's time with these donors, and the count-forced number of waves.
    copied = donor >= 0
    in_b = np.bincount(moves.target[copied], weights=moves.size[copied], minlength=c.n_nodes)
    out_b = np.bincount(donor[copied], weights=moves.size[copied], minlength=c.n_nodes)
    busiest = float((np.maximum(in_b, out_b) * 8 / bw).max(initial=0.0))
    item_s = np.zeros(m)
    item_s[copied] = moves.size[copied] * 8 / np.minimum(bw[moves.target], bw[donor])[copied]
    if net.n_links:
        ml, mh = np.nonzero(link_of >= 0)
        link_load = np.bincount(link_of[ml, mh], weights=moves.size[ml], minlength=net.n_links)
        busiest = max(busiest, float((link_load * 8 / net.link_bps).max(initial=0.0)))
        per_link_s = np.zeros(m)
        np.maximum.at(per_link_s, ml, moves.size[ml] * 8 / net.link_bps[link_of[ml, mh]])
        item_s = np.maximum(item_s, per_link_s)
    transfers = np.bincount(np.concatenate([moves.target, donor[copied]]), minlength=c.n_nodes)
    forced_waves = max(int(np.ceil(transfers.max() / conc)), chains.length, 1)
    # The pace: the busiest resource spread evenly over the waves the counts force.
    base = busiest / forced_waves
    if base <= 0:  # nothing is copied (lost shards only): budgets do not bind
        base = 1.0
    packer = _Packer(state, moves, chains, donor, bw, net, link_of, item_s, conc, max_flight)
    best: tuple[float, np.ndarray, float] | None = None
    for factor in (1.0, 1.3):
        wave, stuck = packer.run(base * factor)
        if stuck is not None:
            return _Packed(wave, base * factor, stuck)
        total = float(_wave_durations(moves, donor, wave, bw, net, c.region_of).sum())
        if best is None or total < best[0] * (1 - 1e-9):
            best = (total, wave, base * factor)
        if busiest > 0 and total <= 1.1 * busiest:
            break  # close enough: a second pass would cost more than it could gain
    assert best is not None
    wave = best[1]
    if best[0] > 1.02 * busiest:  # within 2% of the busiest resource, a tail costs little
        wave = _pull_forward(
            state, moves, chains, donor, bw, net, link_of, conc, max_flight, packer.load0, wave
        )
    return _Packed(wave, best[2], None)


def _pull_forward(
    state: State,
    moves: _Moves,
    chains: _Chains,
    donor: np.ndarray,
    bw: np.ndarray,
    net: _Net,
    link_of: np.ndarray,
    conc: int,
    max_flight: float | None,
    load0: np.ndarray,
    wave: np.ndarray,
    *,
    max_tries: int = 10_000,
) -> np.ndarray:
    """Move the last waves' moves into earlier waves that have room for them, and drop
    the waves left empty.

    Greedy filling leaves tails: a large move of a late class cannot join an early wave
    while the higher classes still hold its nodes' window, and ends up stretching a wave
    of its own. Here each move of the last waves (from the end) goes to the earliest
    earlier wave where it fits without lengthening it: its nodes have a transfer slot and
    time to spare within that wave's duration, its links too, the bytes in flight stay
    under the cap, its shard's previous move ran before, and its target has room at
    every wave start from then on (the copy lands earlier; the source is freed earlier,
    which only helps). A wave from which nothing moves ends the pass.
    """
    c = state.cluster
    m = moves.n
    if m == 0:
        return wave
    n_waves = int(wave.max()) + 1
    n, n_res = c.n_nodes, c.n_resources
    copied = donor >= 0
    d_safe = np.maximum(donor, 0)
    t_in = np.where(copied, moves.size * 8 / bw[moves.target], 0.0)
    t_out = np.where(copied, moves.size * 8 / bw[d_safe], 0.0)
    # Per wave: transfers, seconds in and out per node, seconds per link, bytes in flight.
    cnt = np.zeros((n_waves, n))
    np.add.at(cnt, (wave, moves.target), 1)
    np.add.at(cnt, (wave[copied], donor[copied]), 1)
    sec_in = np.zeros((n_waves, n))
    np.add.at(sec_in, (wave, moves.target), t_in)
    sec_out = np.zeros((n_waves, n))
    np.add.at(sec_out, (wave[copied], donor[copied]), t_out[copied])
    n_links = max(net.n_links, 1)
    sec_link = np.zeros((n_waves, n_links))
    ml, mh = np.nonzero(link_of >= 0)
    if ml.size:
        np.add.at(
            sec_link,
            (wave[ml], link_of[ml, mh]),
            moves.size[ml] * 8 / net.link_bps[link_of[ml, mh]],
        )
    flight = np.bincount(wave[copied], weights=moves.size[copied], minlength=n_waves)
    dur = np.maximum(np.maximum(sec_in.max(axis=1), sec_out.max(axis=1)), sec_link.max(axis=1))
    # Worst in-flight load of every node in every wave (loads at the wave's start plus the
    # copies arriving during it).
    landed = np.zeros((n_waves, n, n_res))
    np.add.at(landed, (wave, moves.target), moves.demand)
    freed = np.zeros((n_waves, n, n_res))
    gone = moves.source >= 0
    np.add.at(freed, (wave[gone], moves.source[gone]), moves.demand[gone])
    start = load0[None, :, :] + np.concatenate(
        [np.zeros((1, n, n_res)), np.cumsum(landed - freed, axis=0)[:-1]]
    )
    peak = start + landed
    limit = c.capacity * (1 + _TOL)
    cap_flight = math.inf if max_flight is None else max_flight * (1 + _TOL)
    pred = chains.pred
    out = wave.copy()
    tries = 0
    for w in range(n_waves - 1, 0, -1):
        members = np.flatnonzero(out == w)
        moved_any = False
        for k in members[np.argsort(-moves.size[members], kind="stable")].tolist():
            tries += 1
            lo = int(out[pred[k]]) + 1 if pred[k] >= 0 else 0
            if lo >= w:
                continue
            b, d = int(moves.target[k]), int(donor[k])
            span = slice(lo, w)
            ok = (cnt[span, b] < conc) & (sec_in[span, b] + t_in[k] <= dur[span] * (1 + _TOL))
            if d >= 0:
                ok &= (cnt[span, d] < conc) & (
                    sec_out[span, d] + t_out[k] <= dur[span] * (1 + _TOL)
                )
                ok &= flight[span] + moves.size[k] <= cap_flight
                for link in link_of[k][link_of[k] >= 0].tolist():
                    t_l = moves.size[k] * 8 / net.link_bps[link]
                    ok &= sec_link[span, link] + t_l <= dur[span] * (1 + _TOL)
            if not ok.any():
                continue
            # Landing at u holds the copy on b through every wave from u to w - 1.
            worst = np.maximum.accumulate(peak[span, b][::-1], axis=0)[::-1]
            ok &= (worst + moves.demand[k] <= limit[b]).all(axis=1)
            if not ok.any():
                continue
            u = lo + int(np.argmax(ok))
            a = int(moves.source[k])
            cnt[w, b] -= 1
            cnt[u, b] += 1
            sec_in[w, b] -= t_in[k]
            sec_in[u, b] += t_in[k]
            if d >= 0:
                cnt[w, d] -= 1
                cnt[u, d] += 1
                sec_out[w, d] -= t_out[k]
                sec_out[u, d] += t_out[k]
                flight[w] -= moves.size[k]
                flight[u] += moves.size[k]
                for link in link_of[k][link_of[k] >= 0].tolist():
                    t_l = moves.size[k] * 8 / net.link_bps[link]
                    sec_link[w, link] -= t_l
                    sec_link[u, link] += t_l
            peak[u:w, b] += moves.demand[k]
            if a >= 0:
                peak[u + 1 : w + 1, a] -= moves.demand[k]
            out[k] = u
            moved_any = True
        if members.size:
            dur[w] = max(sec_in[w].max(), sec_out[w].max(), sec_link[w].max(), 0.0)
        if not moved_any or tries >= max_tries:
            break
    # Renumber without the waves left empty.
    used = np.unique(out)
    return np.searchsorted(used, out)


def _move_links(moves: _Moves, donor: np.ndarray, region_of: np.ndarray, net: _Net) -> np.ndarray:
    """Links each move's copy crosses, shape (M, H), -1 padded."""
    if not net.n_links:
        return np.full((moves.n, 1), -1, dtype=np.int64)
    out = net.pair_links[region_of[np.maximum(donor, 0)], region_of[moves.target]]
    out[donor < 0] = -1
    return out


class _Packer:
    """Greedy wave filling; the presorted orders make each round a few O(M) passes."""

    def __init__(
        self,
        state: State,
        moves: _Moves,
        chains: _Chains,
        donor: np.ndarray,
        bw: np.ndarray,
        net: _Net,
        link_of: np.ndarray,
        item_s: np.ndarray,
        conc: int,
        max_flight: float | None,
    ) -> None:
        c = state.cluster
        self.item_s = item_s
        self.moves, self.chains, self.donor, self.bw, self.net = moves, chains, donor, bw, net
        self.conc, self.max_flight = conc, max_flight
        self.window = conc
        self.n_nodes = c.n_nodes
        self.capacity = c.capacity
        self.load0 = _node_load(state)
        m = moves.n
        # Priority: class, then (restores) fewest live replicas, then larger first.
        live0 = (chains.rows_before >= 0) & c.alive[np.maximum(chains.rows_before, 0)]
        live_key = np.where(moves.klass == 0, live0.sum(axis=1), 0)
        prio = np.lexsort((-moves.size, live_key, moves.klass))
        self.rank = np.empty(m, dtype=np.int64)
        self.rank[prio] = np.arange(m)
        self.prio = prio
        rank = self.rank
        copied = donor >= 0
        # Keys are unique (ranks are), so an unstable sort gives the same orders, faster.
        self.by_target = np.argsort(moves.target * m + rank)
        dm = np.flatnonzero(copied)
        self.by_donor = dm[np.argsort(donor[dm] * m + rank[dm])]
        # Transfers: one entry per endpoint (target, and donor when there is one).
        ent_move = np.concatenate([np.arange(m), dm])
        ent_node = np.concatenate([moves.target, donor[dm]])
        o = np.argsort(ent_node * m + rank[ent_move])
        self.ent_move, self.ent_node = ent_move[o], ent_node[o]
        ml, mh = np.nonzero(link_of >= 0)
        lk = link_of[ml, mh]
        o = np.argsort(lk * m + rank[ml])
        self.lnk_move, self.lnk_id = ml[o], lk[o]

    def run(self, budget_s: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Waves of every move under a per-wave time budget; or the moves left when stuck."""
        mv = self.moves
        m, n = mv.n, self.n_nodes
        pred = self.chains.pred
        wave = np.full(m, -1, dtype=np.int64)
        remaining = np.ones(m, dtype=bool)
        load = self.load0.copy()
        # Presorted orders, compacted to the remaining moves after each wave.
        orders = _Orders(
            self.prio,
            self.by_target,
            self.by_donor,
            self.ent_move,
            self.ent_node,
            self.lnk_move,
            self.lnk_id,
        )
        succ = np.flatnonzero(pred >= 0)
        succ_pred = pred[succ]
        w = 0
        while orders.prio.size:
            # Ready: not run yet, and the shard's previous move ran in an earlier wave.
            ready = remaining.copy()
            pw = wave[succ_pred]
            ready[succ] &= (pw >= 0) & (pw < w)
            taken = self._fill(orders, ready, load, budget_s, windowed=True, relaxed=False)
            if taken.size == 0:
                # Nothing fit the window and the wave's time: try everything ready, with a
                # budget any single move fits, before calling it stuck.
                taken = self._fill(orders, ready, load, budget_s, windowed=False, relaxed=True)
            if taken.size == 0:
                return wave, np.flatnonzero(remaining)
            wave[taken] = w
            remaining[taken] = False
            # Settle the wave: copies land, sources go.
            gone = taken[mv.source[taken] >= 0]
            for r in range(mv.demand.shape[1]):
                load[:, r] += np.bincount(
                    mv.target[taken], weights=mv.demand[taken, r], minlength=n
                )
                load[:, r] -= np.bincount(mv.source[gone], weights=mv.demand[gone, r], minlength=n)
            orders = orders.select(remaining)
            w += 1
        return wave, None

    def _fill(
        self,
        orders: _Orders,
        ready: np.ndarray,
        load: np.ndarray,
        budget_s: float,
        *,
        windowed: bool,
        relaxed: bool,
    ) -> np.ndarray:
        """The moves of one wave, chosen among the *ready* ones of *orders* (the moves not
        run yet)."""
        mv, donor, net = self.moves, self.donor, self.net
        m, n = mv.n, self.n_nodes
        size, target, demand = mv.size, mv.target, mv.demand
        n_res = demand.shape[1]
        d_safe = np.maximum(donor, 0)
        copied = donor >= 0
        slack = 1 + _TOL
        cap_room = self.capacity * (1 + _TOL) - load
        flight_room = math.inf if self.max_flight is None else float(self.max_flight) * slack
        if windowed:
            # Only the first few moves of each node can make this wave (it takes at most
            # `conc` transfers per node): a window keeps each round's work small. (Moves
            # waiting for their shard's previous move count in the window; if that leaves
            # nothing, the relaxed pass looks at every ready move.)
            window = ready.copy()
            bt, bd = orders.by_target, orders.by_donor
            window[bt[_group_position(target[bt]) >= self.window]] = False
            window[bd[_group_position(donor[bd]) >= self.window]] = False
            orders = orders.select(window)
        else:
            orders = orders.select(ready)
        p_o, t_o, d_o = orders.prio, orders.by_target, orders.by_donor
        e_m, e_n, l_m, l_i = orders.ent_move, orders.ent_node, orders.lnk_move, orders.lnk_id
        if p_o.size == 0:
            return p_o
        # The wave lasts at least as long as the largest move of its leading class (the
        # highest-priority class ready), which runs first: fill every resource up to that,
        # or up to the pace. Larger moves of later classes wait for a wave of their own
        # size rather than lengthen this one, so large moves end up together instead of
        # each stretching a wave of small ones.
        lead = p_o if relaxed else p_o[mv.klass[p_o] == mv.klass[p_o[0]]]
        wave_s = max(budget_s, float(self.item_s[lead].max()))
        in_room = wave_s * self.bw / 8 * slack
        out_room = in_room.copy()
        cnt_room = np.full(n, float(self.conc))
        link_room = wave_s * net.link_bps / 8 * slack
        if self.max_flight is not None and relaxed:
            # A move larger than the cap on bytes in flight runs alone, when it fits.
            alone = p_o[(size[p_o] > self.max_flight)]
            alone = alone[(demand[alone] <= cap_room[target[alone]]).all(axis=1)]
            if alone.size and not (size[p_o] <= self.max_flight).any():
                return alone[:1]
        cand = np.zeros(m, dtype=bool)
        cand[p_o] = True
        taken: list[np.ndarray] = []
        n_taken = 0
        for _round in range(6):
            # Drop what cannot fit, even alone, in what is left of the wave.
            tg, dn, sz = target[p_o], d_safe[p_o], size[p_o]
            fit = (sz <= in_room[tg]) & (cnt_room[tg] >= 1) & (sz <= flight_room)
            for r in range(n_res):
                fit &= demand[p_o, r] <= cap_room[tg, r]
            fit &= ~copied[p_o] | ((sz <= out_room[dn]) & (cnt_room[dn] >= 1))
            if l_m.size:
                over = l_m[size[l_m] > link_room[l_i]]
                if over.size:
                    bad = np.zeros(m, dtype=bool)
                    bad[over] = True
                    fit &= ~bad[p_o]
            if not fit.all():
                cand[p_o[~fit]] = False
                p_o, t_o, d_o = p_o[fit], t_o[cand[t_o]], d_o[cand[d_o]]
                keep = cand[e_m]
                e_m, e_n = e_m[keep], e_n[keep]
                keep = cand[l_m]
                l_m, l_i = l_m[keep], l_i[keep]
            if p_o.size == 0:
                break
            # Running totals per resource, in priority order, one resource after the
            # other: a move stays when the resource still has room at its turn counting
            # only the moves still in. The survivors fit together: each total over them is
            # at most the total over a superset that passed.
            ok = cand.copy()
            if l_m.size:
                sel = ok[l_m]
                ok[l_m[sel][~_group_ok_entries(l_i[sel], size[l_m[sel]], link_room)]] = False
            if self.max_flight is not None:
                sel_p = p_o[ok[p_o]]
                ok[sel_p[np.cumsum(size[sel_p]) > flight_room]] = False
            for key, order, room in ((target, t_o, in_room), (d_safe, d_o, out_room)):
                sel_o = order[ok[order]]
                ok[sel_o[~_group_ok(sel_o, key, size, room)]] = False
            for r in range(n_res):
                sel_o = t_o[ok[t_o]]
                ok[sel_o[~_group_ok(sel_o, target, demand[:, r], cap_room[:, r])]] = False
            sel = ok[e_m]
            ok[e_m[sel][~_group_ok_entries(e_n[sel], np.ones(int(sel.sum())), cnt_room)]] = False
            acc = p_o[ok[p_o]]
            if acc.size == 0:  # pragma: no cover - the first candidate always fits
                break
            taken.append(acc)
            n_taken += acc.size
            a_t = target[acc]
            in_room -= np.bincount(a_t, weights=size[acc], minlength=n)
            a_c = acc[copied[acc]]
            a_d = donor[a_c]
            out_room -= np.bincount(a_d, weights=size[a_c], minlength=n)
            cnt_room -= np.bincount(a_t, minlength=n) + np.bincount(a_d, minlength=n)
            for r in range(n_res):
                cap_room[:, r] -= np.bincount(a_t, weights=demand[acc, r], minlength=n)
            flight_room -= float(size[acc].sum())
            if l_m.size:
                a_l = ok[l_m]
                link_room -= np.bincount(l_i[a_l], weights=size[l_m[a_l]], minlength=net.n_links)
            if acc.size < 0.02 * n_taken:
                break  # the wave is nearly full: leave the crumbs to the next one
            # Next round: the candidates not taken.
            cand &= ~ok
            p_o, t_o, d_o = p_o[~ok[p_o]], t_o[~ok[t_o]], d_o[~ok[d_o]]
            keep = ~ok[e_m]
            e_m, e_n = e_m[keep], e_n[keep]
            keep = ~ok[l_m]
            l_m, l_i = l_m[keep], l_i[keep]
        return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class _Orders:
    """Move ids in priority order, by (target, priority), by (donor, priority), and the
    transfer (node) and link entries in (node or link, priority) order."""

    prio: np.ndarray
    by_target: np.ndarray
    by_donor: np.ndarray
    ent_move: np.ndarray
    ent_node: np.ndarray
    lnk_move: np.ndarray
    lnk_id: np.ndarray

    def select(self, keep: np.ndarray) -> _Orders:
        """The same orders restricted to the moves where *keep* (shape (M,)) is True."""
        e = keep[self.ent_move]
        link = keep[self.lnk_move]
        return _Orders(
            self.prio[keep[self.prio]],
            self.by_target[keep[self.by_target]],
            self.by_donor[keep[self.by_donor]],
            self.ent_move[e],
            self.ent_node[e],
            self.lnk_move[link],
            self.lnk_id[link],
        )


def _group_position(key: np.ndarray) -> np.ndarray:
    """Position of each entry within its run of equal keys (keys sorted)."""
    if key.size == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.ones(key.size, dtype=bool)
    np.not_equal(key[1:], key[:-1], out=start[1:])
    at = np.arange(key.size)
    return at - np.maximum.accumulate(np.where(start, at, 0))


def _group_ok_entries(key: np.ndarray, value: np.ndarray, room: np.ndarray) -> np.ndarray:
    """:func:`_group_ok` for entries already in (key, priority) order."""
    if key.size == 0:
        return np.ones(0, dtype=bool)
    cs = np.cumsum(value)
    start = np.ones(key.size, dtype=bool)
    np.not_equal(key[1:], key[:-1], out=start[1:])
    base = np.maximum.accumulate(np.where(start, cs - value, 0.0))
    return cs - base <= room[key]


def _node_load(state: State) -> np.ndarray:
    """Load of every node, counting the listed replicas (as constraints.node_load)."""
    nodes = state.placement.nodes
    rows, cols = np.nonzero(nodes >= 0)
    where = nodes[rows, cols]
    c = state.cluster
    out = np.empty((c.n_nodes, c.n_resources))
    for j in range(c.n_resources):
        out[:, j] = np.bincount(where, weights=state.shards.demand[rows, j], minlength=c.n_nodes)
    return out


def _wave_durations(
    moves: _Moves,
    donor: np.ndarray,
    wave: np.ndarray,
    bw: np.ndarray,
    net: _Net,
    region_of: np.ndarray,
) -> np.ndarray:
    """Each wave's estimated duration: its busiest node direction or link, at full rate."""
    if moves.n == 0:
        return np.zeros(0)
    n_waves = int(wave.max()) + 1
    n = bw.shape[0]
    copied = donor >= 0
    w_c = wave[copied]
    size_c = moves.size[copied]
    secs = np.zeros(n_waves)
    for node in (moves.target[copied], donor[copied]):
        b = np.bincount(w_c * n + node, weights=size_c, minlength=n_waves * n).reshape(n_waves, n)
        secs = np.maximum(secs, (b * 8 / bw[None, :]).max(axis=1))
    if net.n_links:
        link_of = _move_links(moves, donor, region_of, net)
        ml, mh = np.nonzero(link_of >= 0)
        n_l = net.n_links
        b = np.bincount(
            wave[ml] * n_l + link_of[ml, mh], weights=moves.size[ml], minlength=n_waves * n_l
        ).reshape(n_waves, n_l)
        secs = np.maximum(secs, (b * 8 / net.link_bps[None, :]).max(axis=1))
    return secs


# -- cycles between full nodes -------------------------------------------------------------


def _load_when_stuck(state: State, moves: _Moves, stuck: np.ndarray) -> np.ndarray:
    """Node loads once every move not in *stuck* has run."""
    load = _node_load(state)
    done = np.ones(moves.n, dtype=bool)
    done[stuck] = False
    idx = np.flatnonzero(done)
    np.add.at(load, moves.target[idx], moves.demand[idx])
    gone = idx[moves.source[idx] >= 0]
    np.subtract.at(load, moves.source[gone], moves.demand[gone])
    return load


def _find_cycle(state: State, moves: _Moves, stuck: np.ndarray) -> list[int] | None:
    """Moves forming a cycle (each one's target is the next one's source), if any."""
    alive = state.cluster.alive
    g = nx.DiGraph()
    for k in stuck.tolist():
        a, b = int(moves.source[k]), int(moves.target[k])
        if a >= 0 and alive[a] and not g.has_edge(a, b):
            g.add_edge(a, b, move=k)
    try:
        edges = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [int(g.edges[u, v]["move"]) for u, v, *_ in edges]


def _describe_moves(state: State, moves: _Moves, ids: Any) -> str:
    nid, sid = state.cluster.node_ids, state.shards.ids
    parts = []
    for k in list(ids)[:6]:
        a = int(moves.source[k])
        parts.append(
            f"move {int(moves.origin[k])}: shard {str(sid[moves.shard[k]])!r} "
            f"{nid[a] if a >= 0 else '(new)'} -> {nid[moves.target[k]]}"
        )
    more = len(list(ids)) - 6
    return "; ".join(parts) + (f" and {more} more" if more > 0 else "")


def _breach_message(state: State, moves: _Moves, k: int) -> str:
    return (
        f"Move {int(moves.origin[k])} cannot run safely in any order: "
        f"{_describe_moves(state, moves, [k])} would create or worsen a spread, region or "
        "residency breach (or lose a replica). Plan again; the planner never emits such a move."
    )


def _cycle_message(state: State, moves: _Moves, stuck: np.ndarray, why: str | None) -> str:
    load = _load_when_stuck(state, moves, stuck)
    c = state.cluster
    free = c.capacity - load
    cycle = _find_cycle(state, moves, stuck)
    if cycle is None:
        k = int(stuck[0])
        b = int(moves.target[k])
        return (
            f"Move {int(moves.origin[k])} ({_describe_moves(state, moves, [k])}) cannot start: node "
            f"{c.node_ids[b]!r} has {float(free[b, c.size_index]) / 1e9:,.1f} GB free of its full "
            f"capacity and needs {float(moves.size[k]) / 1e9:,.1f} GB, and no pending move frees "
            "space on it. Free space on it or plan again."
        )
    nodes = [c.node_ids[int(moves.source[k])] for k in cycle]
    return (
        f"Moves wait on each other for space in a cycle between full nodes "
        f"{' -> '.join([*nodes, nodes[0]])}: {_describe_moves(state, moves, cycle)}. "
        + (why or "Temporary placements are disabled")
        + "; free space on one of these nodes (or allow a temporary placement)."
    )


def _break_cycle(state: State, moves: _Moves, stuck: np.ndarray) -> _Moves:
    """Route one move of a cycle through a temporary node: a -> t now, t -> b later."""
    c, s = state.cluster, state.shards
    cycle = _find_cycle(state, moves, stuck)
    if cycle is None:
        raise SchedulingError(_cycle_message(state, moves, stuck, None))
    load_now = _load_when_stuck(state, moves, stuck)
    final = _load_when_stuck(state, moves, np.zeros(0, dtype=np.int64))
    limit = c.capacity * state.headroom[None, :]
    active = c.state == NodeState.ACTIVE
    for k in sorted(cycle, key=lambda k: moves.size[k]):
        sh = int(moves.shard[k])
        mine = np.flatnonzero(moves.shard == sh)
        if np.isin(moves.target[k], moves.source[mine]):
            continue  # a later move of the shard starts from this target: keep it whole
        row = _row_before(state, moves, mine, k)
        touched = np.unique(np.concatenate([moves.source[mine], moves.target[mine], row]))
        room_ok = ((np.maximum(load_now, final) + moves.demand[k]) <= limit * (1 + _TOL)).all(
            axis=1
        )
        ok = active & room_ok
        ok[touched[touched >= 0]] = False
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            continue
        src = int(moves.source[k])
        before = np.repeat(row[None, :], cand.size, axis=0)
        hop = before.copy()
        slot = np.flatnonzero(row == (src if src >= 0 else EMPTY))[0]
        hop[:, slot] = cand
        last = hop.copy()
        last[:, slot] = moves.target[k]
        shards = np.full(cand.size, sh)
        m_before = _measures(state, before, shards)
        m_hop = _measures(state, hop, shards)
        m_last = _measures(state, last, shards)
        safe = ~_breaches(state, shards, m_before, m_hop) & ~_breaches(state, shards, m_hop, m_last)
        cand = cand[safe]
        if cand.size == 0:
            continue
        # Prefer the target's region, then the most free space (share of capacity).
        free = (
            (limit[cand] - np.maximum(load_now, final)[cand]) / np.maximum(limit[cand], 1e-300)
        ).min(axis=1)
        same = c.region_of[cand] == c.region_of[moves.target[k]]
        allowed = s.allowed_regions[s.residency_class[sh], c.region_of[cand]]
        best = int(cand[np.lexsort((-free, ~same, ~allowed))[0]])
        return _split(moves, k, best)
    raise SchedulingError(
        _cycle_message(
            state, moves, stuck, "No node has room to hold one of these replicas temporarily"
        )
    )


def _row_before(state: State, moves: _Moves, mine: np.ndarray, k: int) -> np.ndarray:
    """The shard's replicas just before move k, applying its earlier moves in plan order."""
    row = state.placement.nodes[int(moves.shard[k])].astype(np.int64)[None, :]
    for j in mine.tolist():
        if j == k:
            break
        after = _apply_rows(row, moves.source[j : j + 1], moves.target[j : j + 1])
        if after is not None:
            row = after
    return row[0]


def _split(moves: _Moves, k: int, via: int) -> _Moves:
    def grow(a: np.ndarray, value: Any) -> np.ndarray:
        return np.concatenate([a, np.asarray([value], dtype=a.dtype)])

    target = moves.target.copy()
    final = int(target[k])
    target[k] = via
    temporary = moves.temporary.copy()
    temporary[k] = True
    return _Moves(
        shard=grow(moves.shard, moves.shard[k]),
        source=grow(moves.source, via),
        target=grow(target, final),
        reason=grow(moves.reason, moves.reason[k]),
        size=grow(moves.size, moves.size[k]),
        demand=np.vstack([moves.demand, moves.demand[k : k + 1]]),
        klass=grow(moves.klass, moves.klass[k]),
        temporary=grow(temporary, True),
        origin=grow(moves.origin, moves.origin[k]),
    )
