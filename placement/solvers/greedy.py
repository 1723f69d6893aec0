"""The fast engine: prioritized repair, then balancing, in bulk first and then one move at a time.

Private kernel: :func:`placement.planner.plan` validates the inputs and re-checks the
result; this module trusts its arguments.

How it works
------------
Nodes are kept in one lazy min-heap per failure domain (at the spread level), keyed by
*pressure*: the node's highest utilization relative to the cluster's final mean,
``max_r w_r * load_r / capacity_r / mean_r``. Choosing a target for a replica is then an
``argmin`` over the few domain tops that the shard may use (allowed region, spread, min
regions), followed by a capacity check; it costs microseconds, not a scan of every node.

The phases (``solve_greedy``; docs/engine.md has the measurements):

1. **Bulk repair** (:func:`placement.solvers.bulk.place`): replicas on failed and
   draining nodes, missing ones and those outside their residency, fewest live replicas
   first, placed in vectorized rounds up to a common water level; copies stay in a
   region that already holds a live replica when it has room (no transfer cost).
2. **Repair**, one replica at a time, for what the bulk rounds left and for spread,
   min-regions and capacity violations: each goes to the least-pressured feasible node.
3. **Bulk balance**: every node above ``1 + target`` sheds its excess with the fewest
   bytes (:func:`placement.solvers.bulk.shed`), placed below the goal; then batched
   water-filling steps from the top.
4. **Balance**, one move at a time: while the hottest node is above the goal and the
   budget lasts, move one of its replicas (the largest that does not overshoot the
   water level) to the least-pressured feasible node, if that lowers the pair's peak by
   at least ``min_gain`` of what its bytes could (no churn for nothing). When the policy
   sets a latency target, balance moves only go where the shard's clients stay as well
   served (:func:`placement.latency.regions_keeping_service`).
5. **Prune**: undo balance moves the final peak does not need; then **shortcut**
   relay nodes (a replica in, another out: send the first straight on, keep the
   second) where the peak allows.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement._arrays import stable_order
from placement.balance_lp import EXACT_GROUPS_UP_TO, KnapsackCurves, solve_balance_lp
from placement.constraints import Violations, check, node_load, recheck
from placement.latency import regions_keeping_service
from placement.model import EMPTY, State
from placement.plan import REASONS, transfer_cost
from placement.solvers import bulk

__all__ = ["Budget", "GreedyResult", "solve_greedy"]

REASON = {name: i for i, name in enumerate(REASONS)}

#: Shedding thresholds of the first balance round, above the goal in units of the goal's
#: imbalance (at least 1 point): the replicas that bring their nodes below each
#: threshold are placed before those needed only for the next (see
#: :meth:`_Engine._banded_round`).
SHED_BANDS = (2.0, 1.0, 0.75, 0.5, 0.375, 0.25, 0.125, 0.0)
#: A band that leaves more than this share of its bytes unplaced ends the banded round:
#: the rest of the cluster cannot go lower without trades.
BAND_STOP_SHARE = 0.1
#: Placement rounds per band: receivers up to the goal in the regions that hold a live
#: replica, then up to the band's threshold in those or the ones reached by the
#: cheapest link. (Crossing anywhere in those last rounds: tier L skew 3x the transfer
#: cost; home regions only: tier L add 10% ended 0.3 point higher.)
BAND_ROUNDS = (8, 2)
#: Shed in bands only when the hot nodes' excess, summed, exceeds this share of the
#: room the other active nodes have, in some resource (:meth:`_Engine._crowded`).
#: Below it one batch at the goal places almost everything, and bands only reorder
#: it: 20 nodes x 2,000 shards with a 5% budget (ratios 0.16-0.72) moved 1.3-3.8%
#: more bytes banded; tiers S, M and L skew and L add (0.78-0.93) 4-6% fewer.
CROWDED_ABOVE = 0.75

#: The trade round aims this far (in units of the mean) below the goal, so that what
#: whole replicas leave over still lands within it. Measured at tiers S and M (add 10%,
#: capacity change): 0 ended at 2.1-2.2%, 0.001 at 2.0-2.06%, 0.002 at 2.0% in all four
#: for 2-4% more bytes than 0.
TRADE_MARGIN = 0.002
#: Arrivals and departures of a relay node that :meth:`_Engine.shortcut` pairs up (the
#: largest few of each).
SHORTCUT_TRIES = 8
#: Candidates per moved replica that :meth:`_Engine.lighten` tries, of each kind.
LIGHTEN_TRIES = 4
#: Most changed shards for which :meth:`_Engine.tidy` runs :meth:`_Engine.lighten`
#: (its time grows with them: 0.5 s at tier L skew, 90,000 moves, for 1% of the bytes;
#: 0.9 s at tier L add 10%, 240,000 moves, for 0.3%, too dear for the 5 s target).
LIGHTEN_MOVES_UP_TO = 150_000


@dataclass(frozen=True)
class Budget:
    """Disruption budget; None means unlimited."""

    max_moves: int | None = None
    max_bytes: float | None = None
    max_moves_per_node: int | None = None
    max_moves_per_group: int | None = None


@dataclass
class GreedyResult:
    nodes: np.ndarray
    shard: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    reason: list[int] = field(default_factory=list)
    slot: list[int] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


class _Engine:
    def __init__(
        self,
        state: State,
        budget: Budget,
        weights: np.ndarray,
        deadline: float,
        progress: Callable[[dict[str, Any]], bool | None] | None,
        seed: int = 0,
    ) -> None:
        c, s = state.cluster, state.shards
        self.rng = np.random.default_rng(seed)
        self.state = state
        self.nodes = state.placement.nodes.copy()
        self.pinned = state.placement.pinned
        self.demand = s.demand
        self.size = s.demand[:, c.size_index]
        self.load = node_load(state, self.nodes)
        self.active = c.active
        self.alive = c.alive
        self.limit = c.capacity * state.headroom[None, :]
        level = state.spread_level_index
        self.dom = c.domain_of[:, level].astype(np.int64)
        self.n_dom = len(c.domain_names[level])
        self.region = c.region_of.astype(np.int64)
        self.dom_region = np.zeros(self.n_dom, dtype=np.int64)
        self.dom_region[self.dom] = self.region
        self.max_per_domain = state.policy.max_per_domain
        self.required_regions = np.minimum(state.policy.min_regions, s.replicas)
        # Domains each residency class may use, shape (classes, D).
        self.allowed_dom = s.allowed_regions[:, self.dom_region]
        self.res_class = s.residency_class
        self.group = s.group
        self.budget = budget
        self.deadline = deadline
        self.progress = progress
        self.moves_left = budget.max_moves if budget.max_moves is not None else 1 << 62
        self.bytes_left = budget.max_bytes if budget.max_bytes is not None else np.inf
        self.node_moves = np.zeros(c.n_nodes, dtype=np.int64)
        self.group_moves = np.zeros(max(len(s.group_names), 1), dtype=np.int64)

        # Final mean utilization per resource: every shard fully replicated on active nodes.
        total = (s.demand * s.replicas[:, None]).sum(axis=0)
        active_cap = c.capacity[self.active].sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(active_cap > 0, total / active_cap, 0.0)
            cap_scaled = np.where(
                (c.capacity > 0) & (mean[None, :] > 0),
                weights[None, :] / (c.capacity * mean[None, :]),
                0.0,
            )
        self.mean = mean
        # Interval unit of each resource in bulk placement: an average active node's capacity.
        n_active = max(int(self.active.sum()), 1)
        self.unit = np.where(active_cap > 0, active_cap / n_active, 1.0)
        self.size_index = c.size_index
        #: Balance moves keep clients as well served when the policy sets a target.
        self.latency_target_ms = (
            float(state.policy.latency_target_ms)
            if state.policy.latency_target_ms is not None and s.clients.nnz
            else None
        )
        #: Failed hottest nodes tolerated in a row before balancing stops (measured at
        #: tier M: 32 lowers the peak by 0.1 point more than 8, at 1.5x the time).
        self.patience = 8
        #: Ranks of the candidate replicas a hot node tries, one at a time.
        self.pick_ranks = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
        #: Batch water-filling steps after the bulk balance (each halves the excess).
        self.descend_steps = 4
        #: Above this many nodes, finding their replicas scans the matrix.
        self.scan_above = max(64, c.n_nodes // 8)
        self.scale = cap_scaled  # pressure of node n = max_r load[n, r] * scale[n, r]
        self.pressure = (self.load * self.scale).max(axis=1)

        act_nodes = np.flatnonzero(self.active)
        by_dom = act_nodes[np.argsort(self.dom[act_nodes], kind="stable")]
        cuts = np.searchsorted(self.dom[by_dom], np.arange(self.n_dom + 1))
        self.members = [by_dom[cuts[d] : cuts[d + 1]] for d in range(self.n_dom)]
        self.heaps: list[list[tuple[float, int]]] = []
        self.dom_top = np.full(self.n_dom, np.inf)
        self._rebuild_heaps()
        # Replicas per node: a CSR of the initial placement (built on first use: a
        # drain or a failure repaired in bulk never needs it) plus the slots moved in.
        self._csr: tuple[np.ndarray, np.ndarray] | None = None
        self.arrivals: list[list[int]] = [[] for _ in range(c.n_nodes)]
        self.out = GreedyResult(nodes=self.nodes)
        self.bytes_moved = 0.0
        self.unplaced: list[int] = []
        self._before_check: Violations | None = None
        self._bad: np.ndarray | None = None  # see _bad_rows
        #: Seconds spent solving the balance LP of the trade round (0: no trade round).
        self.trade_lp_s = 0.0
        #: Share of the LP's sent bytes that are trades (0: no trade round was tried).
        self.trade_share = 0.0
        #: Whether the trade round moved replicas along the LP's flows.
        self.traded = False
        self.active_count = int(self.active.sum())

    # -- heaps -------------------------------------------------------------------------
    def _rebuild_heaps(self) -> None:
        """Recompute every pressure and heap (after bulk moves; cheap: one entry a node)."""
        self.pressure = (self.load * self.scale).max(axis=1)
        pressure = self.pressure.tolist()
        self.heaps = []
        for d in range(self.n_dom):
            h = [(pressure[n], n) for n in self.members[d].tolist()]
            heapq.heapify(h)
            self.heaps.append(h)
            self.dom_top[d] = h[0][0] if h else np.inf

    def _refresh_top(self, d: int) -> None:
        h = self.heaps[d]
        while h and h[0][0] != self.pressure[h[0][1]]:
            heapq.heappop(h)
        self.dom_top[d] = h[0][0] if h else np.inf

    def _touch(self, n: int) -> None:
        self.pressure[n] = float((self.load[n] * self.scale[n]).max())
        if self.active[n]:
            d = int(self.dom[n])
            heapq.heappush(self.heaps[d], (float(self.pressure[n]), n))
            self._refresh_top(d)

    # -- choosing a target -------------------------------------------------------------
    def _pick_target(
        self, s: int, slot: int, ceiling: float = np.inf, keep_service: bool = False
    ) -> int:
        """Least-pressured feasible node for a replica of shard *s* in *slot*, or -1.

        *keep_service*: only regions where the shard's clients stay as well served."""
        row = self.nodes[s]
        others = [int(x) for j, x in enumerate(row) if j != slot and x >= 0 and self.alive[x]]
        mask = self.allowed_dom[self.res_class[s]].copy()
        if keep_service:
            ok = self._service_regions(np.array([s]), np.array([slot]))
            if ok is not None:
                mask &= ok[0][self.dom_region]
        if others:
            od = self.dom[others]
            if self.max_per_domain == 1:
                mask[od] = False
            else:
                doms, counts = np.unique(od, return_counts=True)
                mask[doms[counts >= self.max_per_domain]] = False
            regions = set(self.region[others].tolist())
            if len(regions) < self.required_regions[s]:
                for g in regions:  # (a handful: faster than np.isin)
                    mask &= self.dom_region != g
        if not mask.any():
            return -1
        tops = np.where(mask, self.dom_top, np.inf)
        demand = self.demand[s]
        for _ in range(min(4, int(mask.sum()))):
            d = int(np.argmin(tops))
            if not np.isfinite(tops[d]) or tops[d] >= ceiling:
                return -1
            top = self.heaps[d][0][1]
            if (
                top not in others
                and (self.load[top] + demand <= self.limit[top]).all()
                and self._node_ok(top)
            ):
                return top
            # The domain's least-pressured node does not fit: scan the domain.
            cand = self.members[d]
            fits = ((self.load[cand] + demand) <= self.limit[cand]).all(axis=1)
            for x in row[row >= 0].tolist():  # (a handful: faster than np.isin)
                fits &= cand != x
            if self.budget.max_moves_per_node is not None:
                fits &= self.node_moves[cand] < self.budget.max_moves_per_node
            if fits.any():
                p = np.where(fits, self.pressure[cand], np.inf)
                best = int(cand[int(np.argmin(p))])
                if p.min() < ceiling:
                    return best
            tops[d] = np.inf
        return -1

    def _service_regions(self, shard: np.ndarray, slot: np.ndarray) -> np.ndarray | None:
        """Regions a balance move may take each replica to without serving its clients
        worse (None when the policy sets no latency target or no shard has clients)."""
        if self.latency_target_ms is None:
            return None
        ok = regions_keeping_service(self.state, self.nodes, shard, slot, self.latency_target_ms)
        # Each replica is judged with the shard's other replicas where they are now. In a
        # batch, a second replica of the same shard could leave the region the first one
        # counted on (two region-1 copies each "still served by the other": seen by
        # Hypothesis, compliance 0.6911 -> 0.6902). So only a shard's first replica in the
        # batch may change region; the others stay in theirs, which keeps its judgement.
        if shard.size > 1:
            _, first = np.unique(shard, return_index=True)
            later = np.ones(shard.size, dtype=bool)
            later[first] = False
            if later.any():
                region = self.state.cluster.region_of[self.nodes[shard[later], slot[later]]]
                ok[later] = False
                ok[np.flatnonzero(later), region] = True
        return ok

    def _node_ok(self, n: int) -> bool:
        lim = self.budget.max_moves_per_node
        return lim is None or self.node_moves[n] < lim

    def _budget_ok(self, s: int, source: int) -> bool:
        b = self.budget
        if self.moves_left <= 0 or self.size[s] > self.bytes_left:
            return False
        if (
            b.max_moves_per_node is not None
            and source >= 0
            and self.node_moves[source] >= b.max_moves_per_node
        ):
            return False
        if b.max_moves_per_group is not None and self.group[s] >= 0:
            if self.group_moves[self.group[s]] >= b.max_moves_per_group:
                return False
        return True

    def _move(self, s: int, slot: int, target: int, reason: str) -> None:
        source = int(self.nodes[s, slot])
        if source >= 0:
            self.load[source] -= self.demand[s]
            self.node_moves[source] += 1
            self._touch(source)
        self.nodes[s, slot] = target
        self.arrivals[target].append(s * self.nodes.shape[1] + slot)
        self.load[target] += self.demand[s]
        self.node_moves[target] += 1
        self._touch(target)
        self.moves_left -= 1
        self.bytes_left -= self.size[s]
        self.bytes_moved += float(self.size[s])
        if self.group[s] >= 0:
            self.group_moves[self.group[s]] += 1
        out = self.out
        out.shard.append(s)
        out.source.append(source)
        out.target.append(target)
        out.reason.append(REASON[reason])
        out.slot.append(slot)

    # -- bulk (vectorized) moves -------------------------------------------------------
    @property
    def bulk_ok(self) -> bool:
        """Bulk moves keep per-node and per-group limits only one move at a time."""
        b = self.budget
        return b.max_moves_per_node is None and b.max_moves_per_group is None

    def _budget_prefix(self, shard: np.ndarray) -> np.ndarray:
        """Mask of the items, in order, that fit the moves and bytes left (a prefix)."""
        fits = np.arange(1, shard.size + 1) <= self.moves_left
        if np.isfinite(self.bytes_left):
            fits &= np.cumsum(self.size[shard]) <= self.bytes_left
        return fits

    def _apply_bulk(
        self, shard: np.ndarray, slot: np.ndarray, target: np.ndarray, reason: str
    ) -> None:
        """Apply placed bulk moves (target >= 0) and keep every engine structure in step."""
        keep = target >= 0
        shard, slot, target = shard[keep], slot[keep], target[keep]
        if shard.size == 0:
            return
        source = self.nodes[shard, slot].astype(np.int64)
        dem = self.demand[shard]
        has = source >= 0
        np.add.at(self.load, source[has], -dem[has])
        np.add.at(self.load, target, dem)
        np.add.at(self.node_moves, source[has], 1)
        np.add.at(self.node_moves, target, 1)
        grp = self.group[shard]
        np.add.at(self.group_moves, grp[grp >= 0], 1)
        self.nodes[shard, slot] = target
        self.moves_left -= int(shard.size)
        moved = float(self.size[shard].sum())
        self.bytes_left -= moved
        self.bytes_moved += moved
        w = self.nodes.shape[1]
        flat = (shard * w + slot).tolist()
        for f, n in zip(flat, target.tolist(), strict=True):
            self.arrivals[n].append(f)
        out = self.out
        out.shard.extend(shard.tolist())
        out.source.extend(source.tolist())
        out.target.extend(target.tolist())
        out.reason.extend([REASON[reason]] * int(shard.size))
        out.slot.extend(slot.tolist())
        self._rebuild_heaps()

    def _fill_level(self, amount: float) -> float:
        """Lowest pressure level at which active nodes have *amount* of room (interval units)."""
        lo, hi = 0.0, max(float(self.pressure[self.active].max(initial=0.0)), 1.0) * 4
        for _ in range(40):
            mid = (lo + hi) / 2
            room = np.maximum(
                ((bulk.level_caps(self, mid) - self.load) / self.unit[None, :]).min(axis=1), 0.0
            )
            if float(room[self.active].sum()) >= amount:
                hi = mid
            else:
                lo = mid
        return hi

    @property
    def before_check(self) -> Violations:
        """Violations of the input placement (computed once; the planner may pass them)."""
        if self._before_check is None:
            self._before_check = check(self.state, self.state.placement.nodes)
        return self._before_check

    def bulk_repair(self, goal: float = np.inf) -> bool:
        """Re-home, in vectorized rounds, the replicas that must move wholesale.

        Replicas on failed and draining nodes, missing replicas and replicas outside
        their residency, fewest live replicas first. Targets fill the coolest nodes up to
        a common level (water-filling), raised round by round when room runs out; what
        is left goes through the one-at-a-time repair. Copies stay in a region that
        holds a live replica of their shard (no transfer cost) as long as that region
        has room up to the balance *goal* (``1 + target_imbalance``).
        """
        st = self.state
        nodes = self.nodes
        v = self.before_check  # nothing has moved yet
        parts: list[tuple[np.ndarray, np.ndarray, str]] = []

        def slot_of(pairs: np.ndarray, reason: str, keep_pinned: bool) -> None:
            if len(pairs) == 0:
                return
            s, n = pairs[:, 0].astype(np.int64), pairs[:, 1]
            j = np.argmax(nodes[s] == n[:, None], axis=1).astype(np.int64)
            if keep_pinned:
                ok = ~self.pinned[s, j]
                s, j = s[ok], j[ok]
            parts.append((s, j, reason))

        slot_of(v.failed, "failed-node", keep_pinned=False)
        count = (nodes >= 0).sum(axis=1)
        missing = st.shards.replicas - count
        if (missing > 0).any():
            # The first `missing` empty slots of each under-filled shard.
            empty_rank = np.cumsum(nodes == EMPTY, axis=1)
            want = (nodes == EMPTY) & (empty_rank <= missing[:, None])
            s, j = np.nonzero(want)
            parts.append((s.astype(np.int64), j.astype(np.int64), "restore-replication"))
        slot_of(v.draining, "drain", keep_pinned=True)
        slot_of(v.residency, "residency", keep_pinned=True)
        # Spread, regions and capacity are repaired one at a time (few, and each needs
        # the shard's or the node's own choice).
        left = bool(len(v.spread) or len(v.regions) or len(v.capacity))
        if not parts:
            return left
        shard = np.concatenate([p[0] for p in parts])
        slot = np.concatenate([p[1] for p in parts])
        reason = np.concatenate([np.full(p[0].size, REASON[p[2]]) for p in parts])
        # Fewest live replicas first, then reason order, then shard index.
        order = np.lexsort((shard, reason, v.live_count[shard]))
        shard, slot, reason = shard[order], slot[order], reason[order]
        fits = self._budget_prefix(shard)
        left |= not fits.all()
        shard, slot, reason = shard[fits], slot[fits], reason[fits]
        if shard.size == 0:
            return left
        amount = float((self.demand[shard] / self.unit[None, :]).max(axis=1).sum())
        level = self._fill_level(amount * 1.25)
        # Home region first (free copies), at the water level, then anywhere, rising.
        # (Home rounds fill up to the mean at least: a copy that stays in its region on
        # a node below average is worth more than one sent across regions to the
        # very coolest node.)
        home_level = max(level, 1.0)
        # Then home regions up to the balance goal: within the goal, balance has no say
        # and a copy across regions only costs. Then, still up to the goal, the regions
        # a copy reaches most cheaply. (20 nodes x 2,000 shards with a 10x goal, transfer
        # cost: drain 8.2 -> 0, fail a node 38.8 -> 10.2, fail a zone 51.1 -> 14.3;
        # exact mode's optima 0, 10.2 and 13.1.)
        home_goal = max(home_level, goal)
        levels = (
            [home_level] * 3
            + [home_goal] * 5
            + [level, level * 1.05, level * 1.15, level * 1.3]
            + [np.inf] * 4
        )
        target = bulk.place(
            self,
            shard,
            slot,
            levels=levels,
            rng=self.rng,
            home_rounds=5,
            # (Three: a node holding the shard still takes its share of the layout, and
            # the items laid on it retry; with two, one of eight copies in the test
            # below crossed to the dear region.)
            cheap_rounds=3,
            cost_per_gb=self.state.cluster.region_graph.cost_per_gb,
        )
        for code in np.unique(reason).tolist():
            mine = reason == code
            self._apply_bulk(shard[mine], slot[mine], target[mine], REASONS[code])
        return left or bool((target < 0).any())

    def bulk_balance(self, target_imbalance: float) -> None:
        """Shed every node's excess above the goal level and place it below the level.

        The goal is ``1 + target_imbalance``; under a byte budget it is raised to the
        lowest level whose estimated shedding fits the budget, so the budget buys the
        largest drop of the peak. Where the excess nearly fills the room below the goal
        (:meth:`_crowded`), shedding goes in bands (:meth:`_banded_round`); otherwise in
        one batch. Batched water-filling steps then take the peak further down. Replicas
        that find no target stay where they are; the one-at-a-time balance finishes.
        """
        goal = 1.0 + target_imbalance
        if self.moves_left <= 0 or self.bytes_left <= 0:
            return
        if np.isfinite(self.bytes_left):
            goal = self._budget_level(goal, 0.95 * self.bytes_left)
        # All weighted resources at once. (Balancing one resource at a time, the others
        # held below their peaks, was tried and reached no lower peak: with two resources
        # every node ends at the level in one of them and only trades go further.)
        n_res = self.scale.shape[1]
        balanced = int((self.scale > 0).any(axis=0).sum())
        if (
            balanced > 1
            and self.budget.max_moves is None
            and self.budget.max_bytes is None
            and self.active_count <= EXACT_GROUPS_UP_TO
            and not self._should_stop("balance", 0, None)
        ):
            # Several balanced resources and no budget to ration: trade first (a budget
            # buys more peak per byte without trades). Only where the LP has one group
            # per node: with nodes grouped (tier L) its flows are too coarse to follow
            # (2.9% instead of 4.1% imbalance there, but 6,346 TB instead of 4,872 and
            # 0.8 s more than the 5 s target), and a per-node LP takes 3-5 s.
            self._trade_round(goal)
        if self._crowded(goal):
            self._banded_round(goal)
        else:  # (two rounds: what the first could not place is shed again elsewhere)
            self._bulk_balance_round(np.full(n_res, goal), self.pinned.copy(), 2)
        # What is left above the goal could not be placed there: water-fill it
        # from the top in batches, each level a step below the current peak, receivers
        # taking up to that level (the hottest nodes give to the coolest, as the
        # one-at-a-time balance would, but a few hundred moves per step).
        frozen = self.pinned.copy()
        for _ in range(self.descend_steps):
            peak = float(self.pressure[self.active].max(initial=0.0))
            if peak <= goal * (1 + 1e-9):
                return
            level = max(goal, peak - max((peak - goal) * 0.5, 0.002))
            if not self._bulk_balance_round(np.full(n_res, level), frozen, 1):
                return

    def _trade_round(self, goal: float) -> None:
        """Move replicas along the flows of the balance LP at the goal, trades included.

        With two or more resources, a node at the goal in one resource and below it in
        another cannot take replicas heavy in the first unless it gives some away: only
        trades balance every resource at once. The LP (:mod:`placement.balance_lp`, in
        its plan-to-follow form) says how many bytes of each replica type every node
        should give and take; here each node gives the largest replicas of each type up
        to its quota, and :func:`bulk.place` lands them on the nodes with quota for their
        type. What finds no home stays, and may leave its node above the goal (not above
        the peak before the round) for the balance steps that follow.
        """
        lp = solve_balance_lp(
            self.state,
            bulk.level_caps(self, goal - TRADE_MARGIN),
            nodes=self.nodes,
            flows=True,
            # (At most half the time left: the balance steps after it need the rest.)
            time_limit_s=0.5 * max(self.deadline - time.perf_counter(), 0.0),
        )
        if lp.status != "optimal" or lp.kind is None or lp.send_bytes is None:
            return
        if lp.take_bytes is None:  # pragma: no cover - set together with send_bytes
            return
        self.trade_lp_s = lp.seconds
        kind_of, send = lp.kind, lp.send_bytes  # send: (types, N) bytes
        # Only when the LP trades: nodes under the goal that give, or nodes that both
        # give and take. Otherwise plain shedding reaches the goal with fewer bytes
        # (20 nodes x 2,000 shards, 10% goal: 4,566 GB without the round, 4,783 with).
        sent, taken = send.sum(axis=0), lp.take_bytes.sum(axis=0)
        hot = (self.load > bulk.level_caps(self, goal) * (1 + 1e-9)).any(axis=1)
        traded = float(sent[~hot].sum() + np.minimum(sent, taken).sum())
        self.trade_share = traded / max(float(sent.sum()), 1e-300)
        if self.trade_share < 0.05:
            return
        self.traded = True
        senders = np.flatnonzero((send > 0).any(axis=0) & self.alive)
        rows, cols = self._replicas_on(senders)
        keep = ~self.pinned[rows, cols]
        rows, cols = rows[keep], cols[keep]
        node = self.nodes[rows, cols].astype(np.int64)
        kind = kind_of[rows]
        quota = send[kind, node]
        keep = quota > 0
        rows, cols, node, kind, quota = rows[keep], cols[keep], node[keep], kind[keep], quota[keep]
        size = self.size[rows]
        # Per node and type, largest first while the running total stays within the
        # quota, rounded to the nearest replica. (Taking the replicas richest in what
        # the node must shed first placed a quarter fewer bytes: extremes fit fewer
        # receivers.)
        seg = node * lp.n_types + kind
        order = np.lexsort((-size, seg))
        rows, cols, seg, size, quota = (a[order] for a in (rows, cols, seg, size, quota))
        take = bulk._segment_cumsum(size, seg) - size / 2 <= quota
        shard, slot = rows[take].astype(np.int64), cols[take].astype(np.int64)
        if shard.size == 0:
            return
        target = bulk.place(
            self,
            shard,
            slot,
            levels=[goal] * 10,
            rng=self.rng,
            region_ok=self._service_regions(shard, slot),
            kind=kind_of[shard],
            quota=lp.take_bytes.T,
            # Eight rounds by the LP's quotas, the first four only into regions that
            # hold a live replica (the LP does not see transfer cost: without home
            # rounds the trades cost 13-33x the transfer cost of the plan without
            # them at tiers S and M; with them 3-5x, for the same balance and bytes).
            quota_rounds=8,
            home_rounds=4,
            # Unplaced items stay on their nodes; that may leave a node above the goal
            # but never above today's peak (landings that would are cancelled).
            settle_within=bulk.level_caps(self, float(self.pressure[self.active].max())),
        )
        self._apply_bulk(shard, slot, target, "balance")

    def _crowded(self, goal: float) -> bool:
        """Whether the excess above the goal nearly fills the room below it: the summed
        excess of the nodes above the goal over the summed room of the others, largest
        over the resources, exceeds :data:`CROWDED_ABOVE`."""
        caps = bulk.level_caps(self, goal)
        need = np.maximum(self.load - caps, 0.0)
        act = self.active
        hot = (need > 0).any(axis=1) & act
        room = np.maximum(caps - self.load, 0.0)[act & ~hot].sum(axis=0)
        need = need[hot].sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(need > 0, need / room, 0.0).max(initial=0.0)
        return bool(ratio > CROWDED_ABOVE)

    def _banded_round(self, goal: float) -> None:
        """Shed down to the goal in bands, the replicas needed at the highest levels first.

        Every node's excess above the goal is chosen at once (:func:`bulk.shed`), then
        ranked: a replica's *level* is its node's pressure before it leaves (largest
        replicas leave first). Band by band, from ``goal + 2 x imbalance`` down to the
        goal (:data:`SHED_BANDS`), the replicas above the band's threshold are placed,
        receivers first up to the goal and then up to the threshold
        (:data:`BAND_ROUNDS`). The round ends at the first band that leaves more than
        :data:`BAND_STOP_SHARE` of its bytes unplaced: there the cluster cannot go lower
        without trades, and shedding the lower bands would only send bytes that the
        final peak does not need.

        (Shedding everything to the goal in one batch left 10% unplaced at tier L add
        10%, scattered over 6,900 nodes, and the steps after it relayed and gave back
        bytes: 4,905 TB for 3.50% imbalance, 1.044x the bound, 5.3 s. Banded: 4,777 TB
        for 3.49%, 1.016x, 4.3 s. L skew: 1.107x at 4.06% -> 1.045x at 4.05%; M skew
        1.071x at 4.27% -> 1.048x at 4.41%.)
        """
        caps = bulk.level_caps(self, goal)
        shard, slot = bulk.shed(
            self,
            np.where(self.active[:, None], caps, np.inf),
            self.pinned,  # (read only)
            self.size_index,
            self._replicas_on,
        )
        src = self.nodes[shard, slot].astype(np.int64)
        order = np.lexsort((-self.size[shard], src))  # per node, largest first
        shard, slot, src = shard[order], slot[order], src[order]
        dem = self.demand[shard]
        given = bulk._segment_cumsum_2d(dem, src) - dem  # what the node gave before it
        level = ((self.load[src] - given) * self.scale[src]).max(axis=1)
        # Under a budget the highest levels are served first: the budget buys peak.
        # (The batches keep the order by node: by level, M skew ended 0.2 point higher.)
        by_level = np.argsort(-level, kind="stable")
        keep = np.sort(by_level[self._budget_prefix(shard[by_level])])
        shard, slot, level = shard[keep], slot[keep], level[keep]
        step = max(goal - 1.0, 0.01)
        done = np.zeros(shard.size, dtype=bool)
        for band in SHED_BANDS:
            threshold = goal + step * band
            batch = np.flatnonzero(~done & (level > threshold * (1 + 1e-12)))
            if batch.size == 0:
                continue
            done[batch] = True
            b_shard, b_slot = shard[batch], slot[batch]
            target = bulk.place(
                self,
                b_shard,
                b_slot,
                levels=[goal] * BAND_ROUNDS[0] + [max(goal, threshold)] * BAND_ROUNDS[1],
                rng=self.rng,
                home_rounds=BAND_ROUNDS[0],
                cheap_rounds=BAND_ROUNDS[1],
                cost_per_gb=self.state.cluster.region_graph.cost_per_gb,
                region_ok=self._service_regions(b_shard, b_slot),
                next_node=False,
            )
            self._apply_bulk(b_shard, b_slot, target, "balance")
            unplaced = float(self.size[b_shard[target < 0]].sum())
            if unplaced > BAND_STOP_SHARE * float(self.size[b_shard].sum()):
                break
            if self._should_stop("balance", 0, None) or self.moves_left <= 0:
                break

    def _bulk_balance_round(self, level: np.ndarray, frozen: np.ndarray, rounds: int) -> bool:
        """Shed above *level* and place below it, a few rounds; False when nothing moved."""
        moved_any = False
        for _ in range(rounds):
            if self._should_stop("balance", 0, None) or self.moves_left <= 0:
                break
            caps = bulk.level_caps(self, level)
            shard, slot = bulk.shed(
                self,
                np.where(self.active[:, None], caps, np.inf),
                frozen,
                self.size_index,
                self._replicas_on,
            )
            fits = self._budget_prefix(shard)
            shard, slot = shard[fits], slot[fits]
            if shard.size == 0:
                break
            # Receivers only up to the level. (Letting the last round's receivers go a
            # little above it lowered the peak by about 0.5 point but cost 10-30% more
            # bytes: nodes then gave and took.)
            target = bulk.place(
                self,
                shard,
                slot,
                levels=[level] * 10,
                rng=self.rng,
                home_rounds=3,
                region_ok=self._service_regions(shard, slot),
                # (Trying the next node at once placed more here, for a slightly lower
                # peak, but tier L add 10% then took 0.8 s more: over its 5 s target.)
                next_node=False,
            )
            frozen[shard[target < 0], slot[target < 0]] = True
            if not (target >= 0).any():
                break
            self._apply_bulk(shard, slot, target, "balance")
            moved_any = True
            # Another round sheds other replicas in place of those that found no target.
            # When many found none, the cluster is jammed (with two resources every node
            # sits at the level in one): at tier L a second round then placed 5% of what
            # it shed, for 1 s. The descend steps and single moves do better there.
            unplaced = float(self.size[shard[target < 0]].sum())
            if unplaced > 0.1 * float(self.size[shard].sum()):
                break
        return moved_any

    def _budget_level(self, goal: float, budget_bytes: float) -> float:
        """Lowest level >= goal whose shedding is estimated to cost at most *budget_bytes*.

        The estimate per node is the largest, over the weighted resources, of the bytes
        of its best replicas for that resource (most of it per byte) that bring it down
        to the level: the knapsack of the bytes bound. (Bytes at each node's average
        ratio overstated it: at tier M skew the bulk phase stopped at 8.0% and single
        moves went on to 4.5%, trading as they went. With the knapsack, 5% byte budget:
        S 4.12% -> 4.01%, M 4.51% -> 4.36%, L 4.3% -> 4.13% imbalance, for 4%, 3% and 7%
        more of the budget spent; allowing the estimate 10-20% slack gave back those
        bytes and the peaks.)
        """
        act = self.active
        hot = np.flatnonzero(act & (self.pressure > goal))
        if hot.size == 0:
            return goal
        rows, cols = self._replicas_on(hot)
        node = self.nodes[rows, cols].astype(np.int64)
        size = self.size[rows]
        n_nodes = self.load.shape[0]
        weighted = (self.scale[act] > 0).any(axis=0)
        curves = {
            r: KnapsackCurves(node, self.demand[rows, r], size, n_nodes)
            for r in range(self.load.shape[1])
            if weighted[r] and r != self.size_index
        }
        size_j = self.size_index

        def estimate(level: float) -> float:
            need = np.maximum(self.load - bulk.level_caps(self, level), 0.0)
            need[~act] = 0.0
            est = need[:, size_j].copy() if weighted[size_j] else np.zeros(n_nodes)
            for r, curve in curves.items():
                est = np.maximum(est, curve.bytes_for(need[:, r]))
            return float(est.sum())

        if estimate(goal) <= budget_bytes:
            return goal
        lo, hi = goal, max(float(self.pressure[act].max(initial=goal)), goal)
        for _ in range(40):
            mid = (lo + hi) / 2
            if estimate(mid) <= budget_bytes:
                hi = mid
            else:
                lo = mid
        return hi

    # -- phase 1: repair ---------------------------------------------------------------
    def repair(self) -> None:
        st = self.state
        # Only the rows the bulk rounds changed can differ from the input's check (a
        # full check is 0.24 s at tier L; this equals it entry for entry).
        changed = np.flatnonzero((self.nodes != st.placement.nodes).any(axis=1))
        v = recheck(st, self.before_check, self.nodes, changed, load=self.load)
        live = v.live_count
        todo: list[tuple[int, int, int, str]] = []  # (priority, shard, slot, reason)
        nodes = self.nodes

        def slots_of(pairs: np.ndarray, reason: str) -> None:
            for s, n in pairs.tolist():
                j = int(np.flatnonzero(nodes[s] == n)[0])
                if reason != "failed-node" and self.pinned[s, j]:
                    continue
                todo.append((int(live[s]), s, j, reason))

        slots_of(v.failed, "failed-node")
        # Missing replicas: empty slots up to the replication factor.
        count = (nodes >= 0).sum(axis=1)
        missing = st.shards.replicas - count
        for s in np.flatnonzero(missing > 0).tolist():
            empties = np.flatnonzero(nodes[s] == EMPTY)[: missing[s]]
            todo.extend((int(live[s]), s, int(j), "restore-replication") for j in empties)
        slots_of(v.draining, "drain")
        slots_of(v.residency, "residency")
        for s, d, n in v.spread.tolist():
            row = nodes[s]
            in_dom = [
                j
                for j in range(row.size)
                if row[j] >= 0
                and self.alive[row[j]]
                and self.dom[row[j]] == d
                and not self.pinned[s, j]
            ]
            excess = n - self.max_per_domain
            todo.extend((int(live[s]), s, j, "spread") for j in in_dom[:excess])
        for s, spanned in v.regions.tolist():
            row = nodes[s]
            reg = [self.region[x] if x >= 0 and self.alive[x] else -1 for x in row]
            need = int(self.required_regions[s] - spanned)
            # Move replicas out of the region holding the most of them.
            counts: dict[int, int] = {}
            for r in reg:
                if r >= 0:
                    counts[r] = counts.get(r, 0) + 1
            crowded = [
                j
                for j in range(row.size)
                if reg[j] >= 0 and counts[reg[j]] > 1 and not self.pinned[s, j]
            ]
            todo.extend((int(live[s]), s, j, "min-regions") for j in crowded[:need])
        # Fewest live replicas first; then by reason order; stable on shard index.
        todo.sort(key=lambda t: (t[0], REASON[t[3]], t[1]))
        if self._should_stop("repair", 0, len(todo)):
            self.unplaced.extend(t[1] for t in todo)
            return
        for k, (_, s, j, reason) in enumerate(todo):
            if k % 2048 == 0 and self._should_stop("repair", k, len(todo)):
                self.unplaced.extend(t[1] for t in todo[k:])
                break
            if reason in ("spread", "min-regions") and not self._still_needed(s, j, reason):
                continue  # an earlier repair of the same shard already fixed it
            source = int(nodes[s, j])
            if not self._budget_ok(s, source if source >= 0 and self.alive[source] else -1):
                self.unplaced.append(s)
                continue
            target = self._pick_target(s, j)
            if target < 0:
                self.unplaced.append(s)
                continue
            self._move(s, j, target, reason)
        self._relieve_capacity()

    def _still_needed(self, s: int, j: int, reason: str) -> bool:
        row = self.nodes[s]
        live = [int(x) for x in row if x >= 0 and self.alive[x]]
        if reason == "min-regions":
            return len(set(self.region[live].tolist())) < self.required_regions[s]
        d = self.dom[row[j]]
        return int((self.dom[live] == d).sum()) > self.max_per_domain

    def _csr_slots(self, n: int) -> np.ndarray:
        """Flat slot indices that held replicas of node *n* in the initial placement."""
        if self._csr is None:
            flat = self.state.placement.nodes.ravel()
            order = stable_order(flat, self.state.cluster.n_nodes)
            order = order[int(np.searchsorted(flat[order], 0)) :]
            ptr = np.searchsorted(flat[order], np.arange(self.state.cluster.n_nodes + 1))
            self._csr = (order, ptr)
        order, ptr = self._csr
        return order[ptr[n] : ptr[n + 1]]

    def _slots_on(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, slot) of the replicas currently on node *n*."""
        flat = np.concatenate(
            [
                self._csr_slots(n),
                np.array(self.arrivals[n], dtype=np.int64),
            ]
        )
        w = self.nodes.shape[1]
        rows, cols = flat // w, flat % w
        here = self.nodes[rows, cols] == n
        rows, cols = rows[here], cols[here]
        return rows, cols

    def _replicas_on(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, slot) of the replicas on *nodes*: per node when few, else one scan."""
        if nodes.size > self.scan_above:
            on = self.nodes >= 0
            on[on] = np.isin(self.nodes[on], nodes)
            rows, cols = np.nonzero(on)
            return rows.astype(np.int64), cols.astype(np.int64)
        parts = [self._slots_on(int(n)) for n in nodes.tolist()]
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return (
            np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.int64),
        )

    def _relieve_capacity(self) -> None:
        """Move replicas off nodes above headroom: fewest bytes first that clear the excess."""
        over = np.flatnonzero(((self.load > self.limit * (1 + 1e-9)).any(axis=1)) & self.alive)
        for n in over.tolist():
            rows, cols = self._slots_on(n)
            keep = ~self.pinned[rows, cols]
            rows, cols = rows[keep], cols[keep]
            order = np.argsort(self.size[rows])
            rows, cols = rows[order], cols[order]
            tried = np.zeros(rows.size, dtype=bool)
            while (self.load[n] > self.limit[n] * (1 + 1e-9)).any() and not tried.all():
                # Once one replica can clear the excess: the fewer bytes of that replica
                # or the smallest replicas that clear it together (then move the smallest
                # of those and look again). Before that: the largest left (fewer moves).
                gap = self.load[n] - self.limit[n]
                left = np.flatnonzero(~tried)
                clears = ((self.demand[rows[left]] >= gap[None, :]) | (gap[None, :] <= 0)).all(
                    axis=1
                )
                together = (np.cumsum(self.demand[rows[left]], axis=0) >= gap[None, :]).all(axis=1)
                single = float(self.size[rows[left[np.argmax(clears)]]]) if clears.any() else np.inf
                pooled = (
                    float(self.size[rows[left[: int(np.argmax(together)) + 1]]].sum())
                    if together.any()
                    else np.inf
                )
                if pooled < single < np.inf:  # (no single clears: largest first, fewer moves)
                    k = int(left[0])
                elif clears.any():
                    k = int(left[np.argmax(clears)])
                else:
                    k = int(left[-1])
                tried[k] = True
                s, j = int(rows[k]), int(cols[k])
                if not self._budget_ok(s, n):
                    continue
                target = self._pick_target(s, j)
                if target >= 0:
                    self._move(s, j, target, "capacity")

    # -- phase 2: balance --------------------------------------------------------------
    def balance(self, target_imbalance: float, min_gain: float) -> str:
        goal = 1.0 + target_imbalance
        if self._should_stop("balance", 0, None):
            return "time limit or stopped"
        hot_heap = [(-float(self.pressure[n]), int(n)) for n in np.flatnonzero(self.active)]
        heapq.heapify(hot_heap)
        stuck: set[int] = set()
        failures = 0
        iterations = 0
        while hot_heap:
            iterations += 1
            if iterations % 1024 == 0 and self._should_stop("balance", iterations, None):
                return "time limit or stopped"
            neg, n = hot_heap[0]
            if -neg != self.pressure[n] or n in stuck:
                heapq.heappop(hot_heap)
                if n not in stuck and -neg != self.pressure[n]:
                    heapq.heappush(hot_heap, (-float(self.pressure[n]), n))
                continue
            p_hot = -neg
            if p_hot <= goal:
                return "balanced"
            if self.moves_left <= 0 or self.bytes_left <= 0:
                return "budget"
            if not self._node_ok(n):
                stuck.add(n)
                continue
            # Water-filling: bring the peak down to the next-hottest node, not far below it,
            # so that no node gives more than its excess over the final peak.
            second = self._second_hottest(hot_heap, stuck)
            moved = self._balance_node(n, p_hot, max(goal, second), min_gain, goal)
            if not moved:
                # Try the next-hottest nodes for a while: as they come down, this one's
                # water level drops and bigger replicas may leave it. Moves that end up
                # not lowering the final peak are undone by prune().
                stuck.add(n)
                failures += 1
                if failures > self.patience:
                    return "no improving move"
                continue
            if stuck:
                for m in stuck:
                    heapq.heappush(hot_heap, (-float(self.pressure[m]), m))
                stuck.clear()
            failures = 0
            heapq.heappush(hot_heap, (-float(self.pressure[n]), n))
            # The receiver got warmer: its old entry sits too deep in the heap.
            t = self.out.target[-1]
            heapq.heappush(hot_heap, (-float(self.pressure[t]), t))
        return "no improving move"

    def prune(self, passes: int = 12) -> int:
        """Undo balance moves that the final peak does not need; returns how many.

        A move whose replica, back on its source, leaves the source at or below the
        final peak pressure (and headroom) only spent bytes. Only shards with this one
        changed slot are considered, whose original row was valid, so the restored row
        is valid too. Each pass restores, per source node, the largest replica that
        still fits there; passes repeat while any fits. (Restoring only a prefix of each
        node's largest replicas stopped at the first that did not fit: at tier L add 10%
        it undid 276 moves where 85,000 fitted one by one.)
        """
        s, j, src, _ = self._single_moves(self._changed_rows())
        if s.size == 0:
            return 0
        peak = float(self.pressure[self.active].max())
        caps = bulk.level_caps(self, peak)
        # By source, largest first: each pass takes the first that fits per source.
        order = np.argsort(-self.size[s], kind="stable")
        order = order[stable_order(src[order], self.load.shape[0])]
        s, j, src = s[order], j[order], src[order]
        restored = np.zeros(s.size, dtype=bool)
        for _ in range(passes):
            open_ = np.flatnonzero(~restored)
            fits = (self.load[src[open_]] + self.demand[s[open_]] <= caps[src[open_]]).all(axis=1)
            cand = open_[fits]
            if cand.size == 0:
                break
            _, first = np.unique(src[cand], return_index=True)  # the largest per source
            pick = cand[first]
            tgt = self.nodes[s[pick], j[pick]].astype(np.int64)
            np.add.at(self.load, tgt, -self.demand[s[pick]])
            np.add.at(self.load, src[pick], self.demand[s[pick]])
            self.nodes[s[pick], j[pick]] = src[pick]
            restored[pick] = True
        done = np.flatnonzero(restored)
        if done.size == 0:
            return 0
        undone = float(self.size[s[done]].sum())
        self.bytes_moved -= undone
        self.bytes_left += undone
        self.moves_left += int(done.size)
        self._rebuild_heaps()
        return int(done.size)

    def tidy(self) -> int:
        """Prune, shortcut relays, lighten moves, pruning again after each; moves saved
        (``lighten`` saves bytes, not moves: it counts replacements)."""
        saved = self.prune()
        steps = [self.shortcut]
        if self._changed_rows().size <= LIGHTEN_MOVES_UP_TO:
            steps.append(self.lighten)
        for step in steps:
            done = step()
            saved += done + (self.prune() if done else 0)
        return saved

    def shortcut(self, rounds: int = 4) -> int:
        """Skip a node that only passes load on; returns how many moves were saved.

        When replica ``a`` moved X -> Y and replica ``b`` moved Y -> Z, sending ``a``
        straight to Z and leaving ``b`` on Y saves ``b``'s bytes (both, when Z is X: a
        swap undone), if Y and Z stay within the final peak and both rows stay valid.
        Balance steps make such chains: a receiver later sheds as the water level drops
        (tier M skew: 17 TB of 229 TB left nodes that had taken bytes). Only shards with
        one changed slot are considered, like :meth:`prune`, and only where the transfer
        cost does not rise (``a`` to Z costs at most ``a`` to Y plus ``b`` to Z); with a
        latency target, only where ``a`` ends in Y's region or its own, so its clients
        are served no worse. Each round pairs every such Y with its best feasible
        (a, b), largest saving first, no node in two pairs. (Same region only, instead
        of the cost rule: tier L skew 2,127 -> 2,140 TB and 5,266 -> 5,510 in cost.)
        """
        before = self.state.placement.nodes
        saved_moves = 0
        # Only rows changed now can change below (one scan of the matrix, not one a round).
        rows = self._changed_rows()
        for _ in range(rounds):
            s_idx, j_idx, src, dst = self._single_moves(rows)
            if s_idx.size == 0:
                break
            size = self.size[s_idx]
            # Per relay node Y: its arrivals (a) and departures (b), largest first, the
            # first few of each (enough: a round takes one pair per node).
            ins = np.lexsort((-size, dst))
            outs = np.lexsort((-size, src))
            nodes_n = self.load.shape[0]
            in_start = np.searchsorted(dst[ins], np.arange(nodes_n))
            in_count = np.bincount(dst, minlength=nodes_n)
            out_start = np.searchsorted(src[outs], np.arange(nodes_n))
            out_count = np.bincount(src, minlength=nodes_n)
            relay = np.flatnonzero((in_count > 0) & (out_count > 0))
            if relay.size == 0:
                break
            pa, pb = [], []
            for i in range(SHORTCUT_TRIES):
                for k in range(SHORTCUT_TRIES):
                    y = relay[(in_count[relay] > i) & (out_count[relay] > k)]
                    pa.append(ins[in_start[y] + i])
                    pb.append(outs[out_start[y] + k])
            a, b = np.concatenate(pa), np.concatenate(pb)
            y, x, z = dst[a], src[a], dst[b]
            sa, sb = s_idx[a], s_idx[b]
            ok = sa != sb
            if self.latency_target_ms is not None:
                # a ends in Y's region or its own: client service never gets worse.
                region = self.region
                ok &= (region[z] == region[y]) | (region[z] == region[x])
            else:
                # Transfer cost never rises: a's copy to Z costs at most a's to Y plus b's.
                cost_az = transfer_cost(self.state, before, sa, z)
                cost_ay = transfer_cost(self.state, before, sa, y)
                cost_bz = transfer_cost(self.state, before, sb, z)
                ok &= cost_az <= (cost_ay + cost_bz) * (1 + 1e-9)
            peak = float(self.pressure[self.active].max())
            caps = bulk.level_caps(self, peak) * (1 + 1e-12)
            delta = self.demand[sb] - self.demand[sa]  # change on Y; minus it on Z
            ok &= (self.load[y] + delta <= caps[y]).all(axis=1)
            ok &= (self.load[z] - delta <= caps[z]).all(axis=1)
            a, b, y, z = a[ok], b[ok], y[ok], z[ok]  # (the cheap tests first)
            ok = self._row_ok(s_idx[a], j_idx[a], z) & self._row_ok(s_idx[b], j_idx[b], y)
            a, b, y, z = a[ok], b[ok], y[ok], z[ok]
            if a.size == 0:
                break
            gain = size[b] + np.where(src[a] == z, size[a], 0.0)
            # The best pair of each relay node, then largest gain first with no node in
            # two pairs (the loads checked above stay exact).
            order = np.argsort(-gain, kind="stable")
            _, best = np.unique(y[order], return_index=True)
            best = order[best]
            best = best[np.argsort(-gain[best], kind="stable")]
            busy = np.zeros(self.load.shape[0], dtype=bool)
            take = []
            for k, yk, zk in zip(best.tolist(), y[best].tolist(), z[best].tolist(), strict=True):
                if busy[yk] or busy[zk]:
                    continue
                busy[yk] = busy[zk] = True
                take.append(k)
            sel = np.array(take, dtype=np.int64)
            a, b, y, z = a[sel], b[sel], y[sel], z[sel]
            sa, sb = s_idx[a], s_idx[b]
            delta = self.demand[sb] - self.demand[sa]
            self.load[y] += delta
            self.load[z] -= delta
            self.nodes[sa, j_idx[a]] = z
            self.nodes[sb, j_idx[b]] = y
            undone = float(self.size[sb].sum()) + float(self.size[sa[src[a] == z]].sum())
            self.bytes_moved -= undone
            self.bytes_left += undone
            gained = int(b.size) + int((src[a] == z).sum())
            self.moves_left += gained
            saved_moves += gained
        if saved_moves:
            self._rebuild_heaps()
        return saved_moves

    def lighten(self, rounds: int = 2) -> int:
        """Move smaller replicas instead of moved ones; returns how many were replaced.

        Where replica ``a`` moved X -> Y and a replica ``c`` that never moved sits on X,
        smaller than ``a``, with enough of every resource that X stays under the final
        peak with ``a`` back and without ``c``, and Y stays under it with ``c`` instead
        of ``a``: move ``c`` and keep ``a`` (``a``'s row is its starting one again).
        The candidates ``c`` for each move are the source's residents just smaller than
        ``a`` and its densest in the non-size resources (the ones that relieve a node
        bound by, say, iops with the fewest bytes). The transfer cost may not rise, nor,
        with a latency target, may ``c`` leave its region. One replacement per node and
        round, largest saving first.
        """
        before = self.state.placement.nodes
        others = [r for r in range(self.load.shape[1]) if r != self.size_index]
        dense_r = [r for r in others if bool((self.scale[:, r] > 0).any())]
        replaced = 0
        # Residents: replicas that never moved, on shards untouched, by node; sorted
        # once (by size and by density, each as 16-bit keys: two radix sorts), then
        # judged against the current rows in every round.
        row_changed = (self.nodes != before).any(axis=1)
        n_nodes = self.load.shape[0]
        # Only the sources of moves hold candidates (at tier L skew half the nodes).
        source = np.zeros(n_nodes, dtype=bool)
        source[self._single_moves(self._changed_rows(row_changed))[2]] = True
        source &= self.active
        rr, cc = np.nonzero((self.nodes >= 0) & ~row_changed[:, None] & ~self.pinned)
        node = self.nodes[rr, cc].astype(np.int64)
        keep = source[node]
        rr, cc, node = rr[keep], cc[keep], node[keep]
        size = self.size
        top = max(float(size.max(initial=0.0)), 1e-300)

        def smallness(values: np.ndarray) -> np.ndarray:  # 0 for the largest shard
            return (65535 * (1 - values / top)).astype(np.int64)

        by_size = np.argsort(smallness(size[rr]).astype(np.uint16), kind="stable")
        by_size = by_size[stable_order(node[by_size], n_nodes)]
        seg_end = np.searchsorted(node[by_size], np.arange(n_nodes), side="right")
        size_key = node[by_size] * 65536 + smallness(size[rr[by_size]])  # ascending
        by_dense = d_start = d_end = None
        if dense_r:
            dens = self.demand[rr, dense_r[0]] / np.maximum(size[rr], 1e-300)
            q = (65535 * (1 - dens / max(float(dens.max(initial=0.0)), 1e-300))).astype(np.uint16)
            by_dense = np.argsort(q, kind="stable")
            by_dense = by_dense[stable_order(node[by_dense], n_nodes)]
            d_start = np.searchsorted(node[by_dense], np.arange(n_nodes))
            d_end = np.searchsorted(node[by_dense], np.arange(n_nodes), side="right")
        for _ in range(rounds):
            row_changed = (self.nodes != before).any(axis=1)
            s_a, j_a, x, y = self._single_moves(self._changed_rows(row_changed))
            if s_a.size == 0:
                break
            # Residents smaller than a, the largest first (sizes in the 16-bit order are
            # approximate; the exact comparison comes below), and the densest.
            pos = np.searchsorted(size_key, x * 65536 + smallness(size[s_a]), side="right")
            cand_a, cand_c = [], []
            for k in range(LIGHTEN_TRIES):
                at = pos + k
                inside = at < seg_end[x]
                cand_a.append(np.flatnonzero(inside))
                cand_c.append(by_size[at[inside]])
            if by_dense is not None and d_start is not None and d_end is not None:
                for k in range(LIGHTEN_TRIES):
                    at = d_start[x] + k
                    inside = at < d_end[x]
                    cand_a.append(np.flatnonzero(inside))
                    cand_c.append(by_dense[at[inside]])
            ia = np.concatenate(cand_a)
            ic = np.concatenate(cand_c)
            sc, jc = rr[ic], cc[ic]
            sa, ja, xa, ya = s_a[ia], j_a[ia], x[ia], y[ia]
            ok = (size[sc] < size[sa] * (1 - 1e-9)) & ~row_changed[sc]
            if self.budget.max_moves_per_group is not None:
                ok &= self.group[sc] == self.group[sa]  # the group's move count stays
            peak = float(self.pressure[self.active].max())
            caps = bulk.level_caps(self, peak) * (1 + 1e-12)
            delta = self.demand[sa] - self.demand[sc]  # X gains a, loses c; Y the reverse
            ok &= (self.load[xa] + delta <= caps[xa]).all(axis=1)
            ok &= (self.load[ya] - delta <= caps[ya]).all(axis=1)
            sel = np.flatnonzero(ok)
            sc, jc, sa, ja, xa, ya = sc[sel], jc[sel], sa[sel], ja[sel], xa[sel], ya[sel]
            if self.latency_target_ms is not None:
                ok = self.region[ya] == self.region[xa]
            else:
                ok = transfer_cost(self.state, before, sc, ya) <= transfer_cost(
                    self.state, before, sa, ya
                ) * (1 + 1e-9)
            ok &= self._row_ok(sc, jc, ya)
            sel = np.flatnonzero(ok)
            sc, jc, sa, ja, xa, ya = sc[sel], jc[sel], sa[sel], ja[sel], xa[sel], ya[sel]
            if sc.size == 0:
                break
            gain = size[sa] - size[sc]
            # The best replacement of each source, then largest gain first with no node
            # in two of them (c sits on its source: one per source is one per c).
            order = np.argsort(-gain, kind="stable")
            _, first = np.unique(xa[order], return_index=True)
            best = order[first]
            best = best[np.argsort(-gain[best], kind="stable")]
            busy = np.zeros(n_nodes, dtype=bool)
            shard_used: set[int] = set()  # two replicas of one shard: rows judged apart
            take = []
            for k, xk, yk, ck in zip(
                best.tolist(), xa[best].tolist(), ya[best].tolist(), sc[best].tolist(), strict=True
            ):
                if busy[xk] or busy[yk] or ck in shard_used:
                    continue
                busy[xk] = busy[yk] = True
                shard_used.add(ck)
                take.append(k)
            t = np.array(take, dtype=np.int64)
            sc, jc, sa, ja, xa, ya = sc[t], jc[t], sa[t], ja[t], xa[t], ya[t]
            delta = self.demand[sa] - self.demand[sc]
            self.load[xa] += delta
            self.load[ya] -= delta
            self.nodes[sa, ja] = xa
            self.nodes[sc, jc] = ya
            saved = float((size[sa] - size[sc]).sum())
            self.bytes_moved -= saved
            self.bytes_left += saved
            replaced += int(t.size)
        if replaced:
            self._rebuild_heaps()
        return replaced

    def _changed_rows(self, changed: np.ndarray | None = None) -> np.ndarray:
        """Shards whose row differs from the start, except those that started invalid
        (*changed*: the (S,) mask of differing rows, when the caller has it)."""
        if changed is None:
            changed = (self.nodes != self.state.placement.nodes).any(axis=1)
        rows = np.flatnonzero(changed)
        return rows[~self._bad_rows()[rows]]

    def _single_moves(
        self, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(shard, slot, source, target) of the shards among *rows* that changed one
        slot only, away from an active node (the moves prune, shortcut and lighten may
        undo or redirect: the restored row is the valid starting one)."""
        before = self.state.placement.nodes
        changed = self.nodes[rows] != before[rows]
        one = changed.sum(axis=1) == 1
        r_idx, slot = np.nonzero(changed & one[:, None])
        shard = rows[r_idx]
        src = before[shard, slot].astype(np.int64)
        dst = self.nodes[shard, slot].astype(np.int64)
        keep = (src >= 0) & self.active[np.maximum(src, 0)]
        return shard[keep], slot[keep], src[keep], dst[keep]

    def _bad_rows(self) -> np.ndarray:
        """Shards whose starting row broke a rule (left alone by prune, shortcut and
        lighten); computed once, from the check of the input."""
        if self._bad is None:
            v0 = self.before_check
            bad = np.zeros(self.nodes.shape[0], dtype=bool)
            for pairs in (v0.residency, v0.failed, v0.draining, v0.spread, v0.regions):
                if len(pairs):
                    bad[pairs[:, 0]] = True
            self._bad = bad
        return self._bad

    def _row_ok(self, shard: np.ndarray, slot: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Whether each shard's row stays valid with its *slot* moved to *node*."""
        others, other_dom, other_reg = bulk._others(self, self.nodes, shard, slot)
        # (No source to exclude: every caller moves the slot off its current node.)
        ok = bulk._may_land(self, node, other_dom, others, np.full(node.size, -1))
        regions = np.concatenate([other_reg, self.region[node][:, None]], axis=1)
        ok &= bulk._distinct(regions) >= self.required_regions[shard]
        ok &= self.allowed_dom[self.res_class[shard], self.dom[node]]
        return ok & self.active[node]

    def _second_hottest(self, hot_heap: list[tuple[float, int]], stuck: set[int]) -> float:
        """Pressure of the hottest valid entry after the top (peeks at the heap's children)."""
        best = -np.inf
        for k in (1, 2):
            if k < len(hot_heap):
                neg, m = hot_heap[k]
                if -neg == self.pressure[m]:
                    best = max(best, -neg)
        return best

    def _balance_node(
        self, n: int, p_hot: float, goal: float, min_gain: float, final: float
    ) -> bool:
        rows, cols = self._slots_on(n)
        keep = ~self.pinned[rows, cols]
        rows, cols = rows[keep], cols[keep]
        if rows.size == 0:
            return False
        # Pressure drop each replica would bring to this node.
        drop = p_hot - ((self.load[n][None, :] - self.demand[rows]) * self.scale[n][None, :]).max(
            axis=1
        )
        useful = drop > 0
        rows, cols, drop = rows[useful], cols[useful], drop[useful]
        if rows.size == 0:
            return False
        want = p_hot - goal
        # Prefer the largest replica whose drop does not overshoot the goal, then smaller ones.
        fits = drop <= want * 1.0001
        # Fitting first, largest drop first; then the ones that overshoot the water
        # level, those whose drop is closest to the node's whole excess over the final
        # goal first. (Largest first moved a 200 GB replica off a node that needed
        # 118 GB gone: 10% more bytes than the optimum at 20 nodes x 2,000 shards;
        # smallest first made tier L take 50,000 tiny steps.)
        order = np.lexsort((np.where(fits, -drop, np.abs(drop - (p_hot - final))), ~fits))
        # Try the best few, then geometrically smaller ones: a big replica may not fit any
        # cooler node while a smaller one does.
        picks = sorted({i for i in self.pick_ranks if i < order.size})
        for k in order[picks].tolist():
            s, j = int(rows[k]), int(cols[k])
            if not self._budget_ok(s, n):
                continue
            target = self._pick_target(s, j, ceiling=p_hot, keep_service=True)
            if target < 0:
                continue
            p_target_after = float(
                ((self.load[target] + self.demand[s]) * self.scale[target]).max()
            )
            new_peak = max(p_hot - drop[k], p_target_after)
            gain = p_hot - new_peak
            if gain <= 0 or gain < min_gain * drop[k]:
                continue
            self._move(s, j, target, "balance")
            return True
        return False

    def _should_stop(self, phase: str, done: int, total: int | None) -> bool:
        if time.perf_counter() > self.deadline:
            return True
        if self.progress is not None:
            keep_going = self.progress(
                {
                    "phase": phase,
                    "done": done,
                    "total": total,
                    "moves": len(self.out.shard),
                    "bytes_moved": self.bytes_moved,
                }
            )
            if keep_going is False:
                return True
        return False


def solve_greedy(
    state: State,
    *,
    budget: Budget,
    target_imbalance: float,
    min_gain: float,
    weights: np.ndarray,
    time_limit_s: float,
    progress: Callable[[dict[str, Any]], bool | None] | None = None,
    balance: bool = True,
    seed: int = 0,
    before: Violations | None = None,
) -> GreedyResult:
    """Repair, then balance; returns the working placement and the move lists."""
    t0 = time.perf_counter()
    engine = _Engine(state, budget, weights, t0 + time_limit_s, progress, seed)
    engine._before_check = before
    if not engine.bulk_ok or engine.bulk_repair(1.0 + target_imbalance):
        engine.repair()
    t1 = time.perf_counter()
    if balance and engine.bulk_ok:
        engine.bulk_balance(target_imbalance)
    stop = engine.balance(target_imbalance, min_gain) if balance else "balance disabled"
    pruned = engine.tidy() if balance else 0
    for _ in range(8):
        # Pruning gave back budget that balancing had spent on moves the final peak did
        # not need: spend it again, on the hottest nodes.
        if not (balance and stop == "budget" and pruned and engine.moves_left > 0):
            break
        stop = engine.balance(target_imbalance, min_gain)
        more = engine.tidy()
        pruned += more
        if not more:
            break
    t2 = time.perf_counter()
    out = engine.out
    out.stats = {
        "engine": "greedy",
        "repair_s": round(t1 - t0, 4),
        "balance_s": round(t2 - t1, 4),
        "stop_reason": stop,
        "unplaced_shards": len(set(engine.unplaced)),
        "pruned_moves": pruned,
        "trade_lp_s": round(engine.trade_lp_s, 4),
        "trade_share": round(engine.trade_share, 4),
        "traded": engine.traded,
    }
    return out
