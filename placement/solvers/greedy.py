"""The fast engine: prioritized repair, then best-improvement balancing.

Private kernel: :func:`placement.planner.plan` validates the inputs and re-checks the
result; this module trusts its arguments.

How it works
------------
Nodes are kept in one lazy min-heap per failure domain (at the spread level), keyed by
*pressure*: the node's highest utilization relative to the cluster's final mean,
``max_r w_r * load_r / capacity_r / mean_r``. Choosing a target for a replica is then an
``argmin`` over the few domain tops that the shard may use (allowed region, spread, min
regions), followed by a capacity check; it costs microseconds, not a scan of every node.

1. **Repair**: every replica that must move (failed or draining node, missing, outside its
   residency, above the spread limit, too few regions, node above headroom) is queued
   with its shard's live-replica count, and the shards with the fewest live replicas are
   served first. Each goes to the least-pressured feasible node.
2. **Balance**: while the hottest active node's pressure is above ``1 + target`` and the
   budget lasts, move one of its replicas (the largest that does not overshoot the goal)
   to the least-pressured feasible node, if that lowers the pair's peak by at least
   ``min_gain`` of what the bytes could achieve (no churn for nothing).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import check, node_load
from placement.model import EMPTY, State
from placement.plan import REASONS

__all__ = ["Budget", "GreedyResult", "solve_greedy"]

REASON = {name: i for i, name in enumerate(REASONS)}


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
    ) -> None:
        c, s = state.cluster, state.shards
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
        self.scale = cap_scaled  # pressure of node n = max_r load[n, r] * scale[n, r]
        self.pressure = (self.load * self.scale).max(axis=1)

        self.members = [np.flatnonzero((self.dom == d) & self.active) for d in range(self.n_dom)]
        self.heaps: list[list[tuple[float, int]]] = [[] for _ in range(self.n_dom)]
        for d in range(self.n_dom):
            h = [(float(self.pressure[n]), int(n)) for n in self.members[d]]
            heapq.heapify(h)
            self.heaps[d] = h
        self.dom_top = np.full(self.n_dom, np.inf)
        for d in range(self.n_dom):
            self._refresh_top(d)
        # Replicas per node: a CSR of the initial placement plus the slots moved in since.
        flat = self.nodes.ravel()
        order = np.argsort(flat, kind="stable")
        start = int(np.searchsorted(flat[order], 0))
        order = order[start:]
        self.csr_slots = order
        self.csr_ptr = np.searchsorted(flat[order], np.arange(c.n_nodes + 1))
        self.arrivals: list[list[int]] = [[] for _ in range(c.n_nodes)]
        self.out = GreedyResult(nodes=self.nodes)
        self.bytes_moved = 0.0
        self.unplaced: list[int] = []

    # -- heaps -------------------------------------------------------------------------
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
    def _pick_target(self, s: int, slot: int, ceiling: float = np.inf) -> int:
        """Least-pressured feasible node for a replica of shard *s* in *slot*, or -1."""
        row = self.nodes[s]
        others = [int(x) for j, x in enumerate(row) if j != slot and x >= 0 and self.alive[x]]
        mask = self.allowed_dom[self.res_class[s]].copy()
        if others:
            od = self.dom[others]
            if self.max_per_domain == 1:
                mask[od] = False
            else:
                doms, counts = np.unique(od, return_counts=True)
                mask[doms[counts >= self.max_per_domain]] = False
            regions = set(self.region[others].tolist())
            if len(regions) < self.required_regions[s]:
                mask &= ~np.isin(self.dom_region, list(regions))
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
            fits = ((self.load[cand] + demand) <= self.limit[cand]).all(axis=1) & ~np.isin(
                cand, row[row >= 0]
            )
            if self.budget.max_moves_per_node is not None:
                fits &= self.node_moves[cand] < self.budget.max_moves_per_node
            if fits.any():
                p = np.where(fits, self.pressure[cand], np.inf)
                best = int(cand[int(np.argmin(p))])
                if p.min() < ceiling:
                    return best
            tops[d] = np.inf
        return -1

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

    # -- phase 1: repair ---------------------------------------------------------------
    def repair(self) -> None:
        st = self.state
        v = check(st, self.nodes, load=self.load)
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

    def _slots_on(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, slot) of the replicas currently on node *n*."""
        flat = np.concatenate(
            [
                self.csr_slots[self.csr_ptr[n] : self.csr_ptr[n + 1]],
                np.array(self.arrivals[n], dtype=np.int64),
            ]
        )
        w = self.nodes.shape[1]
        rows, cols = flat // w, flat % w
        here = self.nodes[rows, cols] == n
        rows, cols = rows[here], cols[here]
        return rows, cols

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
                # Smallest replica that clears the size excess on its own, else the largest left.
                gap = self.load[n] - self.limit[n]
                clears = ((self.demand[rows] >= gap[None, :]) | (gap[None, :] <= 0)).all(
                    axis=1
                ) & ~tried
                k = (
                    int(np.flatnonzero(clears)[0])
                    if clears.any()
                    else int(np.flatnonzero(~tried)[-1])
                )
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
            moved = self._balance_node(n, p_hot, max(goal, second), min_gain)
            if not moved:
                stuck.add(n)
            heapq.heappush(hot_heap, (-float(self.pressure[n]), n))
        return "no improving move"

    def _second_hottest(self, hot_heap: list[tuple[float, int]], stuck: set[int]) -> float:
        """Pressure of the hottest valid entry after the top (peeks at the heap's children)."""
        best = -np.inf
        for k in (1, 2):
            if k < len(hot_heap):
                neg, m = hot_heap[k]
                if -neg == self.pressure[m]:
                    best = max(best, -neg)
        return best

    def _balance_node(self, n: int, p_hot: float, goal: float, min_gain: float) -> bool:
        rows, cols = self._slots_on(n)
        keep = ~self.pinned[rows, cols]
        rows, cols = rows[keep], cols[keep]
        if rows.size == 0:
            return False
        # Pressure drop each replica would bring to this node.
        drop = p_hot - ((self.load[n][None, :] - self.demand[rows]) * self.scale[n][None, :]).max(
            axis=1
        )
        want = p_hot - goal
        # Prefer the largest replica whose drop does not overshoot the goal, then smaller ones.
        fits = drop <= want * 1.0001
        order = np.lexsort((-drop, ~fits))  # fitting first, each group by drop descending
        # Try the best few, then geometrically smaller ones: a big replica may not fit any
        # cooler node while a smaller one does.
        picks = sorted(
            {i for i in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128) if i < order.size}
        )
        for k in order[picks].tolist():
            s, j = int(rows[k]), int(cols[k])
            if drop[k] <= 0 or not self._budget_ok(s, n):
                continue
            target = self._pick_target(s, j, ceiling=p_hot)
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
) -> GreedyResult:
    """Repair, then balance; returns the working placement and the move lists."""
    t0 = time.perf_counter()
    engine = _Engine(state, budget, weights, t0 + time_limit_s, progress)
    engine.repair()
    t1 = time.perf_counter()
    stop = engine.balance(target_imbalance, min_gain) if balance else "balance disabled"
    t2 = time.perf_counter()
    out = engine.out
    out.stats = {
        "engine": "greedy",
        "repair_s": round(t1 - t0, 4),
        "balance_s": round(t2 - t1, 4),
        "stop_reason": stop,
        "unplaced_shards": len(set(engine.unplaced)),
    }
    return out
