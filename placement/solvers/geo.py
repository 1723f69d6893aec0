"""The geo improvement phase: move replicas toward their clients, fewest bytes first.

Private kernel of :func:`placement.scenarios.plan_geo`, which validates the inputs, runs
the engine's repair first and turns the result into a plan; this module trusts its
arguments (a placement matrix of the state's shards). Pure numpy; the engine's
vectorized placement kernel (:func:`placement.solvers.bulk.place`) chooses the nodes.

The objective
-------------
Latency terms are those of :mod:`placement.latency`. With ``T`` the latency target:

1. hard constraints (capacity with headroom, spread, regions, residency, pins, no
   draining or failed targets, the move and byte budget) are never traded, and the
   per-shard latency SLO (:func:`placement.latency.slo_violations`) is never broken for
   a shard that meets it;
2. raise **compliance** (client demand within ``T``) to ``compliance_goal`` and
   **coverage** (client demand with a replica in its own region) to ``coverage_goal``;
   a move may not lower either;
3. with the fewest **bytes**, then the lowest **transfer cost**: candidate moves are
   ranked by benefit per byte (in 1% steps), then by cost per GB;
4. balance may not get much worse: no node's *pressure* (as in the engine, the highest
   utilization relative to the cluster's mean, ``max_r load_r / capacity_r / mean_r``)
   may pass the highest pressure of the input placement (the *ceiling*).

How it works
------------
A *candidate* is a shard with client demand that is not served or not covered. For each
candidate, every single move (one live, unpinned replica ``j`` to some allowed region
``r``) is scored at once with a few array products over ``(shard, slot, region,
client region)``: its *benefit* is the client demand it brings within the target (and
into coverage), net of what removing replica ``j`` gives up. The best move of each shard
is kept. Then, in rounds:

* moves are ranked by benefit per byte and cut where they reach the goal (the crossing
  move chosen as in a min-cost covering knapsack, see :func:`_finish`) or exhaust the
  budget;
* each region takes its best-ranked moves, up to half its free room under the ceiling, in
  one batch of the engine's interval placement; the rest one at a time in rank order, on
  the node they leave with the least room (best fit), so scarce room goes to the best
  moves; a move that found no node blocks that region for that shard;
* the shards that moved or failed are scored again.

When single moves find no room (every node near the ceiling, as after a rebalance),
replicas are exchanged between regions (:func:`_swap_phase`). Finally, moves the goals
turned out not to need (the overshoot) are undone, largest first.

Residency of copies
-------------------
A copy goes to a node in an allowed region of its shard, so no data crosses *into* a
disallowed region. Its source is a live replica of the shard; in a placement the repair
has made valid every replica already lies in an allowed region, so every copy source is
allowed too. (Were a replica still outside its residency, copying it into an allowed
region moves data out of, not into, a disallowed region.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import KINDS, Violations, check, node_load
from placement.latency import (
    DEFAULT_SLO_SHARE,
    achievable_compliance,
    client_service,
    latency_levels,
    slo_violations,
)
from placement.model import State
from placement.solvers import bulk

__all__ = ["GeoStats", "improve_latency", "pressure_scale"]

#: Ranking granularity of benefit per byte: moves within 1% of each other count as equal
#: and the cheaper transfer goes first.
_RATIO_STEP = math.log1p(0.01)
#: Placement rounds per batch in the engine's kernel (a retry shifts the layout).
_PLACE_ROUNDS = 2
#: Share of a region's free room that one batch layout may fill: beyond it room is
#: scarce and moves are placed one at a time, best first.
_BATCH_ROOM_SHARE = 0.5
#: Moves placed one at a time per round (a Python loop); more wait for the next round.
_SEQUENTIAL = 2000
#: Swap phases (each after single moves ran out of room) and blocked moves each tries.
_SWAP_PHASES = 3
_SWAP_ITEMS = 2000
#: Nodes (most room first) and partner replicas on them (smallest first) examined per
#: blocked move.
_SWAP_NODES = 8
_SWAP_PARTNERS = 256


@dataclass(frozen=True, eq=False)
class GeoStats:
    """What the geo phase did, move by move, and where it left the placement.

    Attributes
    ----------
    shard, slot, source, target : ndarray of int64, shape (M,)
        The phase's moves in the order they were accepted (a shard may move twice).
    size_bytes, cost : ndarray of float64, shape (M,)
        Bytes copied and transfer cost (GB x cost per GB from the cheapest live replica).
    served_gain, covered_gain : ndarray of float64, shape (M,)
        Client demand each move brought within the latency target / into coverage.
    summary : dict
        Compliance, coverage, SLO breaches before and after, goals, ceiling, rounds,
        stop reason, time, and the latency lower bound on bytes (see :meth:`to_dict`).
    """

    shard: np.ndarray
    slot: np.ndarray
    source: np.ndarray
    target: np.ndarray
    size_bytes: np.ndarray
    cost: np.ndarray
    served_gain: np.ndarray
    covered_gain: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def n_moves(self) -> int:
        return int(self.shard.size)

    @property
    def bytes_moved(self) -> float:
        return float(self.size_bytes.sum())

    @property
    def benefit_per_byte(self) -> np.ndarray:
        """Client demand brought within the target per byte moved, shape (M,)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                self.size_bytes > 0, self.served_gain / self.size_bytes, np.inf * self.served_gain
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-move arrays): the ``summary`` plus totals and the
        distribution of benefit per GB over the moves."""
        out = dict(self.summary)
        per_gb = self.benefit_per_byte * 1e9
        finite = per_gb[np.isfinite(per_gb)]
        out.update(
            {
                "moves": self.n_moves,
                "bytes_moved": self.bytes_moved,
                "transfer_cost": float(self.cost.sum()),
                "served_gain": float(self.served_gain.sum()),
                "covered_gain": float(self.covered_gain.sum()),
                "benefit_per_gb": {
                    "min": float(finite.min()) if finite.size else None,
                    "median": float(np.median(finite)) if finite.size else None,
                    "max": float(finite.max()) if finite.size else None,
                },
            }
        )
        return out


def pressure_scale(state: State, weights: np.ndarray | None = None) -> np.ndarray:
    """Per node and resource, the factor that turns load into pressure, shape (N, R).

    Pressure of node n is ``max_r load[n, r] * scale[n, r]``: utilization relative to
    the cluster's mean once every shard is fully replicated on the active nodes (the
    engine's definition, :mod:`placement.solvers.greedy`), times the resource weight.
    """
    c, s = state.cluster, state.shards
    w = np.ones(c.n_resources) if weights is None else np.asarray(weights, dtype=float)
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    active_cap = c.capacity[c.active].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(active_cap > 0, total / active_cap, 0.0)
        return np.where(
            (c.capacity > 0) & (mean[None, :] > 0), w[None, :] / (c.capacity * mean[None, :]), 0.0
        )


class _Arrays:
    """The engine arrays :func:`bulk.place` reads, with residency replaced by the region
    each move must land in (one "class" per region), so one batch call places moves
    bound for different regions."""

    def __init__(self, state: State, nodes: np.ndarray, load: np.ndarray, scale: np.ndarray):
        c, s = state.cluster, state.shards
        level = state.spread_level_index
        self.nodes = nodes
        self.load = load
        self.limit = c.capacity * state.headroom[None, :]
        self.demand = s.demand
        self.size = s.demand[:, c.size_index]
        self.dom = c.domain_of[:, level].astype(np.int64)
        self.region = c.region_of.astype(np.int64)
        self.active = c.active
        self.alive = c.alive
        n_dom = len(c.domain_names[level])
        dom_region = np.zeros(n_dom, dtype=np.int64)
        dom_region[self.dom] = self.region
        n_regions = len(c.regions)
        self.allowed_dom = np.eye(n_regions, dtype=bool)[:, dom_region]  # (regions, D)
        self.res_class = np.zeros(s.n_shards, dtype=np.int64)
        self.required_regions = np.minimum(state.policy.min_regions, s.replicas)
        self.max_per_domain = state.policy.max_per_domain
        self.scale = scale
        n_active = max(int(c.active.sum()), 1)
        active_cap = c.capacity[c.active].sum(axis=0)
        self.unit = np.where(active_cap > 0, active_cap / n_active, 1.0)


@dataclass
class _Scores:
    """Best single move of each candidate shard (position k in the candidate list)."""

    slot: np.ndarray
    region: np.ndarray
    benefit: np.ndarray
    served: np.ndarray
    covered: np.ndarray
    cost_per_gb: np.ndarray


class _Geo:
    def __init__(
        self,
        state: State,
        nodes: np.ndarray,
        load: np.ndarray,
        *,
        target_ms: float,
        max_ms: float,
        slo_share: float,
        scale: np.ndarray,
        seed: int,
    ) -> None:
        c, s = state.cluster, state.shards
        self.state = state
        self.nodes = nodes
        self.load = load
        self.scale = scale
        self.arrays = _Arrays(state, nodes, load, scale)
        self.rng = np.random.default_rng(seed)
        lat = c.region_graph.latency_ms
        n_regions = len(c.regions)
        # Lookups indexed [replica region, client region].
        self.near = (lat <= target_ms).T.copy()
        self.tol = (lat <= max_ms).T.copy()
        self.eye = np.eye(n_regions, dtype=bool)
        self.cost_gb = c.region_graph.cost_per_gb
        self.slo_share = slo_share
        self.size = s.demand[:, c.size_index]
        has_active = np.bincount(c.region_of[c.active], minlength=n_regions) > 0
        self.region_ok = s.allowed_regions & has_active[None, :]  # (classes, regions)
        self.required = np.minimum(state.policy.min_regions, s.replicas)
        pinned = state.placement.pinned
        self.pinned_nodes = np.where(pinned, state.placement.nodes, -1)
        self.any_pins = bool(pinned.any())
        order = np.flatnonzero(c.active)
        self.members = [order[c.region_of[order] == r] for r in range(n_regions)]
        self.eps = 0.0
        self.weight_served = 1.0
        self.weight_covered = 1.0

    def apply(self, shard: np.ndarray, slot: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Make the moves that have a target (>= 0), keeping loads in step; returns each
        item's source node (-1 for items not moved)."""
        source = np.full(shard.size, -1, dtype=np.int64)
        ok = target >= 0
        s_, j_, t_ = shard[ok], slot[ok], target[ok]
        src = self.nodes[s_, j_].astype(np.int64)
        dem = self.state.shards.demand[s_]
        np.add.at(self.load, src, -dem)
        np.add.at(self.load, t_, dem)
        self.nodes[s_, j_] = t_
        source[ok] = src
        return source

    def place_each(
        self, shard: np.ndarray, slot: np.ndarray, region: np.ndarray, ceiling: float
    ) -> np.ndarray:
        """One at a time, in order: the node of the item's region that has room under
        headroom and the ceiling, keeps spread, does not hold the shard yet and is left
        with the least room (best fit). Applies each move found; returns the targets
        (-1: none)."""
        e = self.arrays
        caps = bulk.level_caps(e, ceiling)
        demand = self.state.shards.demand
        out = np.full(shard.size, -1, dtype=np.int64)
        for k, (sh, j, r) in enumerate(
            zip(shard.tolist(), slot.tolist(), region.tolist(), strict=True)
        ):
            cand = self.members[r]
            fits = ((self.load[cand] + demand[sh]) <= caps[cand]).all(axis=1)
            if not fits.any():
                continue
            others = [x for i, x in enumerate(self.nodes[sh].tolist()) if i != j and x >= 0]
            if others:
                # Few replicas per shard: plain comparisons beat set routines here.
                fits &= (cand[:, None] != np.array(others)[None, :]).all(axis=1)
                doms = [int(e.dom[x]) for x in others if e.alive[x]]
                full = [d for d in set(doms) if doms.count(d) >= e.max_per_domain]
                if full:
                    fits &= (e.dom[cand][:, None] != np.array(full)[None, :]).all(axis=1)
            if not fits.any():
                continue
            # Best fit: the node the replica leaves the least room on (in units of an
            # average node), so bigger replicas later still find a node with room. Peak
            # pressure cannot pass the ceiling either way.
            slack = ((caps[cand] - self.load[cand] - demand[sh]) / e.unit[None, :]).min(axis=1)
            t = int(cand[np.argmin(np.where(fits, slack, np.inf))])
            out[k] = t
            self.apply(np.array([sh]), np.array([j]), np.array([t]))
        return out

    def setup_candidates(self, shards: np.ndarray) -> None:
        s = self.state.shards
        self.cand = shards
        self.dense = s.clients[shards].toarray()  # (K, regions)
        self.allowed = self.region_ok[s.residency_class[shards]]  # (K, regions)
        self.blocked = np.zeros(self.dense.shape, dtype=bool)

    def tables(
        self, shards: np.ndarray, dem: np.ndarray, regions_ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every single move of the given shards at once, vectorized over (shard, slot,
        region): served and covered gain (k, W, R), whether the move keeps the rules that
        do not depend on other shards (k, W, R), the cheapest cost per GB into each region
        (k, R) and the pressure of each replica's node (k, W). *dem* is the shards' client
        demand (k, C); *regions_ok* (k, R) the regions each may move into."""
        c = self.state.cluster
        rows = self.nodes[shards].astype(np.int64)  # (k, W)
        present = rows >= 0
        safe = np.maximum(rows, 0)
        live = present & c.alive[safe]
        reg = np.where(live, c.region_of[safe], 0)

        def per_slot(table: np.ndarray) -> np.ndarray:  # (k, W, C) bool
            return table[reg] & live[:, :, None]

        gains = []
        for table in (self.near, self.eye):
            slot_ok = per_slot(table)
            count = slot_ok.sum(axis=1)  # (k, C)
            other = (count[:, None, :] - slot_ok) > 0  # (k, W, C): without slot j
            now = (dem * (count > 0)).sum(axis=1)  # (k,)
            kept = (dem[:, None, :] * other).sum(axis=2)  # (k, W)
            # Demand a replica in region r adds: the clients near r the others miss.
            added = (dem[:, None, :] * ~other) @ table.T.astype(np.float64)  # (k, W, R)
            gains.append(kept[:, :, None] + added - now[:, None, None])
        served, covered = gains

        # The SLO: a shard that meets it keeps meeting it.
        tol_slot = per_slot(self.tol)
        tol_count = tol_slot.sum(axis=1)
        tol_others = (tol_count[:, None, :] - tol_slot) > 0
        total = dem.sum(axis=1, keepdims=True)
        major = (dem > 0) & (dem >= self.slo_share * total * (1 - 1e-12))
        meets = ~(major & ~(tol_count > 0)).any(axis=1)
        breaks = ((major[:, None, :] & ~tol_others).astype(np.float64) @ (~self.tol.T)) > 0
        ok = ~(meets[:, None, None] & breaks)

        # Hard rules that do not depend on other shards: a live, unpinned replica moves to
        # an allowed region with active nodes, other than its own, keeping min_regions.
        movable = live.copy()
        if self.any_pins:
            pins = self.pinned_nodes[shards]
            movable &= ~((rows[:, :, None] == pins[:, None, :]) & (pins[:, None, :] >= 0)).any(
                axis=2
            )
        ok &= movable[:, :, None]
        ok &= regions_ok[:, None, :]
        ok &= ~self.eye[reg] | ~live[:, :, None]
        in_region = self.eye[reg] & live[:, :, None]  # (k, W, R)
        other_regions = (in_region.sum(axis=1)[:, None, :] - in_region) > 0  # (k, W, R)
        spanned = other_regions.sum(axis=2)[:, :, None] + ~other_regions
        ok &= spanned >= self.required[shards][:, None, None]
        ok &= (served >= -self.eps) & (covered >= -self.eps)

        # Cheapest copy: from any live replica (the moving one is still there).
        cost = np.where(live[:, :, None], self.cost_gb[reg], np.inf).min(axis=1)  # (k, R)
        cost = np.where(np.isfinite(cost), cost, 0.0)
        pressure = (self.load[safe] * self.scale[safe]).max(axis=2)  # (k, W)
        return served, covered, ok, cost, pressure

    def score(self, pos: np.ndarray) -> _Scores:
        """Best move of each candidate at *pos* (largest benefit, then cheapest, then from
        the most pressured node)."""
        shards = self.cand[pos]
        served, covered, ok, cost, pressure = self.tables(
            shards, self.dense[pos], self.allowed[pos] & ~self.blocked[pos]
        )
        k, w, n_reg = served.shape
        benefit = self.weight_served * served + self.weight_covered * covered
        ok &= benefit > self.eps
        flat_b = np.where(ok, benefit, -np.inf).reshape(k, w * n_reg)
        best = flat_b.max(axis=1, initial=-np.inf)
        tie = ok.reshape(k, -1) & (flat_b >= best[:, None] - 1e-12 * np.abs(best[:, None]))
        flat_c = np.broadcast_to(cost[:, None, :], (k, w, n_reg)).reshape(k, -1)
        cmin = np.where(tie, flat_c, np.inf).min(axis=1, initial=np.inf)
        tie &= flat_c <= cmin[:, None] + 1e-15
        # Among equal moves, take the replica from the most pressured node (helps balance).
        flat_p = np.broadcast_to(pressure[:, :, None], (k, w, n_reg)).reshape(k, -1)
        pick = np.where(tie, flat_p, -np.inf).argmax(axis=1)
        j, r = pick // n_reg, pick % n_reg
        idx = np.arange(k)
        has = np.isfinite(best)
        return _Scores(
            slot=j,
            region=r,
            benefit=np.where(has, best, 0.0),
            served=np.where(has, served[idx, j, r], 0.0),
            covered=np.where(has, covered[idx, j, r], 0.0),
            cost_per_gb=cost[idx, r],
        )


def _swap_phase(
    geo: _Geo,
    ceiling: float,
    need: tuple[float, float],
    moves_left: int,
    bytes_left: float,
    deadline: float,
    rec: dict[str, list[np.ndarray]],
) -> tuple[int, float, float, float]:
    """Exchange replicas between regions where single moves find no room.

    For each blocked move (shard A's replica on node a, wanted in region r), best benefit
    per byte first: a replica B on a node b of region r moves to a in exchange, so each
    node gives up about what it takes. B's move must keep every rule (as a single move
    would) and may not lower B's service; both nodes stay under headroom and the
    ceiling. The partner with the best joint benefit per byte wins. Appends both moves
    to *rec*; returns the swaps made, their bytes, and the served and covered gain.
    """
    st = geo.state
    c, s = st.cluster, st.shards
    e = geo.arrays
    w_s, w_v = geo.weight_served, geo.weight_covered
    need_s, need_v = need
    served, covered, ok, cost, _ = geo.tables(geo.cand, geo.dense, geo.allowed)
    benefit = np.where(ok, w_s * served + w_v * covered, -np.inf)  # (K, W, R)
    slot_of = benefit.argmax(axis=1)  # (K, R) best slot per target region
    best = benefit.max(axis=1)
    kk, rr = np.nonzero(best > geo.eps)
    if kk.size == 0:
        return 0, 0.0, 0.0, 0.0
    size = geo.size[geo.cand[kk]]
    with np.errstate(divide="ignore"):
        ratio = np.where(size > 0, best[kk, rr] / size, np.inf)
    order = np.argsort(-ratio, kind="stable")[:_SWAP_ITEMS]
    caps = bulk.level_caps(e, ceiling)
    width = geo.nodes.shape[1]
    flat = geo.nodes.ravel()
    by_node = np.argsort(flat, kind="stable")
    ptr = np.searchsorted(flat[by_node], np.arange(c.n_nodes + 1))
    touched = np.zeros(s.n_shards, dtype=bool)
    made, spent, gain_s, gain_v = 0, 0.0, 0.0, 0.0
    for i in order.tolist():
        if time.perf_counter() > deadline or moves_left - 2 * made < 2:
            break
        if (need_s - gain_s <= geo.eps or w_s == 0) and (need_v - gain_v <= geo.eps or w_v == 0):
            break
        k, r = int(kk[i]), int(rr[i])
        sa = int(geo.cand[k])
        if touched[sa]:
            continue
        ja = int(slot_of[k, r])
        a = int(geo.nodes[sa, ja])
        q = int(c.region_of[a])
        row_a = geo.nodes[sa]
        others_a = np.array([x for j, x in enumerate(row_a.tolist()) if j != ja and x >= 0])
        nodes_b = geo.members[r]
        nodes_b = nodes_b[~np.isin(nodes_b, row_a)]
        if others_a.size:
            doms, counts = np.unique(e.dom[others_a[e.alive[others_a]]], return_counts=True)
            nodes_b = nodes_b[~np.isin(e.dom[nodes_b], doms[counts >= e.max_per_domain])]
        if nodes_b.size == 0:
            continue
        # The nodes of region r with the most room (where a smaller partner suffices).
        room = ((caps[nodes_b] - geo.load[nodes_b]) / e.unit[None, :]).min(axis=1)
        nodes_b = nodes_b[np.argsort(-room, kind="stable")[:_SWAP_NODES]]
        pos = np.concatenate([by_node[ptr[b] : ptr[b + 1]] for b in nodes_b.tolist()])
        expect = np.repeat(nodes_b, ptr[nodes_b + 1] - ptr[nodes_b])
        sb, jb = pos // width, pos % width
        b = geo.nodes[sb, jb].astype(np.int64)
        keep = (b == expect) & (sb != sa) & ~touched[sb]  # the index may be stale
        sb, jb, b = sb[keep], jb[keep], b[keep]
        d_a, d_b = s.demand[sa], s.demand[sb]
        fits = ((geo.load[a] - d_a + d_b) <= caps[a]).all(axis=1)
        fits &= ((geo.load[b] - d_b + d_a) <= caps[b]).all(axis=1)
        sb, jb, b = sb[fits], jb[fits], b[fits]
        if sb.size == 0:
            continue
        small = np.argsort(geo.size[sb], kind="stable")[:_SWAP_PARTNERS]
        sb, jb, b = sb[small], jb[small], b[small]
        # B's move b -> a: the rules of a single move into region q, then node a itself.
        gs_b, gv_b, ok_b, cost_b, _ = geo.tables(
            sb, s.clients[sb].toarray(), geo.region_ok[s.residency_class[sb]]
        )
        idx = np.arange(sb.size)
        valid = ok_b[idx, jb, q]
        rows_b = geo.nodes[sb].astype(np.int64)
        valid &= ~(rows_b == a).any(axis=1)
        other_b = np.where(np.arange(width)[None, :] == jb[:, None], -1, rows_b)
        live_b = (other_b >= 0) & c.alive[np.maximum(other_b, 0)]
        same_dom = live_b & (e.dom[np.maximum(other_b, 0)] == e.dom[a])
        valid &= same_dom.sum(axis=1) < e.max_per_domain
        if not valid.any():
            continue
        joint = best[k, r] + w_s * gs_b[idx, jb, q] + w_v * gv_b[idx, jb, q]
        bytes_ = geo.size[sa] + geo.size[sb]
        valid &= bytes_ <= bytes_left - spent
        if not valid.any():
            continue
        with np.errstate(divide="ignore"):
            score = np.where(valid, np.where(bytes_ > 0, joint / bytes_, np.inf), -np.inf)
        m = int(np.lexsort((geo.size[sb], -score))[0])
        pb, jpb, bn = int(sb[m]), int(jb[m]), int(b[m])
        g_a = (float(served[k, ja, r]), float(covered[k, ja, r]))
        g_b = (float(gs_b[m, jpb, q]), float(gv_b[m, jpb, q]))
        geo.apply(np.array([sa, pb]), np.array([ja, jpb]), np.array([bn, a]))
        for key, vals in (
            ("shard", [sa, pb]),
            ("slot", [ja, jpb]),
            ("source", [a, bn]),
            ("target", [bn, a]),
            ("size", [geo.size[sa], geo.size[pb]]),
            (
                "cost",
                [geo.size[sa] / 1e9 * cost[k, r], geo.size[pb] / 1e9 * cost_b[m, q]],
            ),
            ("served", [g_a[0], g_b[0]]),
            ("covered", [g_a[1], g_b[1]]),
        ):
            rec[key].append(np.asarray(vals))
        touched[[sa, pb]] = True
        made += 1
        spent += float(bytes_[m])
        gain_s += g_a[0] + g_b[0]
        gain_v += g_a[1] + g_b[1]
    return made, spent, gain_s, gain_v


def _lower_bound_bytes(
    gain_cap: np.ndarray, size: np.ndarray, need: float, *, tol: float
) -> float | None:
    """Fewest bytes whose shards can supply *need* of a gain, fractionally (a valid lower
    bound: a shard gains at most ``gain_cap`` and costs at least its size to move)."""
    if need <= tol:
        return 0.0
    keep = gain_cap > 0
    gain_cap, size = gain_cap[keep], size[keep]
    with np.errstate(divide="ignore"):
        ratio = np.where(size > 0, gain_cap / size, np.inf)
    order = np.argsort(-ratio, kind="stable")
    cum = np.cumsum(gain_cap[order])
    if cum.size == 0 or cum[-1] < need - tol:
        return None
    k = int(np.searchsorted(cum, need - tol))
    before = float(cum[k - 1]) if k else 0.0
    bytes_before = float(size[order[:k]].sum())
    part = (need - before) / gain_cap[order[k]] * size[order[k]]
    return bytes_before + max(float(part), 0.0)


def improve_latency(
    state: State,
    nodes: np.ndarray,
    /,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    load: np.ndarray | None = None,
    target_ms: float | None = None,
    compliance_goal: float | None = None,
    coverage_goal: float | None = None,
    slo_share: float = DEFAULT_SLO_SHARE,
    ceiling: float | None = None,
    weights: np.ndarray | None = None,
    time_limit_s: float = 5.0,
    seed: int = 0,
    before: Violations | None = None,
) -> tuple[np.ndarray, GeoStats]:
    """Move replicas toward their clients until the latency goals are met.

    Parameters
    ----------
    state : State
    nodes : ndarray of int, shape (S, W)
        The working placement (typically the engine's repaired target); not modified.
    max_moves, max_bytes : optional
        Budget of this phase (None: unlimited).
    load : ndarray, shape (N, R), optional
        :func:`~placement.constraints.node_load` of *nodes*, if at hand.
    target_ms : float, optional
        Latency target; default the policy's, else the runbook's 50 ms.
    compliance_goal, coverage_goal : float, optional
        Stop once compliance and coverage reach these shares (default
        ``policy.coverage_target``, the runbook's 80%; 1.0 asks for as much as the budget
        allows).
    slo_share : float
        Share of a shard's client demand that makes a region protected by the SLO.
    ceiling : float, optional
        Highest pressure a target node may reach; default the input's highest.
    weights : ndarray, shape (R,), optional
        Resource weights of the pressure (default 1 each).
    time_limit_s : float
    seed : int
        Breaks ties among equal moves and shifts the node layout of retries; the same
        input and seed give the same result.
    before : Violations, optional
        :func:`~placement.constraints.check` of *nodes*, if at hand.

    Returns
    -------
    new_nodes : ndarray of int32, shape (S, W)
        Moved replicas keep their slots.
    stats : GeoStats

    Raises
    ------
    AssertionError
        Internal error: the result breaks a hard constraint the input kept (never
        expected; the result is re-checked with :func:`placement.constraints.check`).

    Examples
    --------
    >>> import numpy as np, placement
    >>> from placement.latency import client_service
    >>> st = placement.synthetic_state(30, 400, seed=3)
    >>> new, stats = improve_latency(st, st.placement.nodes, compliance_goal=1.0)
    >>> client_service(st, new).compliance >= client_service(st).compliance
    True
    >>> placement.check(st, new).total
    0
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    c, pol = state.cluster, state.policy
    cur = np.array(nodes, dtype=np.int32, copy=True)
    before = check(state, cur) if before is None else before
    start_nodes = cur.copy()
    load = node_load(state, cur) if load is None else np.array(load, dtype=np.float64, copy=True)
    levels = latency_levels(pol, target_ms=target_ms)
    goal_c = pol.coverage_target if compliance_goal is None else float(compliance_goal)
    goal_v = pol.coverage_target if coverage_goal is None else float(coverage_goal)
    scale = pressure_scale(state, weights)
    pressure0 = (load * scale).max(axis=1)
    peak0 = float(pressure0[c.active].max(initial=0.0))
    ceiling = peak0 if ceiling is None else float(ceiling)

    svc = client_service(state, cur, target_ms=levels.target_ms)
    total = svc.total_demand
    summary: dict[str, Any] = {
        "latency_target_ms": levels.target_ms,
        "latency_max_ms": levels.max_ms,
        "compliance_goal": goal_c,
        "coverage_goal": goal_v,
        "compliance_before": svc.compliance,
        "coverage_before": svc.coverage,
        "mean_latency_ms_before": svc.mean_latency_ms,
        "achievable_compliance": achievable_compliance(state, service=svc),
        "slo_share": slo_share,
        "slo_violations_before": int(len(slo_violations(state, cur, share=slo_share, service=svc))),
        "pressure_ceiling": ceiling,
        "peak_pressure_before": peak0,
    }

    def result(stop: str, rec: dict[str, list[np.ndarray]]) -> GeoStats:
        arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rec.items()}
        after = client_service(state, cur, target_ms=levels.target_ms)
        summary.update(
            {
                "compliance_after": after.compliance,
                "coverage_after": after.coverage,
                "mean_latency_ms_after": after.mean_latency_ms,
                "slo_violations_after": int(
                    len(slo_violations(state, cur, share=slo_share, service=after))
                ),
                "peak_pressure_after": float((load * scale).max(axis=1)[c.active].max(initial=0.0)),
                "stop_reason": stop,
                "time_s": round(time.perf_counter() - t0, 4),
            }
        )
        return GeoStats(
            shard=arrays["shard"].astype(np.int64),
            slot=arrays["slot"].astype(np.int64),
            source=arrays["source"].astype(np.int64),
            target=arrays["target"].astype(np.int64),
            size_bytes=arrays["size"],
            cost=arrays["cost"],
            served_gain=arrays["served"],
            covered_gain=arrays["covered"],
            summary=summary,
        )

    rec: dict[str, list[np.ndarray]] = {
        k: [] for k in ("shard", "slot", "source", "target", "size", "cost", "served", "covered")
    }
    if not svc.has_latency:
        return cur, result("no latency model", rec)
    if total <= 0:
        return cur, result("no client demand", rec)

    served_sum = float(svc.weight[svc.served].sum())
    covered_sum = float(svc.weight[svc.local].sum())
    # A metric may not fall below where it started, nor below its goal once reached.
    floor_served = max(goal_c * total, served_sum)
    floor_covered = max(goal_v * total, covered_sum)
    tol = 1e-12 * total
    geo = _Geo(
        state,
        cur,
        load,
        target_ms=levels.target_ms,
        max_ms=levels.max_ms,
        slo_share=slo_share,
        scale=scale,
        seed=seed,
    )
    geo.eps = tol
    lacking = ~svc.served | ~svc.local
    geo.setup_candidates(np.unique(svc.entry_shard[lacking]))
    n_cand = geo.cand.size

    # Latency lower bound on bytes: per shard, the unserved demand residency could serve.
    servable_now = _servable(geo)
    size_cand = geo.size[geo.cand]

    moves_left = max_moves if max_moves is not None else 1 << 62
    bytes_left = float(max_bytes) if max_bytes is not None else math.inf
    tie_rank = geo.rng.permutation(n_cand)
    rounds = 0
    swaps = 0
    swap_phases = 0
    stop = "goal reached"
    weights_now = (-1.0, -1.0)
    scores: _Scores | None = None
    while True:
        need_s = goal_c * total - served_sum
        need_v = goal_v * total - covered_sum
        geo.weight_served = 1.0 if need_s > tol else 0.0
        geo.weight_covered = 1.0 if need_v > tol else 0.0
        if not (geo.weight_served or geo.weight_covered):
            stop = "goal reached"
            break
        if time.perf_counter() > deadline:
            stop = "time limit"
            break
        if moves_left <= 0 or bytes_left <= 0:
            stop = "budget"
            break
        if scores is None or weights_now != (geo.weight_served, geo.weight_covered):
            weights_now = (geo.weight_served, geo.weight_covered)
            scores = geo.score(np.arange(n_cand))
        rounds += 1
        pos = np.flatnonzero(scores.benefit > tol)
        if pos.size == 0:
            # No single move has room left: exchange replicas between regions instead.
            made = 0
            if swap_phases < _SWAP_PHASES:
                swap_phases += 1
                made, spent, gain_s, gain_v = _swap_phase(
                    geo, ceiling, (need_s, need_v), moves_left, bytes_left, deadline, rec
                )
                served_sum += gain_s
                covered_sum += gain_v
                moves_left -= 2 * made
                bytes_left -= spent
                swaps += made
            if made:
                scores = None  # rows changed: score every candidate again
                continue
            stop = "no improving move"
            break
        # Moves larger than the bytes left can never be made; smaller ones still can.
        pos = pos[size_cand[pos] <= bytes_left]
        if pos.size == 0:
            stop = "budget"
            break
        size = size_cand[pos]
        ben = scores.benefit[pos]
        with np.errstate(divide="ignore"):
            ratio = np.where(size > 0, ben / size, np.inf)
        bucket = np.where(
            np.isfinite(ratio), np.floor(np.log(np.maximum(ratio, 1e-300)) / _RATIO_STEP), 1e18
        )
        order = np.lexsort((tie_rank[pos], -ratio, scores.cost_per_gb[pos], -bucket))
        pos, size = pos[order], size[order]
        gs = scores.served[pos] * geo.weight_served
        gv = scores.covered[pos] * geo.weight_covered
        cum_s, cum_v = np.cumsum(gs), np.cumsum(gv)
        done = (cum_s >= need_s - tol) | (geo.weight_served == 0)
        done &= (cum_v >= need_v - tol) | (geo.weight_covered == 0)
        take = np.ones(pos.size, dtype=bool)
        if done.any():
            cross = int(np.argmax(done))
            take[cross:] = False
            left = (
                need_s - (cum_s[cross - 1] if cross else 0.0),
                need_v - (cum_v[cross - 1] if cross else 0.0),
            )
            take[cross + _finish(gs[cross:], gv[cross:], size[cross:], left, tol)] = True
        # The budget: a prefix of the ranked moves (moves and bytes).
        within = (np.cumsum(np.where(take, size, 0.0)) <= bytes_left) & (
            np.cumsum(take) <= moves_left
        )
        take &= within
        if not take.any():
            stop = "budget"
            break
        sel = pos[take]
        shard = geo.cand[sel]
        slot = scores.slot[sel].astype(np.int64)
        region = scores.region[sel]
        # Each region takes its best-ranked moves, up to half its room, in one batch
        # layout; the rest (where room is scarce) one at a time in rank order, so the
        # best moves get the scarce room, at most _SEQUENTIAL per round (the others wait).
        easy = _within_room(geo, ceiling, region, geo.size[shard], _BATCH_ROOM_SHARE)
        target = np.full(shard.size, -1, dtype=np.int64)
        if easy.any():
            geo.arrays.res_class[shard[easy]] = region[easy]
            target[easy] = bulk.place(
                geo.arrays,
                shard[easy],
                slot[easy],
                levels=[ceiling] * _PLACE_ROUNDS,
                rng=geo.rng,
            )
        # Defensive: the kernel chose within the forced region (its residency class).
        target[c.region_of[np.maximum(target, 0)] != region] = -1
        source = geo.apply(shard, slot, target)
        miss = np.flatnonzero(target < 0)
        waiting = miss[_SEQUENTIAL:]
        miss = miss[:_SEQUENTIAL]
        if miss.size:
            source[miss] = geo.nodes[shard[miss], slot[miss]]
            target[miss] = geo.place_each(shard[miss], slot[miss], region[miss], ceiling)
        tried = np.ones(shard.size, dtype=bool)
        tried[waiting] = False
        ok = target >= 0
        acc = sel[ok]
        if acc.size:
            s_acc, j_acc, t_acc = shard[ok], slot[ok], target[ok]
            moved_bytes = geo.size[s_acc]
            rec["shard"].append(s_acc)
            rec["slot"].append(j_acc)
            rec["source"].append(source[ok])
            rec["target"].append(t_acc)
            rec["size"].append(moved_bytes)
            rec["cost"].append(moved_bytes / 1e9 * scores.cost_per_gb[acc])
            rec["served"].append(scores.served[acc])
            rec["covered"].append(scores.covered[acc])
            served_sum += float(scores.served[acc].sum())
            covered_sum += float(scores.covered[acc].sum())
            moves_left -= int(acc.size)
            bytes_left -= float(moved_bytes.sum())
        failed = sel[~ok & tried]
        geo.blocked[failed, region[~ok & tried]] = True
        redo = np.concatenate([acc, failed])
        fresh = geo.score(redo)
        for name in ("slot", "region", "benefit", "served", "covered", "cost_per_gb"):
            getattr(scores, name)[redo] = getattr(fresh, name)

    rec, n_pruned = _prune(
        state,
        geo,
        cur,
        rec,
        served_sum - floor_served,
        covered_sum - floor_covered,
        ceiling,
        before,
    )

    served_gain_total = float(np.concatenate(rec["served"]).sum()) if rec["served"] else 0.0
    covered_gain_total = float(np.concatenate(rec["covered"]).sum()) if rec["covered"] else 0.0
    gain_cap_s = (geo.dense * (servable_now & ~_served_matrix(state, geo, start_nodes))).sum(1)
    covered_now = _covered_matrix(state, geo, start_nodes)
    gain_cap_v = (geo.dense * (geo.allowed & ~covered_now)).sum(axis=1)
    bounds = [
        _lower_bound_bytes(gain_cap_s, size_cand, served_gain_total, tol=tol),
        _lower_bound_bytes(gain_cap_v, size_cand, covered_gain_total, tol=tol),
    ]
    summary["lower_bound_bytes"] = max((b for b in bounds if b is not None), default=0.0)
    summary["rounds"] = rounds
    summary["swaps"] = swaps
    summary["candidates"] = int(n_cand)
    summary["pruned_moves"] = n_pruned

    _verify(state, cur, before)
    return cur, result(stop, rec)


def _finish(
    gain_s: np.ndarray,
    gain_v: np.ndarray,
    size: np.ndarray,
    need: tuple[float, float],
    tol: float,
) -> np.ndarray:
    """The cheapest way, greedily, to cover what is left of the goals with the ranked
    moves after the prefix (the tail of a min-cost covering knapsack).

    In rank order: a move that covers the rest by itself is a candidate finisher (the
    moves taken so far plus it), and is skipped in the hope of smaller ones; any other
    move is taken. The cheapest candidate wins. Returns indices into the given moves.
    """
    left_s, left_v = need
    taken: list[int] = []
    spent = 0.0
    best_cost, best = math.inf, np.zeros(0, dtype=np.int64)
    for k in range(size.size):
        if spent >= best_cost:
            break
        covers = gain_s[k] >= left_s - tol and gain_v[k] >= left_v - tol
        if covers:
            if spent + size[k] < best_cost:
                best_cost = spent + float(size[k])
                best = np.array([*taken, k], dtype=np.int64)
            continue
        taken.append(k)
        spent += float(size[k])
        left_s -= gain_s[k]
        left_v -= gain_v[k]
    return best


def _region_room(geo: _Geo, ceiling: float) -> np.ndarray:
    """Free size-resource room of each region's active nodes up to the ceiling, (regions,)."""
    e = geo.arrays
    j = geo.state.cluster.size_index
    caps = bulk.level_caps(e, ceiling)[:, j]
    room = np.where(e.active, np.maximum(caps - e.load[:, j], 0.0), 0.0)
    return np.bincount(e.region, weights=room, minlength=geo.near.shape[0])


def _within_room(
    geo: _Geo, ceiling: float, region: np.ndarray, size: np.ndarray, share: float
) -> np.ndarray:
    """Moves (in rank order) whose bytes, summed per target region in that order, stay
    within *share* of the region's free size-resource room up to the ceiling."""
    per_region = _region_room(geo, ceiling)
    order = np.argsort(region, kind="stable")
    cum = bulk._segment_cumsum(size[order], region[order])
    fits = np.empty(size.size, dtype=bool)
    fits[order] = cum <= share * per_region[region[order]]
    return fits


def _servable(geo: _Geo) -> np.ndarray:
    """(K, client regions): some allowed region with active nodes is within the target."""
    return (geo.allowed.astype(np.int64) @ geo.near.astype(np.int64)) > 0


def _region_matrix(state: State, geo: _Geo, nodes: np.ndarray) -> np.ndarray:
    """(K, regions): the candidate shard has a live replica in the region."""
    c = state.cluster
    rows = nodes[geo.cand].astype(np.int64)
    present = rows >= 0
    safe = np.maximum(rows, 0)
    live = present & c.alive[safe]
    has = np.zeros(geo.dense.shape, dtype=bool)
    rr, cc = np.nonzero(live)
    has[rr, c.region_of[safe[rr, cc]]] = True
    return has


def _served_matrix(state: State, geo: _Geo, nodes: np.ndarray) -> np.ndarray:
    has = _region_matrix(state, geo, nodes)
    return (has.astype(np.int64) @ geo.near.astype(np.int64)) > 0


def _covered_matrix(state: State, geo: _Geo, nodes: np.ndarray) -> np.ndarray:
    return _region_matrix(state, geo, nodes)


def _prune(
    state: State,
    geo: _Geo,
    cur: np.ndarray,
    rec: dict[str, list[np.ndarray]],
    surplus_served: float,
    surplus_covered: float,
    ceiling: float,
    before: Violations,
) -> tuple[dict[str, list[np.ndarray]], int]:
    """Undo moves the goals do not need (largest first); the kept moves and how many
    were undone.

    Only shards this phase moved once are considered, and only when their starting row
    broke no placement rule, so restoring it is valid; the source node must still have
    room under headroom and the ceiling. Gains are per shard, so undoing one move takes
    exactly its gain away.
    """
    if not rec["shard"] or (surplus_served <= 0 and surplus_covered <= 0):
        return rec, 0
    shard = np.concatenate(rec["shard"])
    served = np.concatenate(rec["served"])
    covered = np.concatenate(rec["covered"])
    size = np.concatenate(rec["size"])
    once = np.bincount(shard, minlength=state.shards.n_shards)[shard] == 1
    bad = np.zeros(state.shards.n_shards, dtype=bool)
    for kind in ("failed", "draining", "residency"):
        pairs = getattr(before, kind)
        if len(pairs):
            bad[pairs[:, 0]] = True
    for pairs in (before.spread, before.regions):
        if len(pairs):
            bad[pairs[:, 0]] = True
    tol = geo.eps
    cand = np.flatnonzero(
        once & ~bad[shard] & (served <= surplus_served + tol) & (covered <= surplus_covered + tol)
    )
    if cand.size == 0:
        return rec, 0
    cand = cand[np.argsort(-size[cand], kind="stable")]
    caps = bulk.level_caps(geo.arrays, ceiling)
    slot = np.concatenate(rec["slot"])
    source = np.concatenate(rec["source"])
    target = np.concatenate(rec["target"])
    demand = state.shards.demand
    undone = np.zeros(shard.size, dtype=bool)
    for m in cand.tolist():
        if served[m] > surplus_served + tol or covered[m] > surplus_covered + tol:
            continue
        a, b, sh = int(source[m]), int(target[m]), int(shard[m])
        if not (geo.load[a] + demand[sh] <= caps[a]).all():
            continue
        geo.load[a] += demand[sh]
        geo.load[b] -= demand[sh]
        cur[sh, slot[m]] = a
        surplus_served -= served[m]
        surplus_covered -= covered[m]
        undone[m] = True
    keep = ~undone
    return {k: [np.concatenate(v)[keep]] for k, v in rec.items()}, int(undone.sum())


def _verify(state: State, new: np.ndarray, before: Violations) -> None:
    """The phase must never add a violation of any kind (constraints.check is the truth)."""
    c0, c1 = before.counts(), check(state, new).counts()
    worse = [k for k in KINDS if c1[k] > c0[k]]
    if worse:  # pragma: no cover - every move is checked before it is made
        raise AssertionError(f"internal error: the geo phase added violations: {worse}")


#: Largest instance (shards x nodes) the exact geo model polishes the fast phase on.
EXACT_POLISH_PAIRS = 20_000


def polish_exact(
    state: State,
    start: np.ndarray,
    fast: np.ndarray,
    *,
    target_ms: float | None = None,
    slo_share: float = DEFAULT_SLO_SHARE,
    ceiling: float | None = None,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    time_limit_s: float = 5.0,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """On a small instance, the fewest-bytes placement that serves clients as well as *fast*.

    The fast phase tries single moves and pairwise swaps; on a tight small cluster the
    optimum may chain moves that free room for each other (up to 2.2x fewer bytes on
    freshly rebalanced instances of 8-15 nodes). Where exactness is cheap (at most
    :data:`EXACT_POLISH_PAIRS` shard-node pairs), the CP-SAT geo model, hinted with
    *fast*, looks for the same served and covered demand with fewer bytes from *start*;
    only a proven optimum replaces *fast* (one worker: reproducible). Returns the
    placement and what happened.

    >>> import placement
    >>> st = placement.synthetic_state(15, 40, seed=1)
    >>> out, info = polish_exact(st, st.placement.nodes, st.placement.nodes)
    >>> info["status"], bool((out == st.placement.nodes).all())
    ('OPTIMAL', True)
    """
    from placement.solvers.geo_exact import integer_weights, solve_geo_exact

    pairs = state.shards.n_shards * state.cluster.n_nodes
    if pairs > EXACT_POLISH_PAIRS:
        return fast, {"status": "skipped", "reason": f"{pairs} shard-node pairs"}
    svc = client_service(state, fast, target_ms=target_ms)
    weight, _ = integer_weights(state)
    size = state.shards.demand[:, state.cluster.size_index]
    fast_bytes = float(size[np.nonzero(fast != start)[0]].sum())
    res = solve_geo_exact(
        state,
        start,
        served_goal=int(weight[svc.served].sum()),
        covered_goal=int(weight[svc.local].sum()),
        target_ms=target_ms,
        slo_share=slo_share,
        ceiling=ceiling,
        max_moves=max_moves,
        max_bytes=max_bytes,
        hint=fast,
        time_limit_s=time_limit_s,
        seed=seed,
    )
    info: dict[str, Any] = {
        "status": res.status,
        "fast_bytes": fast_bytes,
        "exact_bytes": res.bytes_moved,
        "time_s": round(res.time_s, 3),
    }
    better = (
        res.status == "OPTIMAL"
        and res.nodes is not None
        and res.bytes_moved is not None
        and res.bytes_moved < fast_bytes * (1 - 1e-9)
        and not check(state, res.nodes)
    )
    info["used"] = bool(better)
    if better and res.nodes is not None:
        return res.nodes, info
    return fast, info
