"""Vectorized bulk moves: place many replicas at once by filling slack intervals.

Private kernel of the fast engine (:mod:`placement.solvers.greedy`), which owns the
working arrays and trusts these functions to keep them consistent. Two operations:

* :func:`place` finds targets for a batch of replicas (lost with a failed zone, on a
  draining node, shed by a hot node) in a few vectorized rounds instead of one heap
  walk per replica.
* :func:`shed` chooses, on every node above a utilization level, the replicas whose
  removal brings it down to that level with the fewest bytes.

How :func:`place` works
-----------------------
Replicas are grouped by what restricts them as a set: their residency class and, when
the rest of the shard spans too few regions, the regions they must avoid. Within a
group, the eligible nodes' free room up to a *level* (a pressure, as the engine defines
it, capped by headroom) is laid end to end as intervals, and the group's replicas are
laid end to end over them in the same units: each replica lands on the node whose
interval holds its midpoint. So the batch is spread over nodes in proportion to their
room, in one ``searchsorted``. Then every landing is checked exactly (spread against the
shard's other replicas, the node not already holding the shard, every resource's
capacity in arrival order) and rejected replicas retry in the next round, at a higher
level when room ran out. Whatever is still unplaced after the last round is left to the
engine's one-at-a-time search.

One replica per shard is placed per round, so a shard's other replicas are always
settled when its spread is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from placement._arrays import stable_order

__all__ = ["place", "shed", "level_caps"]


class EngineArrays(Protocol):
    """What these kernels read and write on the engine (see greedy._Engine)."""

    nodes: np.ndarray  # (S, W) node of each replica slot, -1 empty; written
    load: np.ndarray  # (N, R) load per node; written
    limit: np.ndarray  # (N, R) headroom x capacity
    demand: np.ndarray  # (S, R)
    size: np.ndarray  # (S,) bytes
    dom: np.ndarray  # (N,) spread-level domain
    region: np.ndarray  # (N,)
    active: np.ndarray  # (N,) bool: may receive
    alive: np.ndarray  # (N,) bool: holds live data
    allowed_dom: np.ndarray  # (C, D) domains allowed per residency class
    res_class: np.ndarray  # (S,)
    required_regions: np.ndarray  # (S,)
    max_per_domain: int
    scale: np.ndarray  # (N, R) pressure = max_r load * scale
    unit: np.ndarray  # (R,) normalizer of each resource for interval lengths


def level_caps(e: EngineArrays, level: float | np.ndarray) -> np.ndarray:
    """Per node and resource, the load at which the node's pressure reaches *level*.

    *level* is one pressure for every resource or one per resource. Capped by headroom;
    resources with no pressure weight are capped by headroom only.
    """
    lv = np.broadcast_to(np.asarray(level, dtype=float), (e.scale.shape[1],))
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(e.scale > 0, lv[None, :] / e.scale, np.inf)
    return np.minimum(cap, e.limit)


def _others(
    e: EngineArrays, work: np.ndarray, shard: np.ndarray, slot: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The other live replicas of each item's shard: nodes, domains, regions (-1: none)."""
    rows = work[shard].astype(np.int64)  # (K, W)
    own = np.arange(rows.shape[1])[None, :] == slot[:, None]
    ok = (rows >= 0) & ~own
    ok[ok] = e.alive[rows[ok]]
    safe = np.maximum(rows, 0)
    return (
        np.where(ok, rows, -1),
        np.where(ok, e.dom[safe], -1),
        np.where(ok, e.region[safe], -1),
    )


def _mix(vec: np.ndarray) -> np.ndarray:
    """Resource mix of each row of non-negative amounts: a sort key (share of the first)."""
    if vec.shape[1] == 1:
        return np.zeros(vec.shape[0])
    total = vec.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, vec[:, 0] / total, 0.0)


def _distinct(values: np.ndarray) -> np.ndarray:
    """Distinct non-negative values per row of a small-width matrix."""
    k, w = values.shape
    count = np.zeros(k, dtype=np.int64)
    for j in range(w):
        new = values[:, j] >= 0
        for i in range(j):
            new &= values[:, i] != values[:, j]
        count += new
    return count


def _may_land(
    e: EngineArrays,
    tgt: np.ndarray,
    other_dom: np.ndarray,
    other_nodes: np.ndarray,
    source: np.ndarray,
) -> np.ndarray:
    """Whether each item may land on *tgt*: its domain holds fewer than max_per_domain of
    the shard's other replicas, the node does not hold the shard already, and it is not
    where the replica is (that would be no move)."""
    ok = (other_dom == e.dom[tgt][:, None]).sum(axis=1) < e.max_per_domain
    ok &= ~(other_nodes == tgt[:, None]).any(axis=1)
    return ok & (tgt != source)


def place(
    e: EngineArrays,
    shard: np.ndarray,
    slot: np.ndarray,
    *,
    levels: Sequence[float | np.ndarray],
    rng: np.random.Generator,
    home_rounds: int = 0,
    region_ok: np.ndarray | None = None,
    kind: np.ndarray | None = None,
    quota: np.ndarray | None = None,
    quota_rounds: int = 1 << 30,
    settle_within: np.ndarray | None = None,
    cheap_rounds: int = 0,
    cost_per_gb: np.ndarray | None = None,
    next_node: bool = True,
) -> np.ndarray:
    """Choose a target node for each (shard, slot) item; -1 where none was found.

    Items are tried in the given order (priority first). *levels* are the pressure
    levels of the successive rounds (``inf`` fills up to headroom). In the first
    *home_rounds* rounds an item may only land in a region that already holds a live
    replica of its shard (no transfer cost across regions). *region_ok* (K, regions)
    restricts each item's regions throughout (e.g. to keep its clients served). Spread
    and regions are judged on the placement after the move (the item's own slot
    excluded). Reads the engine only: the caller applies the returned targets.

    *kind* (K,) and *quota* (N, kinds) follow a plan of flows (the balance LP's): in the
    first *quota_rounds* rounds an item of kind ``t`` lands only on nodes with quota for
    ``t`` left, in proportion to it, and uses the quota up by its bytes; later rounds
    place the rest by room alone. Items that find no home stay, and landings are
    cancelled where that overfills a node beyond *settle_within* (N, R) (default: the
    highest level's caps; a node may always return to its load before the batch).

    In the *cheap_rounds* rounds after the home rounds an item may land in its home
    regions or in those it reaches at the lowest transfer cost per GB from a live
    replica of its shard (*cost_per_gb*: region x region). With *next_node*, an item
    laid on a node its shard may not use tries the next node of the layout at once.
    """
    k_items = shard.size
    target = np.full(k_items, -1, dtype=np.int64)
    if k_items == 0:
        return target
    load = e.load.copy()
    # The items leave their nodes: that room is usable by the other items of the batch
    # (a node hot in one resource may take replicas heavy in another).
    source = e.nodes[shard, slot].astype(np.int64)
    has = source >= 0
    np.add.at(load, source[has], -e.demand[shard[has]])
    work = e.nodes.copy()  # tentative placement: later rounds see earlier landings
    n_regions = int(e.region.max()) + 1 if e.region.size else 1
    home_all = np.zeros((k_items, n_regions), dtype=bool)
    cheap_all = np.ones((k_items, n_regions), dtype=bool)
    if home_rounds or cheap_rounds:
        rows = e.nodes[shard].astype(np.int64)
        live = rows >= 0
        live[live] = e.alive[rows[live]]
        rr, cc = np.nonzero(live)
        home_all[rr, e.region[rows[rr, cc]]] = True
        if cheap_rounds and cost_per_gb is not None and (cost_per_gb > 0).any():
            # Cheapest cost per GB to each region from any live replica (inf: none).
            from_live = np.where(
                live[:, :, None],
                cost_per_gb[e.region[np.maximum(rows, 0)], :n_regions],
                np.inf,
            ).min(axis=1)
            away = np.where(home_all, np.inf, from_live)
            cheapest = away.min(axis=1, keepdims=True)
            cheap_all = home_all | (away <= cheapest * (1 + 1e-9))
            cheap_all[~np.isfinite(cheapest[:, 0])] = True  # no live replica: anywhere
    use_quota = quota is not None and kind is not None
    quota_left = np.array(quota, dtype=float) if quota is not None else np.zeros((0, 0))
    pending = np.arange(k_items)
    for round_no, level in enumerate(levels):
        if pending.size == 0:
            break
        caps = level_caps(e, level)
        # One item per shard this round (the first in priority order).
        _, first = np.unique(shard[pending], return_index=True)
        first.sort()
        now = pending[first]
        later = np.setdiff1d(pending, now, assume_unique=True)
        s_now, j_now = shard[now], slot[now]
        other_nodes, other_dom, other_reg = _others(e, work, s_now, j_now)
        need_region = _distinct(other_reg) < e.required_regions[s_now]
        # Regions each item may land in this round: not those of its shard's other
        # replicas when it must add a region; in the first *home_rounds* rounds only
        # those that hold a live replica already (copies there cost no transfer).
        ok_region = (
            np.ones((now.size, n_regions), dtype=bool)
            if region_ok is None
            else region_ok[now, :n_regions].copy()
        )
        if need_region.any():
            rr, cc = np.nonzero((other_reg >= 0) & need_region[:, None])
            ok_region[rr, other_reg[rr, cc]] = False
        if round_no < home_rounds:
            home = home_all[now]
            anywhere = ~np.any(home, axis=1)  # no live replica: no home to prefer
            ok_region &= home | anywhere[:, None]
        elif round_no < home_rounds + cheap_rounds:
            ok_region &= cheap_all[now]
        item_vec = e.demand[s_now] / e.unit[None, :]
        item_mix = _mix(item_vec)
        # Group by (residency class, regions); the most restricted go first, so scarce
        # eligible room is not taken by replicas that could go anywhere.
        if n_regions <= 56:  # one integer code: the region bits, then the class
            bits = ok_region.astype(np.int64) @ (
                np.int64(1) << np.arange(n_regions, dtype=np.int64)
            )
            by_kind = use_quota and kind is not None and round_no < quota_rounds
            cls = kind[now] if by_kind and kind is not None else e.res_class[s_now]
            code = cls.astype(np.int64) * (np.int64(1) << n_regions) + bits
            _, first_of, inverse = np.unique(code, return_index=True, return_inverse=True)
        else:
            by_kind = use_quota and kind is not None and round_no < quota_rounds
            cls = kind[now] if by_kind and kind is not None else e.res_class[s_now]
            key = np.concatenate([cls[:, None].astype(np.int64), ok_region], axis=1)
            _, first_of, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        eligible = [
            e.allowed_dom[int(e.res_class[s_now[f]])][e.dom] & ok_region[f][e.region] & e.active
            for f in first_of.tolist()
        ]
        accepted = np.zeros(now.size, dtype=bool)
        for g in np.argsort([int(m.sum()) for m in eligible], kind="stable").tolist():
            members = np.flatnonzero(inverse == g)
            room_vec = (caps - load) / e.unit[None, :]
            open_ = eligible[g] & (room_vec > 0).all(axis=1)
            t_kind = -1
            if by_kind and kind is not None:
                t_kind = int(kind[now[members[0]]])
                open_ &= quota_left[:, t_kind] > 0
            cand = np.flatnonzero(open_)
            if cand.size == 0:
                continue
            # Several resources: lay out nodes and replicas both in order of their resource
            # mix, so that replicas heavy in one resource meet the nodes with room in it.
            cand = cand[np.argsort(_mix(room_vec[cand]), kind="stable")]
            members = members[np.argsort(item_mix[members], kind="stable")]
            if round_no:  # shift the layout so that retries land elsewhere
                cand = np.roll(cand, int(rng.integers(cand.size)))
            # Lengths in units of the group's average replica: a node's interval is how
            # many such replicas fit in every resource, a replica's is its largest share of
            # one; so replicas whose midpoints share an interval fit that node (but the last).
            mix = e.demand[s_now[members]].sum(axis=0) / e.unit
            mix = mix / max(float(mix.sum()), 1e-300)
            with np.errstate(divide="ignore", invalid="ignore"):
                node_len = np.where(mix[None, :] > 0, room_vec[cand] / mix[None, :], np.inf).min(
                    axis=1
                )
                sizes = np.where(mix[None, :] > 0, item_vec[members] / mix[None, :], 0.0).max(
                    axis=1
                )
            if t_kind >= 0:
                # The quota caps a node's interval (bytes -> the group's length units).
                per_unit = float(e.size[s_now[members]].sum()) / max(float(sizes.sum()), 1e-300)
                node_len = np.minimum(node_len, quota_left[cand, t_kind] / max(per_unit, 1e-300))
            cum = np.cumsum(node_len)
            total = float(cum[-1])
            # A batch smaller than the room is stretched over all of it (spread out).
            stretch = max(1.0, total / max(float(sizes.sum()), 1e-300))
            mid = (np.cumsum(sizes) - sizes / 2) * stretch
            where = np.minimum(np.searchsorted(cum, mid, side="right"), cand.size - 1)
            tgt = cand[where]
            inside = mid < total
            o_dom, o_nodes, src_now = other_dom[members], other_nodes[members], source[now[members]]
            ok = inside & _may_land(e, tgt, o_dom, o_nodes, src_now)
            # A replica laid on a node its shard may not use tries the next node of
            # the layout. (Otherwise it waits for the next round, and may land there
            # on the same node again: a lone item always lands mid-layout.)
            retry = np.flatnonzero(inside & ~ok)
            if next_node and retry.size and cand.size > 1:
                tgt_alt = tgt.copy()
                tgt_alt[retry] = cand[(where[retry] + 1) % cand.size]
                ok_alt = _may_land(e, tgt_alt, o_dom, o_nodes, src_now)
                take_alt = retry[ok_alt[retry]]
                tgt[take_alt] = tgt_alt[take_alt]
                ok[take_alt] = True
            idx = np.flatnonzero(ok)
            if idx.size == 0:
                continue
            # Capacity, exactly, in arrival order per node: a landing that overflows its
            # node is rejected (it retries next round) without freeing room for the rest.
            idx = idx[np.argsort(tgt[idx], kind="stable")]
            t_sorted = tgt[idx]
            dem = e.demand[s_now[members[idx]]]
            cum_dem = np.cumsum(dem, axis=0)
            starts = np.flatnonzero(np.r_[True, t_sorted[1:] != t_sorted[:-1]])
            lengths = np.diff(np.r_[starts, idx.size])
            within = cum_dem - np.repeat(cum_dem[starts] - dem[starts], lengths, axis=0)
            fit = (load[t_sorted] + within <= caps[t_sorted]).all(axis=1)
            sel = members[idx[fit]]
            t_sel = t_sorted[fit]
            accepted[sel] = True
            target[now[sel]] = t_sel
            np.add.at(load, t_sel, e.demand[s_now[sel]])
            if t_kind >= 0:
                np.subtract.at(quota_left[:, t_kind], t_sel, e.size[s_now[sel]])
        acc = now[accepted]
        work[shard[acc], slot[acc]] = target[acc]
        pending = np.sort(np.concatenate([now[~accepted], later]))
    target[target == source] = -1
    # An item that found no other home stays where it was and its load returns there,
    # which may overfill a node that took other items meanwhile: cancel the landings on
    # such nodes (their items stay too) until every node fits.
    stay = (target < 0) & has
    np.add.at(load, source[stay], e.demand[shard[stay]])
    limit = (
        level_caps(e, np.max(np.broadcast_arrays(*levels), axis=0))
        if settle_within is None
        else settle_within
    )
    for _ in range(64):
        over = (load > np.maximum(limit, e.load) * (1 + 1e-12)).any(axis=1)
        cancel = np.flatnonzero((target >= 0) & over[np.maximum(target, 0)])
        if cancel.size == 0:
            break
        # The shard's other landings were judged (spread) with this one in place.
        cancel = np.flatnonzero((target >= 0) & np.isin(shard, shard[cancel]))
        np.add.at(load, target[cancel], -e.demand[shard[cancel]])
        back = cancel[has[cancel]]
        np.add.at(load, source[back], e.demand[shard[back]])
        target[cancel] = -1
    else:  # pragma: no cover - each pass cancels at least one landing; 64 is ample
        target[:] = -1
    return target


def _segment_cumsum(values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Cumulative sum of *values* restarting at every change of the sorted *key*."""
    cum = np.cumsum(values)
    if values.size == 0:
        return cum
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lengths = np.diff(np.r_[starts, values.size])
    return cum - np.repeat(cum[starts] - values[starts], lengths)


def _segment_cumsum_2d(values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Column-wise :func:`_segment_cumsum` of a (K, R) array."""
    return (
        np.stack([_segment_cumsum(values[:, r], key) for r in range(values.shape[1])], axis=1)
        if values.size
        else values.copy()
    )


def _toward_need(
    node: np.ndarray, dem: np.ndarray, need: np.ndarray, unit: np.ndarray
) -> np.ndarray:
    """Mask of the replicas each node gives, closest in mix to its need first.

    *node* and *dem* (K, R) describe the candidate replicas, *need* (N, R) what each node
    must lose. Per node, replicas in decreasing cosine between their demand and the
    need (both in units of an average node's capacity), a prefix until every resource's
    need is met (the caller trims what turns out to be surplus).
    """
    x = dem / unit[None, :]
    v = need[node] / unit[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (x * v).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (v * v).sum(axis=1))
    # Closeness in 65,536 steps, so that both sorts are radix sorts of 16-bit integers
    # (0.1 s instead of 0.4 s for 2.5M replicas at tier L).
    step = np.clip((1.0 - np.nan_to_num(cos, nan=-1.0)) * 32767.5, 0, 65535).astype(np.uint16)
    order = np.argsort(step, kind="stable")
    order = order[stable_order(node[order], need.shape[0])]  # by node, then closeness
    nd, dd = node[order], dem[order]
    before = _segment_cumsum_2d(dd, nd) - dd  # what the node gave before this replica
    take = (before < need[nd]).any(axis=1)
    take &= _segment_cumsum((~take).astype(np.int64), nd) == 0  # a prefix per node
    out = np.zeros(node.size, dtype=bool)
    out[order[take]] = True
    return out


def shed(
    e: EngineArrays,
    caps: np.ndarray,
    frozen: np.ndarray,
    size_index: int,
    replicas_on: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replicas to take off nodes whose load exceeds *caps*, fewest bytes first.

    Per node and resource the *need* is the load above the cap. Resources are served in
    decreasing total need. Within a node, replicas are taken in order of how much of
    the resource they carry relative to the others (the others' room is what lets the
    node take other replicas in exchange), larger first; a prefix that stays within the
    need, then for the size resource the smallest replica that covers the rest (for
    another resource, the one that crosses the need). What an earlier pass removed
    counts for the later ones. *frozen* (S, W) marks slots that must not move;
    *replicas_on* may list the (shard, slot) pairs on given nodes faster than a scan.
    Returns (shard, slot), hottest nodes first.
    """
    need = np.maximum(e.load - caps, 0.0)
    need[~e.alive] = 0.0
    hot = (need > 0).any(axis=1)
    empty = np.zeros(0, dtype=np.int64)
    if not hot.any():
        return empty, empty
    if replicas_on is not None:
        rows, cols = replicas_on(np.flatnonzero(hot))
        keep = ~frozen[rows, cols]
        rows, cols = rows[keep], cols[keep]
    else:
        on = (e.nodes >= 0) & ~frozen
        on[on] = hot[e.nodes[on]]
        rows, cols = np.nonzero(on)
    node = e.nodes[rows, cols].astype(np.int64)
    dem = e.demand[rows]
    size = e.size[rows]
    chosen = np.zeros(rows.size, dtype=bool)
    # Nodes short in two or more resources give the replicas whose mix is closest to
    # their need's, until every need is met: what they shed then carries each resource
    # in about the proportion they must lose it. (Each resource's richest replicas
    # first made the shed replicas iops-heavy as a whole, so receivers filled up in
    # iops with disk to spare: tier L add 10% placed 4,374 of 5,221 TB in its first
    # round and ended at 4.08% imbalance; this way 4,697 TB and 3.58%.)
    need_u = need / e.unit[None, :]
    several = (need_u > 0).sum(axis=1) >= 2
    if several.any():
        mine = several[node]
        chosen[mine] = _toward_need(node[mine], dem[mine], need, e.unit)
        need = np.where(several[:, None], 0.0, need)  # the passes below skip them
    order_r = np.argsort(-(need / e.unit[None, :]).sum(axis=0), kind="stable")
    for r in order_r.tolist():
        need_r = need[:, r]
        if not (need_r > 0).any():
            continue
        ci = np.flatnonzero(~chosen & (need_r[node] > 0) & (dem[:, r] > 0))
        if ci.size == 0:
            continue
        norm = dem[ci] / e.unit[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(norm.sum(axis=1) > 0, norm[:, r] / norm.sum(axis=1), 0.0)
        # One float sort key instead of a three-key lexsort (4x faster at a million
        # replicas): node, then share in steps of 1/100 (spacing 0.015), then amount
        # (range 0.01, so it never crosses a share step).
        amount = dem[ci, r]
        key = (
            node[ci] * 4.0
            + (1.0 - np.round(share, 2)) * 1.5
            + (1.0 - amount / max(float(amount.max()), 1e-300)) * 0.01
        )
        ci = ci[np.argsort(key)]
        nd = node[ci]
        amount = dem[ci, r]
        goal = need_r[nd]
        if r == size_index:
            # Largest first while the running total stays within the need ...
            under = _segment_cumsum(amount, nd) <= goal
            # ... a prefix: stop at the first replica that would overshoot.
            first_over = _segment_cumsum((~under).astype(np.int64), nd) == 0
            take = under & first_over
            taken = np.bincount(nd[take], weights=amount[take], minlength=need.shape[0])
            rest = need_r - taken
            # ... then the smallest remaining replica that covers what is left.
            left = ~take & (amount >= rest[nd]) & (rest[nd] > 0)
            li = np.flatnonzero(left)
            if li.size:
                li = li[np.argsort(amount[li])]
                li = li[stable_order(nd[li], need.shape[0])]  # by node, then amount
                _, firsts = np.unique(nd[li], return_index=True)
                take[li[firsts]] = True
        else:
            before = _segment_cumsum(amount, nd) - amount
            take = before < goal
        sel = ci[take]
        chosen[sel] = True
        for rr in range(need.shape[1]):
            need[:, rr] -= np.bincount(node[sel], weights=dem[sel, rr], minlength=need.shape[0])
        np.maximum(need, 0.0, out=need)
    # Trim: the passes may together take more than needed (the second resource's pass
    # adds to what the first took). Give back, smallest first, what every resource's
    # surplus over its need can spare.
    need0 = np.maximum(e.load - caps, 0.0)
    idx = np.flatnonzero(chosen)
    idx = idx[np.argsort(size[idx])]
    idx = idx[stable_order(node[idx], need0.shape[0])]  # by node, then size
    nd = node[idx]
    removed = np.zeros_like(need0)
    for rr in range(need0.shape[1]):
        removed[:, rr] = np.bincount(nd, weights=dem[idx, rr], minlength=need0.shape[0])
    spare = removed - need0  # >= 0 where the need was covered
    back = (_segment_cumsum_2d(dem[idx], nd) <= spare[nd] * (1 - 1e-12)).all(axis=1)
    back &= _segment_cumsum(((~back).astype(np.int64)), nd) == 0  # a prefix per node
    chosen[idx[back]] = False
    idx = np.flatnonzero(chosen)
    with np.errstate(divide="ignore", invalid="ignore"):
        pressure = (e.load * e.scale).max(axis=1)
    idx = idx[np.lexsort((-size[idx], -pressure[node[idx]]))]
    return rows[idx].astype(np.int64), cols[idx].astype(np.int64)
