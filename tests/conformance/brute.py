"""Brute-force enumeration of every valid placement of a tiny instance.

The reference the exact solver and the conformance optima are checked against. It
enumerates, per shard, every set of ``replicas`` distinct active nodes in allowed regions
that keeps pins, the spread limit and ``min_regions``; combines them depth-first with
capacity pruning; checks the budgets at the leaves; and ranks valid placements by the
exact mode's lexicographic key ``(balance steps, bytes moved, transfer cost)``.

Only for instances with a few thousand combinations: it is exponential by design.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from placement.constraints import check, node_load
from placement.model import EMPTY, State
from placement.plan import transfer_cost
from placement.solvers.exact import PRESSURE_STEPS


@dataclass(frozen=True)
class BruteResult:
    key: tuple[int, float, float]  # (balance steps, bytes moved, transfer cost)
    nodes: np.ndarray  # an optimal placement
    n_valid: int  # valid placements enumerated
    n_optimal: int  # of which share the best key


def _excess_steps(state: State, load: np.ndarray, target: float, weights: np.ndarray) -> int:
    c, s = state.cluster, state.shards
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    act_cap = c.capacity[c.active].sum(axis=0)
    excess = 0.0
    for r in range(c.n_resources):
        if weights[r] <= 0 or act_cap[r] <= 0 or total[r] <= 0:
            continue
        mean = total[r] / act_cap[r]
        ok = c.active & (c.capacity[:, r] > 0)
        p = weights[r] * load[ok, r] / (c.capacity[ok, r] * mean)
        excess = max(excess, float(p.max()) - (1 + target))
    return max(0, math.ceil(PRESSURE_STEPS * excess - 1e-6))


def brute_force(
    state: State,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    target_imbalance: float = 0.02,
    weights: Mapping[str, float] | None = None,
    max_leaves: int = 500_000,
) -> BruteResult | None:
    """The lexicographically best valid placement, or None when none exists."""
    c, s, pol = state.cluster, state.shards, state.policy
    orig = state.placement.nodes
    w = np.ones(c.n_resources)
    for name, value in (weights or {}).items():
        w[c.resource_index(name)] = value
    dom = c.domain_of[:, state.spread_level_index]
    region = c.region_of
    limit = c.capacity * state.headroom[None, :] * (1 + 1e-9)
    size = s.demand[:, c.size_index]

    options: list[list[tuple[int, ...]]] = []
    for sh in range(s.n_shards):
        allowed = s.allowed_regions[s.residency_class[sh]]
        nodes = [n for n in range(c.n_nodes) if c.active[n] and allowed[region[n]]]
        pins = {
            int(orig[sh, j])
            for j in range(orig.shape[1])
            if state.placement.pinned[sh, j] and c.alive[orig[sh, j]]
        }
        req = min(pol.min_regions, int(s.replicas[sh]))
        sets = []
        for combo in itertools.combinations(nodes, int(s.replicas[sh])):
            if not pins <= set(combo):
                continue
            if np.bincount(dom[list(combo)]).max(initial=0) > pol.max_per_domain:
                continue
            if len({int(region[n]) for n in combo}) < req:
                continue
            sets.append(combo)
        if not sets:
            return None
        options.append(sets)
    if math.prod(len(o) for o in options) > max_leaves:
        raise ValueError("instance too large for brute force")

    best: list[object] = [None, None, 0, 0]  # key, rows, n_valid, n_optimal
    load = np.zeros((c.n_nodes, c.n_resources))
    chosen: list[tuple[int, ...]] = []

    def leaf() -> None:
        rows = np.full(orig.shape, EMPTY, dtype=np.int32)
        for sh, combo in enumerate(chosen):
            rows[sh, : len(combo)] = combo
        new = [
            (sh, n) for sh, combo in enumerate(chosen) for n in combo if n not in orig[sh].tolist()
        ]
        n_moves = len(new)
        moved = float(sum(size[sh] for sh, _ in new))
        if max_moves is not None and n_moves > max_moves:
            return
        if max_bytes is not None and moved > max_bytes * (1 + 1e-12):
            return
        if max_moves_per_node is not None:
            per = np.zeros(c.n_nodes, dtype=int)
            for _sh, n in new:
                per[n] += 1
            for sh in range(s.n_shards):
                for a in orig[sh].tolist():
                    if a >= 0 and c.alive[a] and a not in chosen[sh]:
                        per[a] += 1
            if per.max(initial=0) > max_moves_per_node:
                return
        if max_moves_per_group is not None:
            groups = [int(s.group[sh]) for sh, _ in new if s.group[sh] >= 0]
            if groups and np.bincount(groups).max() > max_moves_per_group:
                return
        assert not check(state, rows), check(state, rows).counts()
        sh_arr = np.array([sh for sh, _ in new], dtype=np.int64)
        tg_arr = np.array([n for _, n in new], dtype=np.int64)
        cost = float(transfer_cost(state, orig, sh_arr, tg_arr).sum())
        key = (_excess_steps(state, node_load(state, rows), target_imbalance, w), moved, cost)
        rounded = (key[0], round(key[1], 6), float(f"{key[2]:.9g}"))
        best[2] = int(best[2]) + 1  # type: ignore[call-overload]
        if best[0] is None or rounded < best[0]:  # type: ignore[operator]
            best[0], best[1], best[3] = rounded, rows, 1
        elif rounded == best[0]:
            best[3] = int(best[3]) + 1  # type: ignore[call-overload]

    def dfs(sh: int) -> None:
        if sh == s.n_shards:
            leaf()
            return
        d = s.demand[sh]
        for combo in options[sh]:
            idx = list(combo)
            load[idx] += d
            if (load[idx] <= limit[idx]).all():
                chosen.append(combo)
                dfs(sh + 1)
                chosen.pop()
            load[idx] -= d

    dfs(0)
    if best[0] is None:
        return None
    return BruteResult(
        key=best[0],  # type: ignore[arg-type]
        nodes=best[1],  # type: ignore[arg-type]
        n_valid=int(best[2]),  # type: ignore[call-overload]
        n_optimal=int(best[3]),  # type: ignore[call-overload]
    )
