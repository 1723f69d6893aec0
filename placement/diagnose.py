"""Why no valid plan exists: the conflicting constraints, the ids involved, and a fix.

:func:`diagnose` looks for the smallest set of hard constraints that cannot hold together:

1. **Counting arguments, at any scale** (numpy, per residency class and domain, never per
   shard in Python). Each one is a *necessary* condition, so a violated one proves
   infeasibility and names its cause exactly:

   * ``pinned``: a pinned replica sits on a draining node or outside its shard's regions,
     or pinned replicas alone overfill a node;
   * ``spread``: a shard needs more replicas than its allowed regions offer slots on
     active nodes (at most ``max_per_domain`` per domain);
   * ``regions``: fewer allowed regions have active nodes than ``min_regions`` asks;
   * ``capacity``: for a set of domains G, the replicas that *must* lie in G (a shard's
     replicas minus the slots it has outside G) need more of a resource than the active
     nodes of G hold under headroom — a cut in the flow network shards -> domains -> nodes;
   * ``max_moves`` / ``max_bytes`` / ``max_moves_per_node`` / ``max_moves_per_group``:
     the budget is below what must move anyway (lost, missing, drained, misplaced
     replicas, and the fewest whole replicas that bring each node under its limit).

2. **CP-SAT with assumptions, on small instances**: when no counting argument fires, the
   hard constraints are modelled with one assumption literal per constraint group (each
   node's capacity and drain, each shard's spread, regions, residency and pins, each
   budget); CP-SAT returns a core (``sufficient_assumptions_for_infeasibility``), which
   is then minimized by deletion: a group is dropped if the rest stay infeasible. The
   result is irreducible (each group is needed), not necessarily the smallest possible.

:func:`plan_partial` is the emergency path: when a failure leaves the cluster unable to
restore every replica, it returns the best partial plan (shards with the fewest live
replicas first) with the diagnosis of what remains.

Examples
--------
>>> import placement
>>> from placement.scenarios import with_node_state
>>> st = placement.synthetic_state(15, 60, seed=3)
>>> zone_a = [n for n in st.cluster.node_ids if n.startswith("eu-central")]
>>> d = diagnose(with_node_state(st, zone_a, "draining"))
>>> d.feasible, d.conflicts[0].kind
(False, 'regions')
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import check
from placement.errors import InvalidValueError, format_ids
from placement.model import NodeState, Placement, State
from placement.plan import Plan

__all__ = ["Conflict", "Diagnosis", "PartialPlan", "diagnose", "plan_partial"]

#: Above this many (shard, node) pairs the CP-SAT core search is skipped.
CORE_MAX_PAIRS = 20_000


@dataclass(frozen=True)
class Conflict:
    """One set of hard constraints that cannot hold together.

    Attributes
    ----------
    kind : str
        ``pinned``, ``spread``, ``regions``, ``capacity``, ``max_moves``, ``max_bytes``,
        ``max_moves_per_node``, ``max_moves_per_group``, or ``core`` (a CP-SAT core that
        mixes several kinds; see ``constraints``).
    message : str
        What conflicts, with numbers.
    recommendation : str
        A change that removes this conflict.
    shards, nodes, domains : tuple of str
        Ids involved (shard ids, node ids, region or domain names).
    constraints : tuple of str
        The constraint groups in conflict, e.g. ``capacity[eu]``, ``spread[s3]``.
    shortfall : float or None
        How much is missing (bytes, a resource amount, or moves), when one number says it.
    """

    kind: str
    message: str
    recommendation: str
    shards: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    shortfall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "recommendation": self.recommendation,
            "shards": list(self.shards),
            "nodes": list(self.nodes),
            "domains": list(self.domains),
            "constraints": list(self.constraints),
            "shortfall": self.shortfall,
        }


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of :func:`diagnose`.

    Attributes
    ----------
    feasible : bool or None
        False: proven infeasible (``conflicts`` says why). True: a valid placement within
        the budget exists (found by CP-SAT). None: no conflict found, not proven feasible.
    conflicts : tuple of Conflict
        Smallest first within each method.
    method : str
        ``"counting"``, ``"cp-sat core"``, ``"cp-sat"`` or ``"none"``.
    time_s : float
    """

    feasible: bool | None
    conflicts: tuple[Conflict, ...] = ()
    method: str = "none"
    time_s: float = 0.0

    def summary(self) -> str:
        """One paragraph: each conflict and its recommendation."""
        if not self.conflicts:
            if self.feasible:
                return "The hard constraints can all hold (CP-SAT found a valid placement)."
            return (
                "No conflict found by the counting arguments; the constraints may still "
                "be unsatisfiable in combination (try placement.solvers.exact.solve_exact)."
            )
        return " ".join(f"{c.message} Fix: {c.recommendation}" for c in self.conflicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "method": self.method,
            "time_s": round(self.time_s, 4),
            "conflicts": [c.to_dict() for c in self.conflicts],
        }


# ---------------------------------------------------------------------------------------
# Formatting.
# ---------------------------------------------------------------------------------------
def _amount(state: State, resource: int, value: float) -> str:
    name = state.cluster.resources[resource]
    if name.endswith("bytes") or name == state.cluster.size_resource:
        return _bytes(value)
    return f"{value:.3g} {name}"


def _bytes(value: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} B"


def _ids(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


# ---------------------------------------------------------------------------------------
# Counting arguments.
# ---------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    state: State
    active: np.ndarray
    alive: np.ndarray
    dom: np.ndarray  # (N,) domain at the spread level
    n_dom: int
    dom_region: np.ndarray  # (D,)
    active_per_dom: np.ndarray  # (D,)
    limit: np.ndarray  # (N, R)
    class_dom: np.ndarray  # (C, D) domain allowed for the class
    slots_dom: np.ndarray  # (D,) min(active nodes, max_per_domain)
    req_regions: np.ndarray  # (S,)
    budget: dict[str, Any] = field(default_factory=dict)


def _context(state: State, budget: dict[str, Any]) -> _Ctx:
    c, s = state.cluster, state.shards
    level = state.spread_level_index
    dom = c.domain_of[:, level].astype(np.int64)
    n_dom = len(c.domain_names[level])
    dom_region = np.zeros(n_dom, dtype=np.int64)
    dom_region[dom] = c.region_of
    active_per_dom = np.bincount(dom[c.active], minlength=n_dom)
    return _Ctx(
        state=state,
        active=c.active,
        alive=c.alive,
        dom=dom,
        n_dom=n_dom,
        dom_region=dom_region,
        active_per_dom=active_per_dom,
        limit=c.capacity * state.headroom[None, :],
        class_dom=s.allowed_regions[:, dom_region],
        slots_dom=np.minimum(active_per_dom, state.policy.max_per_domain),
        req_regions=np.minimum(state.policy.min_regions, s.replicas),
        budget=budget,
    )


def _check_pins(x: _Ctx) -> list[Conflict]:
    st = x.state
    c, s = st.cluster, st.shards
    p = st.placement
    rows, cols = np.nonzero(p.pinned)
    nodes = p.nodes[rows, cols]
    alive = x.alive[nodes]
    rows, nodes = rows[alive], nodes[alive]
    allowed = s.allowed_regions[s.residency_class[rows], c.region_of[nodes]]
    bad = ~x.active[nodes] | ~allowed
    out: list[Conflict] = []
    if bad.any():
        br, bn = rows[bad], nodes[bad]
        pairs = [f"{s.ids[a]} on {c.node_ids[b]}" for a, b in zip(br, bn, strict=True)]
        draining = sorted({c.node_ids[b] for b in bn if c.state[b] == NodeState.DRAINING})
        why = (
            f"node(s) {format_ids(draining)} are draining"
            if draining
            else "they lie outside their shards' allowed regions"
        )
        out.append(
            Conflict(
                kind="pinned",
                message=f"Pinned replicas {format_ids(pairs)} cannot stay where they are: {why}.",
                recommendation=(
                    "unpin these replicas, or keep their nodes active (cancel the drain)"
                    if draining
                    else "unpin these replicas, or allow their regions"
                ),
                shards=_ids(dict.fromkeys(s.ids[br].tolist())),
                nodes=_ids(dict.fromkeys(c.node_ids[b] for b in bn)),
                constraints=tuple(f"pin[{q}]" for q in pairs)
                + ("drain" if draining else "residency",),
            )
        )
    # Pinned replicas alone above a node's limit.
    ok = ~bad
    pin_load = np.zeros((c.n_nodes, c.n_resources))
    for r in range(c.n_resources):
        pin_load[:, r] = np.bincount(nodes[ok], weights=s.demand[rows[ok], r], minlength=c.n_nodes)
    over = (pin_load > x.limit * (1 + 1e-9)) & x.active[:, None]
    for n, r in zip(*np.nonzero(over), strict=True):
        here = rows[ok][nodes[ok] == n]
        need = pin_load[n, r] / c.capacity[n, r] if c.capacity[n, r] > 0 else math.inf
        out.append(
            Conflict(
                kind="pinned",
                message=(
                    f"Replicas pinned on node {c.node_ids[n]!r} need "
                    f"{_amount(st, r, pin_load[n, r])} of {c.resources[r]}, above its limit "
                    f"{_amount(st, r, x.limit[n, r])}."
                ),
                recommendation=(
                    f"unpin some of them, or raise headroom to {_ceil2(need)}"
                    if need <= 1
                    else "unpin some of them"
                ),
                shards=_ids(s.ids[here].tolist()),
                nodes=(c.node_ids[n],),
                constraints=(f"capacity[{c.node_ids[n]}]", "pins"),
                shortfall=float(pin_load[n, r] - x.limit[n, r]),
            )
        )
    return out


def _ceil2(value: float) -> float:
    return math.ceil(value * 100 - 1e-9) / 100


def _check_spread_regions(x: _Ctx) -> list[Conflict]:
    st = x.state
    c, s, pol = st.cluster, st.shards, st.policy
    level_name = c.levels[st.spread_level_index]
    out: list[Conflict] = []
    slots = (x.class_dom * x.slots_dom[None, :]).sum(axis=1)  # (C,)
    nodes_avail = (x.class_dom * x.active_per_dom[None, :]).sum(axis=1)
    region_has_active = np.bincount(c.region_of[x.active], minlength=len(c.regions)) > 0
    regions_avail = (s.allowed_regions & region_has_active[None, :]).sum(axis=1)

    short = s.replicas > slots[s.residency_class]
    for cls in np.unique(s.residency_class[short]).tolist():
        members = np.flatnonzero(short & (s.residency_class == cls))
        rf = int(s.replicas[members].max())
        doms = np.flatnonzero(x.class_dom[cls] & (x.active_per_dom > 0))
        inactive = [
            c.node_ids[n] for n in np.flatnonzero(~x.active & np.asarray(x.class_dom[cls])[x.dom])
        ]
        if nodes_avail[cls] >= rf:
            k = pol.max_per_domain
            while (np.minimum(x.active_per_dom[doms], k).sum()) < rf:
                k += 1
            fix = (
                f"allow {k} replicas per {level_name} (policy.max_per_domain) for these "
                f"{members.size} shards, or bring {level_name}s with active nodes back"
            )
        else:
            fix = (
                f"add {rf - nodes_avail[cls]} active node(s) in their allowed regions, or "
                "lower their replication"
            )
        if inactive:
            fix += f" (draining/failed here: {format_ids(inactive)})"
        out.append(
            Conflict(
                kind="spread",
                message=(
                    f"{members.size} shard(s) {format_ids(s.ids[members].tolist())} need {rf} "
                    f"replicas, at most {pol.max_per_domain} per {level_name}, but their "
                    f"allowed regions have only {doms.size} {level_name}(s) with active nodes "
                    f"({int(slots[cls])} slots)."
                ),
                recommendation=fix,
                shards=_ids(s.ids[members].tolist()),
                nodes=tuple(inactive),
                domains=_ids(c.domain_names[st.spread_level_index][d] for d in doms),
                constraints=(f"spread[{level_name}]", "replication", "drain/failed"),
                shortfall=float(rf - slots[cls]),
            )
        )

    few = x.req_regions > regions_avail[s.residency_class]
    for cls in np.unique(s.residency_class[few]).tolist():
        members = np.flatnonzero(few & (s.residency_class == cls))
        need = int(x.req_regions[members].max())
        allowed = np.flatnonzero(s.allowed_regions[cls])
        dead = [
            c.regions[g] for g in allowed if not region_has_active[g] and (c.region_of == g).any()
        ]
        have = int(regions_avail[cls])
        fix = f"lower min_regions to {have} for these shards" if have >= 1 else ""
        if dead:
            fix += f"{' or ' if fix else ''}bring active nodes back in {format_ids(dead)}"
        fix += f"{' or ' if fix else ''}allow another region for them"
        out.append(
            Conflict(
                kind="regions",
                message=(
                    f"{members.size} shard(s) {format_ids(s.ids[members].tolist())} must span "
                    f"{need} regions (policy.min_regions={pol.min_regions}) but only {have} of "
                    f"their allowed regions {format_ids(c.regions[g] for g in allowed)} have "
                    "active nodes."
                ),
                recommendation=fix,
                shards=_ids(s.ids[members].tolist()),
                nodes=_ids(
                    c.node_ids[n] for n in np.flatnonzero(~x.active & np.isin(c.region_of, allowed))
                ),
                domains=_ids(c.regions[g] for g in allowed),
                constraints=("min_regions", "residency", "drain/failed"),
                shortfall=float(need - have),
            )
        )
    return out


def _check_capacity(x: _Ctx) -> list[Conflict]:
    """Cuts over domain sets: replicas forced into G versus G's limit, per resource."""
    st = x.state
    c, s = st.cluster, st.shards
    n_classes = s.allowed_regions.shape[0]
    regions = len(c.regions)
    dom_of_region = [np.flatnonzero(x.dom_region == g) for g in range(regions)]
    candidates: dict[tuple[int, ...], str] = {}

    def add(doms: np.ndarray, label: str) -> None:
        key = tuple(sorted(set(doms.tolist())))
        if key and key not in candidates:
            candidates[key] = label

    used = [cl for cl in range(n_classes) if (s.residency_class == cl).any()]
    # Unions of class region sets (exhaustive for few classes), single regions, single
    # domains, and the whole cluster.
    class_sets = [np.flatnonzero(s.allowed_regions[cl]) for cl in used]
    if len(class_sets) <= 8:
        for k in range(1, len(class_sets) + 1):
            for combo in itertools.combinations(range(len(class_sets)), k):
                regs = sorted(set(np.concatenate([class_sets[i] for i in combo]).tolist()))
                add(
                    np.concatenate([dom_of_region[g] for g in regs]),
                    ", ".join(c.regions[g] for g in regs),
                )
    for g in range(regions):
        add(dom_of_region[g], c.regions[g])
    names = c.domain_names[st.spread_level_index]
    for d in range(x.n_dom):
        add(np.array([d]), names[d])

    cls = s.residency_class
    worst: dict[int, tuple[float, float, float, tuple[int, ...]]] = {}
    for key in candidates:
        in_g = np.zeros(x.n_dom, dtype=bool)
        in_g[list(key)] = True
        outside = (x.class_dom & ~in_g[None, :]) * x.slots_dom[None, :]
        forced = np.maximum(s.replicas - outside.sum(axis=1)[cls], 0)  # (S,)
        if not forced.any():
            continue
        node_in = in_g[x.dom] & x.active
        if not node_in.any():
            continue  # no active node there at all: a slot shortage, reported as spread
        for r in range(c.n_resources):
            need = float((forced * s.demand[:, r]).sum())
            have = float(x.limit[node_in, r].sum())
            if need > have * (1 + 1e-9) + 1e-9:
                score = (need - have) / max(have, 1e-300)
                if r not in worst or score > worst[r][0]:
                    worst[r] = (score, need, have, key)
    out: list[Conflict] = []
    for r, (_, need, have, key) in sorted(worst.items()):
        label = candidates[key]
        in_g = np.zeros(x.n_dom, dtype=bool)
        in_g[list(key)] = True
        node_in = in_g[x.dom] & x.active
        outside = (x.class_dom & ~in_g[None, :]) * x.slots_dom[None, :]
        forced = np.maximum(s.replicas - outside.sum(axis=1)[cls], 0)
        members = np.flatnonzero(forced > 0)
        cap_total = float(c.capacity[node_in, r].sum())
        h = need / cap_total if cap_total > 0 else math.inf
        fix = f"needs {_amount(st, r, need - have)} more free {c.resources[r]} in {label}"
        if h <= 1:
            fix += f", or raise headroom to {_ceil2(h)}"
        inactive = np.flatnonzero(in_g[x.dom] & ~x.active)
        if inactive.size:
            fix += f", or bring back {format_ids(c.node_ids[n] for n in inactive)}"
        out.append(
            Conflict(
                kind="capacity",
                message=(
                    f"{members.size} shard(s) {format_ids(s.ids[members].tolist())} must place "
                    f"{_amount(st, r, need)} of {c.resources[r]} in {label}, whose active nodes "
                    f"hold {_amount(st, r, have)} under headroom."
                ),
                recommendation=fix,
                shards=_ids(s.ids[members].tolist()),
                nodes=_ids(c.node_ids[n] for n in np.flatnonzero(node_in)),
                domains=tuple(label.split(", ")),
                constraints=(f"capacity[{label}]", "residency", "spread", "replication"),
                shortfall=need - have,
            )
        )
    # One replica larger than any node that may hold it.
    out.extend(_check_oversized(x))
    return out


def _check_oversized(x: _Ctx) -> list[Conflict]:
    st = x.state
    c, s = st.cluster, st.shards
    out: list[Conflict] = []
    for cl in np.unique(s.residency_class).tolist():
        nodes = np.flatnonzero(x.active & np.asarray(x.class_dom[cl])[x.dom])
        if nodes.size == 0:
            continue
        members = np.flatnonzero(s.residency_class == cl)
        if members.size * nodes.size > 5_000_000:
            continue  # too many pairs to test one by one; the cuts above still apply
        fits = s.demand[members][:, None, :] <= x.limit[nodes][None, :, :] * (1 + 1e-9)
        small: np.ndarray = np.asarray(fits.all(axis=2))
        # Slots among fitting nodes, at most max_per_domain per domain.
        fit_dom = np.zeros((members.size, x.n_dom), dtype=np.int64)
        for k, n in enumerate(nodes.tolist()):
            fit_dom[:, x.dom[n]] += small[:, k]
        slots = np.minimum(fit_dom, st.policy.max_per_domain).sum(axis=1)
        # Shards short of slots even ignoring size are reported as spread conflicts.
        all_slots = int(
            np.minimum(x.active_per_dom * x.class_dom[cl], st.policy.max_per_domain).sum()
        )
        bad = members[(slots < s.replicas[members]) & (s.replicas[members] <= all_slots)]
        if bad.size:
            big = float(s.demand[bad, c.size_index].max())
            out.append(
                Conflict(
                    kind="capacity",
                    message=(
                        f"Shard(s) {format_ids(s.ids[bad].tolist())} (up to {_bytes(big)} a "
                        "replica) fit on too few active nodes of their allowed regions for "
                        "their replication."
                    ),
                    recommendation="add larger nodes in their regions, or split these shards",
                    shards=_ids(s.ids[bad].tolist()),
                    constraints=("capacity", "spread", "residency"),
                )
            )
    return out


@dataclass
class _Forced:
    """What must move whatever the plan: per shard and per node (counts and bytes)."""

    moves: int
    bytes: float
    shard_moves: np.ndarray  # (S,)
    node_out: np.ndarray  # (N,) replicas that must leave each alive node
    shards: np.ndarray  # shard indices with forced moves
    nodes: np.ndarray  # nodes with forced departures


def _forced(x: _Ctx) -> _Forced:
    """Lower bounds on moves and bytes (as :func:`placement.planner.lower_bound_bytes`,
    but without a target: only what the hard constraints force)."""
    st = x.state
    c, s = st.cluster, st.shards
    nodes = st.placement.nodes
    size = s.demand[:, c.size_index]
    present = nodes >= 0
    safe = np.maximum(nodes, 0)
    alive = present & x.alive[safe]
    allowed = s.allowed_regions[s.residency_class[:, None], c.region_of[safe]]
    keepable = alive & x.active[safe] & allowed
    # Spread: within a domain at most max_per_domain may stay.
    k = st.policy.max_per_domain
    dom = np.where(keepable, x.dom[safe], -1)
    order = np.argsort(dom, axis=1, kind="stable")
    sdom = np.take_along_axis(dom, order, axis=1)
    width = nodes.shape[1]
    pos = np.broadcast_to(np.arange(width), sdom.shape)
    start = np.concatenate([np.ones((sdom.shape[0], 1), bool), sdom[:, 1:] != sdom[:, :-1]], 1)
    run_start = np.maximum.accumulate(np.where(start, pos, 0), axis=1)
    keep_sorted = (sdom >= 0) & (pos - run_start < k)
    keep = np.zeros_like(keepable)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    a = keep.sum(axis=1)
    reg = np.sort(np.where(keep, c.region_of[safe], -1), axis=1)
    b = (
        (reg >= 0)
        & np.concatenate([np.ones((reg.shape[0], 1), bool), reg[:, 1:] != reg[:, :-1]], 1)
    ).sum(axis=1)
    max_keep = np.minimum(a, s.replicas - np.maximum(x.req_regions - b, 0))
    shard_moves = np.maximum(s.replicas - max_keep, 0)
    # Departures every plan makes from alive nodes (not keepable: draining, residency).
    node_out = np.zeros(c.n_nodes, dtype=np.int64)
    must_leave = alive & ~keepable
    np.add.at(node_out, nodes[must_leave], 1)

    # Capacity: an active node above its limit with the keepable replicas it holds must
    # shed the fewest whole replicas that bring it under, for each resource.
    kr, kc = np.nonzero(keep)
    kn = nodes[kr, kc]
    load = np.zeros((c.n_nodes, c.n_resources))
    for r in range(c.n_resources):
        load[:, r] = np.bincount(kn, weights=s.demand[kr, r], minlength=c.n_nodes)
    over_nodes = np.flatnonzero(((load > x.limit * (1 + 1e-9)) & x.active[:, None]).any(axis=1))
    cap_moves = 0
    cap_bytes = 0.0
    for n in over_nodes.tolist():
        here = kr[kn == n]
        count = 0
        for r in range(c.n_resources):
            excess = load[n, r] - x.limit[n, r]
            if excess <= 0:
                continue
            d = np.sort(s.demand[here, r])[::-1]
            count = max(count, int(np.searchsorted(np.cumsum(d), excess * (1 - 1e-12))) + 1)
        count = min(count, here.size)
        excess_bytes = max(load[n, c.size_index] - x.limit[n, c.size_index], 0.0)
        smallest = float(np.sort(size[here])[:count].sum())
        cap_moves += count
        cap_bytes += max(excess_bytes, smallest)
        node_out[n] += count
    extra = shard_moves - (s.replicas - np.minimum(keepable.sum(axis=1), s.replicas))
    extra = np.maximum(extra, 0)
    base = shard_moves - extra
    moves = int(base.sum()) + max(int(extra.sum()), cap_moves)
    moved_bytes = float((base * size).sum()) + max(float((extra * size).sum()), cap_bytes)
    return _Forced(
        moves=moves,
        bytes=moved_bytes,
        shard_moves=shard_moves,
        node_out=node_out,
        shards=np.flatnonzero(shard_moves > 0),
        nodes=np.flatnonzero(node_out > 0),
    )


def _check_budget(x: _Ctx) -> list[Conflict]:
    st = x.state
    c, s = st.cluster, st.shards
    b = x.budget
    if all(v is None for v in b.values()):
        return []
    f = _forced(x)
    out: list[Conflict] = []
    shard_ids = _ids(s.ids[f.shards].tolist())
    node_ids = _ids(c.node_ids[n] for n in f.nodes)
    if b.get("max_moves") is not None and f.moves > b["max_moves"]:
        out.append(
            Conflict(
                kind="max_moves",
                message=(
                    f"At least {f.moves} moves are forced (lost, missing, drained or misplaced "
                    f"replicas of {format_ids(shard_ids)}; nodes {format_ids(node_ids)}), "
                    f"above max_moves={b['max_moves']}."
                ),
                recommendation=f"raise max_moves to at least {f.moves}",
                shards=shard_ids,
                nodes=node_ids,
                constraints=("max_moves", "replication", "drain/failed"),
                shortfall=float(f.moves - b["max_moves"]),
            )
        )
    if b.get("max_bytes") is not None and f.bytes > b["max_bytes"] * (1 + 1e-12):
        out.append(
            Conflict(
                kind="max_bytes",
                message=(
                    f"At least {_bytes(f.bytes)} must move (replicas of "
                    f"{format_ids(shard_ids)}), above max_bytes={_bytes(b['max_bytes'])}."
                ),
                recommendation=f"raise max_bytes to at least {_bytes(f.bytes)} ({f.bytes:.6g})",
                shards=shard_ids,
                nodes=node_ids,
                constraints=("max_bytes", "replication", "drain/failed"),
                shortfall=f.bytes - b["max_bytes"],
            )
        )
    limit = b.get("max_moves_per_node")
    if limit is not None:
        over = np.flatnonzero(f.node_out > limit)
        if over.size:
            worst = int(f.node_out[over].max())
            out.append(
                Conflict(
                    kind="max_moves_per_node",
                    message=(
                        f"Node(s) {format_ids(c.node_ids[n] for n in over)} must shed up to "
                        f"{worst} replicas, above max_moves_per_node={limit}."
                    ),
                    recommendation=f"raise max_moves_per_node to at least {worst}",
                    nodes=_ids(c.node_ids[n] for n in over),
                    constraints=("max_moves_per_node", "drain/capacity"),
                    shortfall=float(worst - limit),
                )
            )
        else:
            # Every created or moved replica lands on an active node: inflow capacity.
            inflow = int(f.shard_moves.sum())
            room = int(np.maximum(limit - f.node_out[x.active], 0).sum())
            if inflow > room:
                need = limit + math.ceil((inflow - room) / max(int(x.active.sum()), 1))
                out.append(
                    Conflict(
                        kind="max_moves_per_node",
                        message=(
                            f"{inflow} replicas must land on active nodes, which can take "
                            f"{room} more moves under max_moves_per_node={limit}."
                        ),
                        recommendation=f"raise max_moves_per_node to at least {need}",
                        constraints=("max_moves_per_node",),
                        shortfall=float(inflow - room),
                    )
                )
    limit = b.get("max_moves_per_group")
    if limit is not None and s.group_names:
        has = s.group >= 0
        per = np.bincount(s.group[has], weights=f.shard_moves[has], minlength=len(s.group_names))
        over = np.flatnonzero(per > limit)
        if over.size:
            worst = int(per[over].max())
            members = np.flatnonzero(has & np.isin(s.group, over) & (f.shard_moves > 0))
            out.append(
                Conflict(
                    kind="max_moves_per_group",
                    message=(
                        f"Group(s) {format_ids(s.group_names[g] for g in over)} need at least "
                        f"{worst} forced moves, above max_moves_per_group={limit}."
                    ),
                    recommendation=f"raise max_moves_per_group to at least {worst}",
                    shards=_ids(s.ids[members].tolist()),
                    domains=_ids(s.group_names[g] for g in over),
                    constraints=("max_moves_per_group",),
                    shortfall=float(worst - limit),
                )
            )
    return out


# ---------------------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------------------
def diagnose(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    time_limit_s: float = 10.0,
    use_cp_sat: bool = True,
) -> Diagnosis:
    """Find why the hard constraints (and budget) cannot all hold, if they cannot.

    Parameters
    ----------
    state : State
    max_moves, max_bytes, max_moves_per_node, max_moves_per_group : optional
        The plan's budget, as in :func:`placement.planner.plan`.
    time_limit_s : float
        Limit for the CP-SAT core search (small instances only; the counting arguments
        take milliseconds even at a million shards).
    use_cp_sat : bool
        False: counting arguments only.

    Returns
    -------
    Diagnosis

    Examples
    --------
    >>> import placement
    >>> st = placement.synthetic_state(15, 60, seed=3)
    >>> d = diagnose(st, max_moves=0)
    >>> d.feasible
    True
    """
    t0 = time.perf_counter()
    if not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0):
        raise InvalidValueError(f"time_limit_s must be a positive number, got {time_limit_s!r}.")
    budget: dict[str, Any] = {
        "max_moves": max_moves,
        "max_bytes": max_bytes,
        "max_moves_per_node": max_moves_per_node,
        "max_moves_per_group": max_moves_per_group,
    }
    x = _context(state, budget)
    conflicts: list[Conflict] = []
    for rule in (_check_pins, _check_spread_regions, _check_capacity, _check_budget):
        conflicts.extend(rule(x))
    if conflicts:
        return Diagnosis(False, tuple(conflicts), "counting", time.perf_counter() - t0)
    n_pairs = state.shards.n_shards * int(state.cluster.alive.sum())
    if not use_cp_sat or n_pairs > CORE_MAX_PAIRS:
        return Diagnosis(None, (), "counting", time.perf_counter() - t0)
    from placement.solvers.exact import infeasible_core

    feasible, core = infeasible_core(state, budget, time_limit_s=time_limit_s)
    if feasible is None or feasible:
        return Diagnosis(feasible, (), "cp-sat", time.perf_counter() - t0)
    return Diagnosis(False, (_core_conflict(state, core),), "cp-sat core", time.perf_counter() - t0)


def _core_conflict(state: State, core: list[tuple[str, int]]) -> Conflict:
    """Describe an irreducible set of constraint groups ``(kind, index)``."""
    c, s = state.cluster, state.shards
    shards: dict[str, None] = {}
    nodes: dict[str, None] = {}
    labels: list[str] = []
    fixes: list[str] = []
    for kind, i in core:
        if kind in ("capacity", "drain", "max_moves_per_node"):
            nodes[c.node_ids[i]] = None
            labels.append(f"{kind}[{c.node_ids[i]}]")
        elif kind in ("spread", "regions", "residency"):
            shards[str(s.ids[i])] = None
            labels.append(f"{kind}[{s.ids[i]}]")
        elif kind == "pin":
            shards[str(s.ids[i])] = None
            labels.append(f"pin[{s.ids[i]}]")
        elif kind == "max_moves_per_group":
            labels.append(f"{kind}[{s.group_names[i]}]")
        else:
            labels.append(kind)
    kinds = {k for k, _ in core}
    if "capacity" in kinds:
        cap_nodes = [i for k, i in core if k == "capacity"]
        regions = sorted({c.regions[c.region_of[n]] for n in cap_nodes})
        fixes.append(
            f"add capacity (or raise headroom) on {format_ids(c.node_ids[n] for n in cap_nodes)}"
            f" in {format_ids(regions)}"
        )
    if "drain" in kinds:
        fixes.append("keep a draining node active for now")
    if "spread" in kinds:
        fixes.append("allow more replicas per domain for the shards named")
    if "regions" in kinds:
        fixes.append("lower min_regions for the shards named")
    if "residency" in kinds:
        fixes.append("allow more regions for the shards named")
    if "pin" in kinds:
        fixes.append("unpin the replicas named")
    for k in ("max_moves", "max_bytes", "max_moves_per_node", "max_moves_per_group"):
        if k in kinds:
            fixes.append(f"raise {k}")
    return Conflict(
        kind="core",
        message=(
            f"These {len(labels)} constraint groups cannot hold together (each is needed "
            f"for the conflict): {', '.join(labels)}."
        ),
        recommendation="; or ".join(fixes) or "relax one of them",
        shards=tuple(shards),
        nodes=tuple(nodes),
        domains=(),
        constraints=tuple(labels),
    )


@dataclass(frozen=True)
class PartialPlan:
    """An emergency plan that restores what can be restored, and why the rest cannot.

    Attributes
    ----------
    plan : Plan
        Valid moves only (each keeps every rule it touches); shards with the fewest live
        replicas were served first.
    diagnosis : Diagnosis
        Why the remaining violations cannot be repaired (diagnosed on the state after the
        plan, with what is left of the budget).
    unrestored : tuple of str
        Shards still under-replicated or misplaced after the plan, fewest live replicas
        first (nodes left above headroom are in the diagnosis).
    """

    plan: Plan
    diagnosis: Diagnosis
    unrestored: tuple[str, ...]


def plan_partial(
    state: State,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    time_limit_s: float = 10.0,
    seed: int = 0,
) -> PartialPlan:
    """The best plan the cluster allows now, with the diagnosis for what it cannot fix.

    Repairs only (no balancing: an emergency plan moves what the failure forces), most
    at-risk shards first: the engine serves repairs in order of live replicas.

    Examples
    --------
    >>> import placement
    >>> from placement.scenarios import with_node_state
    >>> st = placement.synthetic_state(15, 300, seed=3)
    >>> hit = with_node_state(st, st.cluster.node_ids[:2], "failed")
    >>> pp = plan_partial(hit, max_moves=5)
    >>> pp.plan.n_moves, pp.diagnosis.conflicts[0].kind
    (5, 'max_moves')
    """
    from placement.planner import plan

    budget: dict[str, Any] = {
        "max_moves": max_moves,
        "max_bytes": max_bytes,
        "max_moves_per_node": max_moves_per_node,
        "max_moves_per_group": max_moves_per_group,
    }
    p = plan(
        state,
        **budget,
        trigger_imbalance=1e9,  # no balancing in an emergency
        time_limit_s=time_limit_s,
        seed=seed,
        allow_partial=True,
    )
    after = _after_state(state, p.target_nodes)
    v = check(state, p.target_nodes)
    bad = np.unique(
        np.concatenate(
            [
                v.under_replicated,
                v.failed[:, 0],
                v.draining[:, 0],
                v.spread[:, 0],
                v.regions[:, 0],
                v.residency[:, 0],
            ]
        ).astype(np.int64)
    )
    bad = bad[np.argsort(v.live_count[bad], kind="stable")]
    left = dict(budget)
    if max_moves is not None:
        left["max_moves"] = max(max_moves - p.n_moves, 0)
    if max_bytes is not None:
        left["max_bytes"] = max(max_bytes - p.bytes_moved, 0.0)
    # Per-node and per-group budgets are kept as given: the diagnosis of the remaining
    # repairs then under-reports, never over-reports, their conflict.
    if not v:
        diagnosis = Diagnosis(True, (), "none")
    else:
        diagnosis = diagnose(after, **left, time_limit_s=time_limit_s)
    return PartialPlan(
        plan=p, diagnosis=diagnosis, unrestored=tuple(str(i) for i in state.shards.ids[bad])
    )


def _after_state(state: State, nodes: np.ndarray) -> State:
    """The state with the plan applied (pins kept where the replica stayed)."""
    before = state.placement
    pinned = before.pinned & (nodes == before.nodes)
    placement = Placement(nodes=_frozen(nodes.copy()), pinned=_frozen(pinned))
    return state.with_placement(placement)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
