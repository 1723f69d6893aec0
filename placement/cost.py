"""What a plan costs to carry out: bytes, transfer cost and time per region pair.

:func:`cost_report` reads a :class:`~placement.plan.Plan` against the state it was made
for. Every move copies its shard from a *source*, the live replica (on an active or
draining node of the state's placement) whose region is cheapest to copy from, as
:func:`placement.plan.transfer_cost` prices it; among equally cheap replicas the one
with the lowest latency to the target, then the first in the row. A move whose shard has
no live replica left has no source region (its data must come from elsewhere) and costs
nothing to transfer.

Per (source region, target region) pair the report gives the moves, bytes, transfer
cost (GB x the region graph's cheapest-path ``cost_per_gb``) and an estimated transfer
time: the larger of the pair's bytes x 8 over the link bandwidth
(``RegionGraph.bandwidth_bps``, the bottleneck of the lowest-latency path; no limit
within a region) and, over the nodes taking part, the bytes a node sends or receives x 8
over its ``bandwidth_bps`` (nodes of unknown bandwidth are left out). It assumes the
pair's moves run alone, all at once, at full rate, so it is a lower bound; the plan's
``transfer_time_s`` applies the same bound to all moves together.
:func:`placement.schedule.schedule` gives the duration of an executable wave plan.

Cross-border volume: bytes whose source region differs from the target region
(``cross_region_bytes``, alerted above ``policy.cross_region_alert_bytes``, runbook
100 GB), and bytes copied into a region outside the shard's allowed regions
(``residency_breach_bytes``; a valid plan has none).

Examples
--------
>>> import placement
>>> from placement.scenarios import plan_geo
>>> st = placement.synthetic_state(30, 600, seed=2)
>>> p = plan_geo(st, compliance_goal=1.0, coverage_goal=1.0, max_moves=20)
>>> rep = cost_report(st, p)
>>> bool(abs(rep.bytes_moved - p.bytes_moved) < 1) and rep.residency_breach_bytes == 0
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.latency import latency_levels, move_benefit
from placement.model import State
from placement.plan import REASONS, Plan

__all__ = ["CostReport", "PairCost", "cost_report"]


@dataclass(frozen=True)
class PairCost:
    """Moves from one region to another (``source_region`` None: no live copy)."""

    source_region: str | None
    target_region: str
    moves: int
    bytes: float
    cost: float
    transfer_time_s: float | None

    @property
    def cross_region(self) -> bool:
        return self.source_region is not None and self.source_region != self.target_region


@dataclass(frozen=True, eq=False)
class CostReport:
    """Bytes, cost and time of a plan, by region pair. Build with :func:`cost_report`.

    Attributes
    ----------
    pairs : list of PairCost
        Largest volume first.
    source_node, source_region : ndarray of int64, shape (M,)
        The copy source of each move (-1 where no live replica).
    served_gain, covered_gain : ndarray of float64, shape (M,)
        Client demand each move brings within the latency target / into coverage
        (:func:`placement.latency.move_benefit`).
    bytes_moved, transfer_cost, cross_region_bytes, residency_breach_bytes : float
    transfer_time_s : float or None
        Lower bound on the time of all transfers (None when no bandwidth is known).
    alert_bytes : float
        ``policy.cross_region_alert_bytes``.
    alerts : list of str
    """

    state_sha256: str
    reasons: np.ndarray
    size_bytes: np.ndarray
    pairs: list[PairCost]
    source_node: np.ndarray
    source_region: np.ndarray
    served_gain: np.ndarray
    covered_gain: np.ndarray
    bytes_moved: float
    transfer_cost: float
    cross_region_bytes: float
    residency_breach_bytes: float
    transfer_time_s: float | None
    alert_bytes: float
    latency_target_ms: float
    alerts: list[str]

    @property
    def n_moves(self) -> int:
        return int(self.size_bytes.size)

    @property
    def benefit_per_byte(self) -> np.ndarray:
        """Client demand brought within the latency target per byte of each move."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.size_bytes > 0, self.served_gain / self.size_bytes, 0.0)

    def to_dict(self, *, max_moves: int = 0) -> dict[str, Any]:
        """JSON-ready; *max_moves* > 0 adds that many moves (best benefit per byte first)."""
        latency = self.reasons == REASONS.index("latency")
        per_gb = self.benefit_per_byte[latency] * 1e9
        out: dict[str, Any] = {
            "format": "placement.cost/1",
            "state_sha256": self.state_sha256,
            "moves": self.n_moves,
            "bytes_moved": self.bytes_moved,
            "transfer_cost": self.transfer_cost,
            "transfer_time_s": self.transfer_time_s,
            "cross_region_bytes": self.cross_region_bytes,
            "cross_region_alert_bytes": self.alert_bytes,
            "residency_breach_bytes": self.residency_breach_bytes,
            "alerts": list(self.alerts),
            "latency_target_ms": self.latency_target_ms,
            "served_gain": float(self.served_gain.sum()),
            "covered_gain": float(self.covered_gain.sum()),
            "latency_moves": int(latency.sum()),
            "latency_benefit_per_gb": {
                "min": float(per_gb.min()) if per_gb.size else None,
                "median": float(np.median(per_gb)) if per_gb.size else None,
                "max": float(per_gb.max()) if per_gb.size else None,
            },
            "pairs": [
                {
                    "source_region": p.source_region,
                    "target_region": p.target_region,
                    "moves": p.moves,
                    "bytes": p.bytes,
                    "cost": p.cost,
                    "transfer_time_s": p.transfer_time_s,
                    "cross_region": p.cross_region,
                }
                for p in self.pairs
            ],
        }
        if max_moves > 0:
            best = np.argsort(-self.benefit_per_byte, kind="stable")[:max_moves]
            out["top_moves"] = [
                {
                    "move": int(k),
                    "reason": REASONS[int(self.reasons[k])],
                    "bytes": float(self.size_bytes[k]),
                    "served_gain": float(self.served_gain[k]),
                    "covered_gain": float(self.covered_gain[k]),
                    "benefit_per_gb": float(self.benefit_per_byte[k] * 1e9),
                }
                for k in best.tolist()
            ]
        return out

    def to_json(self, *, indent: int | None = 2, max_moves: int = 0) -> str:
        return json.dumps(_finite(self.to_dict(max_moves=max_moves)), indent=indent)

    def to_text(self) -> str:
        """A table of region pairs and the totals, for a terminal."""
        lines = [
            f"plan cost  state {self.state_sha256[:12]}  {self.n_moves} moves  "
            f"{_gb(self.bytes_moved)} GB  ${self.transfer_cost:,.2f}  "
            f"time >= {_duration(self.transfer_time_s)}",
            "",
            f"{'from':<16}{'to':<16}{'moves':>8}{'GB':>12}{'cost $':>12}{'time >=':>12}",
        ]
        for p in self.pairs:
            lines.append(
                f"{(p.source_region or '(no copy)'):<16}{p.target_region:<16}{p.moves:>8}"
                f"{_gb(p.bytes):>12}{p.cost:>12,.2f}{_duration(p.transfer_time_s):>12}"
            )
        lines.append("")
        lines.append(
            f"cross-region {_gb(self.cross_region_bytes)} GB (alert above "
            f"{_gb(self.alert_bytes)} GB); into disallowed regions "
            f"{_gb(self.residency_breach_bytes)} GB"
        )
        latency = self.reasons == REASONS.index("latency")
        if latency.any():
            per_gb = self.benefit_per_byte[latency] * 1e9
            lines.append(
                f"latency moves {int(latency.sum())}: client demand within "
                f"{self.latency_target_ms:g} ms +{self.served_gain[latency].sum():,.1f}, "
                f"benefit per GB median {np.median(per_gb):,.3g} (max {per_gb.max():,.3g})"
            )
        if self.alerts:
            lines.append("")
            lines.append("alerts")
            lines.extend(f"  - {a}" for a in self.alerts)
        return "\n".join(lines)


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def copy_sources(
    state: State, nodes: np.ndarray, shard: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """The copy source node of each move (-1 when the shard has no live replica).

    Cheapest ``cost_per_gb`` from the replica's region to the target's, then lowest
    latency, then the first slot: the replica :func:`placement.plan.transfer_cost`
    prices.
    """
    c = state.cluster
    if shard.size == 0:
        return np.zeros(0, dtype=np.int64)
    rows = nodes[shard].astype(np.int64)
    present = rows >= 0
    safe = np.maximum(rows, 0)
    live = present & c.alive[safe]
    src_region = c.region_of[safe]
    dst_region = c.region_of[target][:, None]
    graph = c.region_graph
    cost = np.where(live, graph.cost_per_gb[src_region, dst_region], np.inf)
    lat = np.where(live, graph.latency_ms[src_region, dst_region], np.inf)
    cheapest = cost <= cost.min(axis=1, keepdims=True)
    pick = np.where(cheapest & live, lat, np.inf).argmin(axis=1)
    source = rows[np.arange(shard.size), pick]
    return np.where(live.any(axis=1), source, -1)


def cost_report(state: State, plan: Plan, *, latency_target_ms: float | None = None) -> CostReport:
    """Bytes, transfer cost and estimated time of a plan, per region pair.

    Parameters
    ----------
    state : State
        The state the plan was made for (its placement is where the moves start).
    plan : Plan
    latency_target_ms : float, optional
        Latency target of the per-move benefit (default: the policy's, else 50 ms).

    Returns
    -------
    CostReport
    """
    c, s = state.cluster, state.shards
    graph = c.region_graph
    n_regions = len(c.regions)
    nodes = state.placement.nodes
    shard = plan.shard.astype(np.int64)
    target = plan.target.astype(np.int64)
    size = s.demand[shard, c.size_index]
    cost = np.asarray(plan.cost, dtype=np.float64)

    source = copy_sources(state, nodes, shard, target)
    src_region = np.where(source >= 0, c.region_of[np.maximum(source, 0)], -1).astype(np.int64)
    dst_region = c.region_of[target].astype(np.int64)
    served_gain, covered_gain = move_benefit(
        state, nodes, shard, plan.source, target, target_ms=latency_target_ms
    )

    # Region pairs: source -1 (no copy) takes the extra row n_regions.
    pair = np.where(src_region >= 0, src_region, n_regions) * n_regions + dst_region
    n_pairs = (n_regions + 1) * n_regions
    moves = np.bincount(pair, minlength=n_pairs)
    bytes_ = np.bincount(pair, weights=size, minlength=n_pairs)
    costs = np.bincount(pair, weights=cost, minlength=n_pairs)

    link_bps = np.full(n_pairs, np.inf)
    inter = src_region >= 0
    link_bps[pair[inter]] = np.where(
        src_region[inter] != dst_region[inter],
        graph.bandwidth_bps[src_region[inter], dst_region[inter]],
        np.inf,
    )
    # NaN (unconnected regions) and inf (no bandwidth given) leave the link unknown.
    link_known = np.isfinite(link_bps) & (link_bps > 0)
    link_time = np.where(link_known, bytes_ * 8 / np.where(link_known, link_bps, 1.0), 0.0)
    node_time, node_known = _node_times(c.bandwidth_bps, pair, source, target, size, n_pairs)
    pair_time = np.maximum(link_time, node_time)
    pair_known = link_known | node_known

    pairs = []
    for p in np.flatnonzero(moves > 0)[np.argsort(-bytes_[moves > 0], kind="stable")].tolist():
        a, b = divmod(p, n_regions)
        pairs.append(
            PairCost(
                source_region=c.regions[a] if a < n_regions else None,
                target_region=c.regions[b],
                moves=int(moves[p]),
                bytes=float(bytes_[p]),
                cost=float(costs[p]),
                transfer_time_s=float(pair_time[p]) if pair_known[p] else None,
            )
        )

    # The whole plan: every pair's link and every node at once (full duplex per node).
    all_pairs = np.zeros(shard.size, dtype=np.int64)
    total_node, total_node_known = _node_times(c.bandwidth_bps, all_pairs, source, target, size, 1)
    times = [float(total_node[0])] if total_node_known[0] else []
    if link_known.any():
        times.append(float(link_time[link_known].max()))
    transfer_time = max(times) if times else None

    cross = (src_region >= 0) & (src_region != dst_region)
    allowed = s.allowed_regions[s.residency_class[shard], dst_region]
    cross_bytes = float(size[cross].sum())
    breach_bytes = float(size[~allowed].sum())
    alert_bytes = float(state.policy.cross_region_alert_bytes)
    alerts = []
    if cross_bytes > alert_bytes:
        alerts.append(
            f"cross-region volume {_gb(cross_bytes)} GB passes the alert level "
            f"{_gb(alert_bytes)} GB (policy.cross_region_alert_bytes): get approval, or "
            "plan with a smaller max_bytes."
        )
    if breach_bytes > 0:
        alerts.append(
            f"{_gb(breach_bytes)} GB would be copied into regions outside their shards' "
            "allowed regions (data residency): do not execute this plan."
        )
    return CostReport(
        state_sha256=plan.state_sha256,
        reasons=plan.reason.copy(),
        size_bytes=size,
        pairs=pairs,
        source_node=source,
        source_region=src_region,
        served_gain=served_gain,
        covered_gain=covered_gain,
        bytes_moved=float(size.sum()),
        transfer_cost=float(cost.sum()),
        cross_region_bytes=cross_bytes,
        residency_breach_bytes=breach_bytes,
        transfer_time_s=transfer_time,
        alert_bytes=alert_bytes,
        latency_target_ms=latency_levels(state.policy, target_ms=latency_target_ms).target_ms,
        alerts=alerts,
    )


def _node_times(
    bandwidth_bps: np.ndarray,
    pair: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    size: np.ndarray,
    n_pairs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the busiest node's bytes out (as a source) or in (as a target) x 8 over
    its bandwidth, and whether any node of the pair has a known bandwidth."""
    n_nodes = bandwidth_bps.shape[0]
    best = np.zeros(n_pairs)
    known = np.zeros(n_pairs, dtype=bool)
    for node in (source, target):
        ok = node >= 0
        key = pair[ok] * n_nodes + node[ok]
        uniq, inverse = np.unique(key, return_inverse=True)
        volume = np.bincount(inverse.reshape(-1), weights=size[ok], minlength=uniq.size)
        bw = bandwidth_bps[uniq % n_nodes]
        has = np.isfinite(bw) & (bw > 0)
        p = uniq // n_nodes
        np.maximum.at(best, p[has], volume[has] * 8 / bw[has])
        known[p[has]] = True
    return best, known
