"""The evaluation report: the operator's daily balance check of a cluster state.

:func:`evaluate` computes, in numpy, everything the runbook's check asks: utilization
per node and resource, the imbalance ratio per resource against the warning and
critical thresholds, replication health, every hard-constraint violation (through
:func:`placement.constraints.check`, the same meaning the planners are judged by),
regional coverage and latency compliance. A :class:`Report` renders itself as a dict /
JSON, a text table and Prometheus text exposition (metric names in ``docs/metrics.md``).

Definitions (interchange spec, "Shared definitions"):

* utilization of node n for resource r = load / capacity (``inf`` if the capacity is 0
  and the load is not);
* imbalance ratio of r = max over active nodes of utilization / (load on active nodes /
  capacity of active nodes) - 1; undefined (None) when r has no active capacity or load;
* regional coverage = share of client demand whose own region holds a live replica;
* latency compliance = share of client demand whose nearest live replica is within the
  latency target (and, separately, within the maximum). Without a latency model (several
  regions but no links) it is undefined.

The last two are computed by :mod:`placement.latency` (one meaning for the report and
the geo planner), where they are defined in full.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import KINDS, Violations, check, node_load
from placement.latency import (
    RUNBOOK_LATENCY_MAX_MS,
    RUNBOOK_LATENCY_TARGET_MS,
    ClientService,
    client_service,
)
from placement.model import NodeState, State

__all__ = ["RUNBOOK_LATENCY_MAX_MS", "RUNBOOK_LATENCY_TARGET_MS", "Report", "evaluate"]

_STATUS = ("ok", "warning", "critical")


@dataclass(frozen=True, eq=False)
class ResourceSummary:
    """Balance of one resource over the active nodes."""

    resource: str
    load: float
    active_capacity: float
    mean_utilization: float | None
    max_utilization: float | None
    max_node: str | None
    imbalance_ratio: float | None
    status: str
    alert: bool


@dataclass(frozen=True, eq=False)
class RegionSummary:
    """Capacity, load and client service of one region."""

    region: str
    nodes: int
    active_nodes: int
    replicas: int
    size_load: float
    size_capacity: float
    client_demand: float
    coverage: float | None
    latency_compliance: float | None


@dataclass(frozen=True, eq=False)
class Report:
    """Where a cluster stands. Build with :func:`evaluate`.

    Attributes
    ----------
    state : State
    load, utilization : ndarray, shape (N, R)
    resources : list of ResourceSummary
    violations : Violations
    regions : list of RegionSummary
    coverage : float or None
        Regional coverage over all client demand (None without client demand).
    latency_compliance, latency_max_compliance : float or None
    latency_target_ms, latency_max_ms : float
    latency_source : str
        ``"policy"`` or ``"runbook default"``.
    status : str
        ``ok``, ``warning`` or ``critical``.
    alerts : list of str
    """

    state: State
    load: np.ndarray
    utilization: np.ndarray
    resources: list[ResourceSummary]
    violations: Violations
    regions: list[RegionSummary]
    coverage: float | None
    latency_compliance: float | None
    latency_max_compliance: float | None
    latency_target_ms: float
    latency_max_ms: float
    latency_source: str
    status: str
    alerts: list[str] = field(default_factory=list)

    # -- renderings -------------------------------------------------------------------
    def to_dict(self, *, max_items: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict; *max_items* caps each violation list (counts stay complete)."""
        st = self.state
        c = st.cluster
        states = np.bincount(c.state, minlength=3)
        nodes = []
        for i, nid in enumerate(c.node_ids):
            nodes.append(
                {
                    "id": nid,
                    "state": NodeState(int(c.state[i])).name.lower(),
                    "region": c.regions[c.region_of[i]],
                    "utilization": {
                        r: _clean(self.utilization[i, j]) for j, r in enumerate(c.resources)
                    },
                }
            )
        return {
            "format": "placement.report/1",
            "state_sha256": st.sha256(),
            "status": self.status,
            "alerts": list(self.alerts),
            "nodes_total": c.n_nodes,
            "nodes_by_state": {s.name.lower(): int(states[s]) for s in NodeState},
            "shards_total": st.shards.n_shards,
            "replicas_total": int(self.violations.live_count.sum()),
            "thresholds": {
                "imbalance_warning": st.policy.imbalance_warning,
                "imbalance_critical": st.policy.imbalance_critical,
                "imbalance_alert": st.policy.imbalance_alert,
                "headroom": {r: float(h) for r, h in zip(c.resources, st.headroom, strict=True)},
                "latency_target_ms": self.latency_target_ms,
                "latency_max_ms": self.latency_max_ms,
                "latency_source": self.latency_source,
                "coverage_target": st.policy.coverage_target,
                "coverage_alert": st.policy.coverage_alert,
            },
            "resources": [{k: _clean(v) for k, v in vars(r).items()} for r in self.resources],
            "violation_counts": self.violations.counts(),
            "violations": self.violations.describe(st, limit=max_items),
            "coverage": _clean(self.coverage),
            "latency_compliance": _clean(self.latency_compliance),
            "latency_max_compliance": _clean(self.latency_max_compliance),
            "regions": [{k: _clean(v) for k, v in vars(r).items()} for r in self.regions],
            "nodes": nodes,
        }

    def to_json(self, *, indent: int | None = 2, max_items: int | None = None) -> str:
        return json.dumps(self.to_dict(max_items=max_items), indent=indent)

    def to_text(self, *, top: int = 10, max_items: int = 5) -> str:
        """A readable multi-table summary for a terminal."""
        st = self.state
        c = st.cluster
        lines = []
        states = np.bincount(c.state, minlength=3)
        lines.append(f"placement report  status: {self.status.upper()}  state {st.sha256()[:12]}")
        lines.append(
            f"nodes {c.n_nodes} (active {states[0]}, draining {states[1]}, failed {states[2]})  "
            f"shards {st.shards.n_shards}  live replicas {int(self.violations.live_count.sum())}"
        )
        lines.append("")
        lines.append(
            f"{'resource':<16}{'mean util':>10}{'max util':>10}  {'hottest node':<22}{'imbalance':>10}  status"
        )
        for r in self.resources:
            lines.append(
                f"{r.resource:<16}{_pct(r.mean_utilization):>10}{_pct(r.max_utilization):>10}  "
                f"{(r.max_node or '-'):<22}{_pct(r.imbalance_ratio):>10}  {r.status}{' ALERT' if r.alert else ''}"
            )
        lines.append(
            f"thresholds: warning {_pct(st.policy.imbalance_warning)}, critical "
            f"{_pct(st.policy.imbalance_critical)}, alert above {st.policy.imbalance_alert:g}; "
            f"headroom {', '.join(f'{r} {h:.0%}' for r, h in zip(c.resources, st.headroom, strict=True))}"
        )
        lines.append("")
        size = c.size_index
        order = np.argsort(-np.where(c.active, self.utilization[:, size], -np.inf), kind="stable")[
            :top
        ]
        lines.append(f"hottest active nodes ({c.size_resource})")
        for i in order:
            if not c.active[i]:
                continue
            lines.append(f"  {c.node_ids[i]:<24}{_pct(self.utilization[i, size]):>8}")
        others = np.flatnonzero(~c.active)
        if others.size:
            lines.append("nodes not active")
            for i in others[:top]:
                lines.append(f"  {c.node_ids[i]:<24}{NodeState(int(c.state[i])).name.lower()}")
            if others.size > top:
                lines.append(f"  ... and {others.size - top} more")
        lines.append("")
        counts = self.violations.counts()
        lines.append("hard constraints" + ("  (none violated)" if not self.violations else ""))
        described = self.violations.describe(st, limit=max_items)
        for kind in KINDS:
            if counts[kind]:
                examples = ", ".join(_brief(kind, d) for d in described[kind])
                more = f" ... (+{counts[kind] - max_items})" if counts[kind] > max_items else ""
                lines.append(f"  {kind:<17}{counts[kind]:>8}  {examples}{more}")
        lines.append("")
        lines.append(
            f"{'region':<14}{'nodes':>6}{'util':>8}{'clients':>10}{'coverage':>10}"
            f"{'<' + format(self.latency_target_ms, 'g') + 'ms':>10}"
        )
        for reg in self.regions:
            util = reg.size_load / reg.size_capacity if reg.size_capacity else None
            lines.append(
                f"{reg.region:<14}{reg.active_nodes:>6}{_pct(util):>8}{reg.client_demand:>10.0f}"
                f"{_pct(reg.coverage):>10}{_pct(reg.latency_compliance):>10}"
            )
        lines.append(
            f"regional coverage {_pct(self.coverage)} (target {st.policy.coverage_target:.0%}, alert "
            f"below {st.policy.coverage_alert:.0%}); latency within {self.latency_target_ms:g} ms "
            f"{_pct(self.latency_compliance)}, within {self.latency_max_ms:g} ms "
            f"{_pct(self.latency_max_compliance)} ({self.latency_source})"
        )
        if self.alerts:
            lines.append("")
            lines.append("alerts")
            lines.extend(f"  - {a}" for a in self.alerts)
        return "\n".join(lines)

    def to_prometheus(self) -> str:
        """Prometheus text exposition (format 0.0.4); names documented in docs/metrics.md."""
        st = self.state
        c = st.cluster
        out: list[str] = []

        def metric(
            name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float | None]]
        ) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                if value is None:
                    continue
                label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                out.append(
                    f"{name}{{{label}}} {_prom_value(value)}"
                    if label
                    else f"{name} {_prom_value(value)}"
                )

        metric(
            "placement_status",
            "gauge",
            "Overall status: 0 ok, 1 warning, 2 critical.",
            [({}, _STATUS.index(self.status))],
        )
        metric(
            "placement_imbalance_ratio",
            "gauge",
            "Max active-node utilization over the cluster mean, minus 1, per resource.",
            [({"resource": r.resource}, r.imbalance_ratio) for r in self.resources],
        )
        metric(
            "placement_imbalance_status",
            "gauge",
            "Imbalance status per resource: 0 ok, 1 warning, 2 critical.",
            [({"resource": r.resource}, _STATUS.index(r.status)) for r in self.resources],
        )
        metric(
            "placement_utilization_mean_ratio",
            "gauge",
            "Cluster mean utilization of active nodes per resource.",
            [({"resource": r.resource}, r.mean_utilization) for r in self.resources],
        )
        metric(
            "placement_nodes",
            "gauge",
            "Nodes per state.",
            [({"state": s.name.lower()}, float((c.state == s).sum())) for s in NodeState],
        )
        metric(
            "placement_node_up",
            "gauge",
            "Node health: 1 active, 0.5 draining, 0 failed.",
            [
                (
                    {"node": nid, "state": NodeState(int(c.state[i])).name.lower()},
                    (1.0, 0.5, 0.0)[int(c.state[i])],
                )
                for i, nid in enumerate(c.node_ids)
            ],
        )
        metric(
            "placement_node_utilization_ratio",
            "gauge",
            "Utilization (load / capacity) per node and resource.",
            [
                ({"node": nid, "resource": r}, float(self.utilization[i, j]))
                for i, nid in enumerate(c.node_ids)
                for j, r in enumerate(c.resources)
            ],
        )
        metric(
            "placement_shards", "gauge", "Shards in the state.", [({}, float(st.shards.n_shards))]
        )
        counts = self.violations.counts()
        metric(
            "placement_violations",
            "gauge",
            "Hard-constraint violations per kind.",
            [({"kind": k}, float(counts[k])) for k in KINDS],
        )
        metric(
            "placement_regional_coverage_ratio",
            "gauge",
            "Share of client demand whose region holds a live replica.",
            [({}, self.coverage)],
        )
        metric(
            "placement_latency_compliance_ratio",
            "gauge",
            "Share of client demand whose nearest live replica is within the latency level.",
            [
                ({"level": "target", "ms": f"{self.latency_target_ms:g}"}, self.latency_compliance),
                ({"level": "max", "ms": f"{self.latency_max_ms:g}"}, self.latency_max_compliance),
            ],
        )
        metric(
            "placement_region_coverage_ratio",
            "gauge",
            "Regional coverage of client demand per region.",
            [({"region": r.region}, r.coverage) for r in self.regions],
        )
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _prom_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _clean(value: Any) -> Any:
    """JSON has no inf/NaN: those become None (null)."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.1%}"


def _brief(kind: str, d: dict[str, object]) -> str:
    if kind == "capacity":
        return f"{d['node']}:{d['resource']} {_pct(d['utilization'])}"  # type: ignore[arg-type]
    if kind == "spread":
        return f"{d['shard']}@{d['domain']}x{d['replicas']}"
    if kind == "regions":
        return f"{d['shard']} ({d['regions']}/{d['required']})"
    if "node" in d:
        return f"{d['shard']}@{d['node']}"
    return f"{d['shard']} ({d['live']}/{d['replicas']})"


def _utilization(load: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        util = load / capacity
    util[(capacity == 0) & (load == 0)] = 0.0
    util[(capacity == 0) & (load > 0)] = np.inf
    return util


def evaluate(state: State, placement_nodes: np.ndarray | None = None) -> Report:
    """Evaluate a state (or another placement of its shards) against its policy.

    Parameters
    ----------
    state : State
    placement_nodes : ndarray of int, shape (S, W), optional
        Evaluate this placement instead of ``state.placement`` (e.g. a plan's target).

    Returns
    -------
    Report

    Examples
    --------
    >>> from placement.datasets import example_state
    >>> r = evaluate(example_state())
    >>> r.status, r.violations.counts()["failed"] > 0
    ('critical', True)
    """
    c, pol = state.cluster, state.policy
    nodes = state.placement.nodes if placement_nodes is None else placement_nodes
    load = node_load(state, nodes)
    violations = check(state, nodes, load=load)
    utilization = _utilization(load, c.capacity)

    active = c.active
    resources = []
    for j, name in enumerate(c.resources):
        act_load = float(load[active, j].sum())
        act_cap = float(c.capacity[active, j].sum())
        mean = act_load / act_cap if act_cap > 0 else None
        if active.any():
            util_j = utilization[active, j]
            k = int(np.argmax(util_j))
            max_util: float | None = float(util_j[k])
            max_node: str | None = c.node_ids[int(np.flatnonzero(active)[k])]
        else:
            max_util, max_node = None, None
        ratio = max_util / mean - 1 if mean and max_util is not None else None
        if ratio is not None and not math.isfinite(ratio):
            ratio = math.inf
        status = "ok"
        if ratio is not None:
            if ratio >= pol.imbalance_critical:
                status = "critical"
            elif ratio >= pol.imbalance_warning:
                status = "warning"
        resources.append(
            ResourceSummary(
                resource=name,
                load=float(load[:, j].sum()),
                active_capacity=act_cap,
                mean_utilization=mean,
                max_utilization=max_util,
                max_node=max_node,
                imbalance_ratio=ratio,
                status=status,
                alert=ratio is not None and ratio > pol.imbalance_alert,
            )
        )

    service = client_service(state, nodes)
    levels = service.levels

    regions = _region_summaries(state, nodes, load, service)
    status_rank, alerts = _status(state, resources, violations, service)
    return Report(
        state=state,
        load=load,
        utilization=utilization,
        resources=resources,
        violations=violations,
        regions=regions,
        coverage=service.coverage,
        latency_compliance=service.compliance,
        latency_max_compliance=service.max_compliance,
        latency_target_ms=levels.target_ms,
        latency_max_ms=levels.max_ms,
        latency_source=levels.source,
        status=_STATUS[status_rank],
        alerts=alerts,
    )


def _region_summaries(
    state: State, nodes: np.ndarray, load: np.ndarray, service: ClientService
) -> list[RegionSummary]:
    c = state.cluster
    n_regions = len(c.regions)
    size = c.size_index
    region = c.region_of
    present = nodes >= 0
    replicas_per_region = np.bincount(region[nodes[present]], minlength=n_regions)
    node_count = np.bincount(region, minlength=n_regions)
    active_count = np.bincount(region[c.active], minlength=n_regions)
    size_load = np.bincount(region[c.active], weights=load[c.active, size], minlength=n_regions)
    size_cap = np.bincount(
        region[c.active], weights=c.capacity[c.active, size], minlength=n_regions
    )
    per_region = service.by_region(n_regions)
    demand, covered, served = per_region["demand"], per_region["covered"], per_region["served"]
    out = []
    for r, name in enumerate(c.regions):
        has = demand[r] > 0
        out.append(
            RegionSummary(
                region=name,
                nodes=int(node_count[r]),
                active_nodes=int(active_count[r]),
                replicas=int(replicas_per_region[r]),
                size_load=float(size_load[r]),
                size_capacity=float(size_cap[r]),
                client_demand=float(demand[r]),
                coverage=float(covered[r] / demand[r]) if has else None,
                latency_compliance=float(served[r] / demand[r])
                if has and service.has_latency
                else None,
            )
        )
    return out


def _status(
    state: State, resources: list[ResourceSummary], v: Violations, service: ClientService
) -> tuple[int, list[str]]:
    """Overall status rank (0 ok, 1 warning, 2 critical) and the alert lines."""
    pol = state.policy
    c = state.cluster
    rank = max((_STATUS.index(r.status) for r in resources), default=0)
    alerts = []
    for r in resources:
        if r.alert:
            alerts.append(
                f"{r.resource} imbalance {_pct(r.imbalance_ratio)} above the alert level "
                f"{pol.imbalance_alert:g} (hottest node {r.max_node})."
            )
    counts = v.counts()
    if counts["unavailable"] or counts["below_min"]:
        rank = 2
        alerts.append(
            f"{counts['below_min']} shards below min_available ({counts['unavailable']} with no live "
            "replica): restore replication first."
        )
    if counts["capacity"]:
        over_full = bool((v.capacity_load > c.capacity[v.capacity[:, 0], v.capacity[:, 1]]).any())
        rank = max(rank, 2 if over_full else 1)
        alerts.append(f"{counts['capacity']} node-resource pairs above headroom.")
    if counts["under_replicated"] and not counts["below_min"]:
        rank = max(rank, 1)
        alerts.append(f"{counts['under_replicated']} shards under-replicated.")
    structural = (
        counts["failed"]
        + counts["draining"]
        + counts["spread"]
        + counts["regions"]
        + counts["residency"]
    )
    if structural:
        rank = max(rank, 1)
        if counts["failed"]:
            alerts.append(
                f"{counts['failed']} replicas on failed nodes must be re-created elsewhere."
            )
        if counts["residency"]:
            rank = 2
            alerts.append(
                f"{counts['residency']} replicas outside their allowed regions (data residency)."
            )
    if service.coverage is not None and service.coverage < pol.coverage_alert:
        rank = max(rank, 1)
        alerts.append(
            f"regional coverage {_pct(service.coverage)} below the alert level {pol.coverage_alert:.0%}."
        )
    return rank, alerts
