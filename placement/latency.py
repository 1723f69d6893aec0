"""Client latency, SLO compliance and regional coverage of a placement, in numpy.

One meaning for the report (:func:`placement.evaluate`), the geo planner
(:mod:`placement.solvers.geo`) and the tests. Everything works on the *entries* of the
shards' client matrix (``Shards.clients``, a CSR ``[S, n_regions]`` of client demand):
one entry per (shard, client region) with positive demand, so a million shards with one
or two client regions each cost a few million array cells, never a Python loop.

Definitions
-----------
For a placement (an ``(S, W)`` node matrix) and an entry (shard ``s``, client region
``c``, demand ``w``):

* the **nearest-replica latency** is ``min`` over the live replicas of ``s`` (on active
  or draining nodes) of ``latency_ms[c, region(replica)]``, the shortest-path latency of
  :class:`~placement.model.RegionGraph` (0 ms within a region); ``inf`` when the shard
  has no live replica. Without a latency model (several regions but no links) every
  live replica counts as 0 ms and the latency figures below are undefined (None);
* the entry is **served** when that latency is at most ``latency_target_ms`` and
  **tolerable** when it is at most ``latency_max_ms``;
* the entry is **covered** when its own region ``c`` holds a live replica.

Aggregates, each over all client demand (None when there is none):

* **compliance** = served demand / total demand (the SLO compliance);
* **max compliance** = tolerable demand / total demand;
* **coverage** = covered demand / total demand (regional coverage; the runbook aims at
  ``policy.coverage_target`` = 80% and alerts below ``policy.coverage_alert`` = 75%);
* **mean latency** = demand-weighted mean of the nearest-replica latency over the entries
  whose shard has a live replica (lost shards are counted by :func:`placement.check`).

The per-shard **SLO constraint**: every client region holding at least ``share`` of a
shard's client demand has a replica within ``latency_max_ms``
(:func:`slo_violations`). Latency levels come from the policy, else the runbook's 50 ms
target and 100 ms maximum (:func:`latency_levels`).

Examples
--------
>>> import placement
>>> st = placement.example_state()
>>> svc = client_service(st)
>>> 0.0 <= svc.compliance <= 1.0 and 0.0 <= svc.coverage <= 1.0
True
>>> svc.compliance == placement.evaluate(st).latency_compliance
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.errors import InvalidValueError
from placement.model import Policy, State

__all__ = [
    "DEFAULT_SLO_SHARE",
    "RUNBOOK_LATENCY_MAX_MS",
    "RUNBOOK_LATENCY_TARGET_MS",
    "ClientService",
    "LatencyLevels",
    "achievable_compliance",
    "client_service",
    "coverage_status",
    "latency_levels",
    "move_benefit",
    "slo_violations",
]

#: Latency levels used when the policy sets none (the runbook's figures).
RUNBOOK_LATENCY_TARGET_MS = 50.0
RUNBOOK_LATENCY_MAX_MS = 100.0
#: Smallest share of a shard's client demand whose region the SLO constraint protects:
#: client regions below it are too small to justify a replica of their own.
DEFAULT_SLO_SHARE = 0.2


@dataclass(frozen=True)
class LatencyLevels:
    """The latency target and maximum in force, and where they come from.

    Attributes
    ----------
    target_ms : float
        Client demand within this latency counts as served.
    max_ms : float
        The tolerable maximum (at least ``target_ms``).
    source : str
        ``"policy"`` or ``"runbook default"``.
    """

    target_ms: float
    max_ms: float
    source: str


def latency_levels(
    policy: Policy, *, target_ms: float | None = None, max_ms: float | None = None
) -> LatencyLevels:
    """The latency levels of a policy, optionally overridden.

    ``target_ms`` defaults to ``policy.latency_target_ms``, else the runbook's 50 ms;
    ``max_ms`` to ``policy.latency_max_ms``, else the larger of 100 ms and the target.

    Raises
    ------
    InvalidValueError
        An override is negative or not finite, or the maximum is below the target.

    Examples
    --------
    >>> latency_levels(Policy())
    LatencyLevels(target_ms=50.0, max_ms=100.0, source='runbook default')
    >>> latency_levels(Policy(latency_target_ms=30), max_ms=80).max_ms
    80.0
    """
    for name, value in (("target_ms", target_ms), ("max_ms", max_ms)):
        if value is not None and not (
            isinstance(value, (int, float)) and np.isfinite(value) and value >= 0
        ):
            raise InvalidValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    source = "policy" if policy.latency_target_ms is not None else "runbook default"
    if target_ms is not None:
        source = "argument"
    else:
        target_ms = (
            policy.latency_target_ms
            if policy.latency_target_ms is not None
            else RUNBOOK_LATENCY_TARGET_MS
        )
    if max_ms is None:
        max_ms = (
            policy.latency_max_ms
            if policy.latency_max_ms is not None
            else max(RUNBOOK_LATENCY_MAX_MS, float(target_ms))
        )
        max_ms = max(float(max_ms), float(target_ms))
    if max_ms < target_ms:
        raise InvalidValueError(
            f"max_ms ({max_ms}) is below target_ms ({target_ms}); the maximum must be the larger."
        )
    return LatencyLevels(float(target_ms), float(max_ms), source)


@dataclass(frozen=True, eq=False)
class ClientService:
    """How well one placement serves its clients, per entry of the clients matrix.

    Build with :func:`client_service`. Entry ``e`` is shard ``entry_shard[e]``'s demand
    ``weight[e]`` from region ``entry_region[e]``, in the CSR order of
    ``Shards.clients`` (shard-major).

    Attributes
    ----------
    entry_shard, entry_region : ndarray of int64, shape (E,)
    weight : ndarray of float64, shape (E,)
    nearest_ms : ndarray of float64, shape (E,)
        Latency to the nearest live replica (``inf`` without one; 0 for every live
        replica when there is no latency model).
    local : ndarray of bool, shape (E,)
        The client region holds a live replica.
    levels : LatencyLevels
    has_latency : bool
        False when the cluster has several regions but no links: latency is undefined.
    """

    entry_shard: np.ndarray
    entry_region: np.ndarray
    weight: np.ndarray
    nearest_ms: np.ndarray
    local: np.ndarray
    levels: LatencyLevels
    has_latency: bool

    @property
    def total_demand(self) -> float:
        return float(self.weight.sum())

    @property
    def served(self) -> np.ndarray:
        """Entries within the latency target, shape (E,)."""
        return self.nearest_ms <= self.levels.target_ms

    @property
    def tolerable(self) -> np.ndarray:
        """Entries within the latency maximum, shape (E,)."""
        return self.nearest_ms <= self.levels.max_ms

    def _share(self, mask: np.ndarray, *, needs_latency: bool) -> float | None:
        total = self.total_demand
        if total <= 0 or (needs_latency and not self.has_latency):
            return None
        return float(self.weight[mask].sum() / total)

    @property
    def coverage(self) -> float | None:
        """Share of client demand whose own region holds a live replica."""
        return self._share(self.local, needs_latency=False)

    @property
    def compliance(self) -> float | None:
        """Share of client demand whose nearest live replica is within the target."""
        return self._share(self.served, needs_latency=True)

    @property
    def max_compliance(self) -> float | None:
        """Share of client demand whose nearest live replica is within the maximum."""
        return self._share(self.tolerable, needs_latency=True)

    @property
    def mean_latency_ms(self) -> float | None:
        """Demand-weighted mean nearest-replica latency over entries with a live replica."""
        reach = np.isfinite(self.nearest_ms)
        total = float(self.weight[reach].sum())
        if not self.has_latency or total <= 0:
            return None
        return float((self.weight[reach] * self.nearest_ms[reach]).sum() / total)

    def by_region(self, n_regions: int) -> dict[str, np.ndarray]:
        """Client demand, covered demand and served demand per client region, each (R,)."""
        reg, w = self.entry_region, self.weight
        return {
            "demand": np.bincount(reg, weights=w, minlength=n_regions),
            "covered": np.bincount(reg, weights=w * self.local, minlength=n_regions),
            "served": np.bincount(reg, weights=w * self.served, minlength=n_regions),
        }

    def summary(self) -> dict[str, float | None]:
        """The aggregates as a JSON-ready dict."""
        return {
            "latency_target_ms": self.levels.target_ms,
            "latency_max_ms": self.levels.max_ms,
            "compliance": self.compliance,
            "max_compliance": self.max_compliance,
            "coverage": self.coverage,
            "mean_latency_ms": self.mean_latency_ms,
            "client_demand": self.total_demand,
        }


def _entries(state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clients = state.shards.clients.tocsr()
    shard = np.repeat(np.arange(state.shards.n_shards, dtype=np.int64), np.diff(clients.indptr))
    return shard, clients.indices.astype(np.int64), np.asarray(clients.data, dtype=np.float64)


def _replica_regions(state: State, rows: np.ndarray) -> np.ndarray:
    """Region of each live replica of *rows* (an (E, W) node matrix), -1 where none."""
    c = state.cluster
    present = rows >= 0
    safe = np.where(present, rows, 0)
    live = present & c.alive[safe]
    return np.where(live, c.region_of[safe], -1)


def _nearest(latency_ms: np.ndarray, client: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Latency from each client region to the nearest of its row's regions (-1: none)."""
    if regions.shape[1] == 0:
        return np.full(client.shape[0], np.inf)
    lat = latency_ms[client[:, None], np.maximum(regions, 0)]
    return np.where(regions >= 0, lat, np.inf).min(axis=1)


def client_service(
    state: State,
    nodes: np.ndarray | None = None,
    *,
    target_ms: float | None = None,
    max_ms: float | None = None,
    since: tuple[ClientService, np.ndarray] | None = None,
) -> ClientService:
    """Nearest-replica latency, service and coverage of every client entry.

    Parameters
    ----------
    state : State
    nodes : ndarray of int, shape (S, W), optional
        The placement to judge; defaults to ``state.placement.nodes``.
    target_ms, max_ms : float, optional
        Override the policy's latency levels (see :func:`latency_levels`).
    since : (ClientService, ndarray), optional
        The service of another placement (same levels) and the shard indices where
        *nodes* differs from it: only their entries are computed again (a plan that
        changes a few hundred of a million shards).

    Returns
    -------
    ClientService

    Examples
    --------
    >>> from placement import Cluster, Placement, Policy, Shards, State
    >>> c = Cluster.build(node_ids=["a", "b", "c"], resources=["disk_bytes"],
    ...     capacity=[[1e12]] * 3, levels=["region"], location=[["eu"], ["eu"], ["us"]],
    ...     links=[{"a": "eu", "b": "us", "latency_ms": 80}])
    >>> s = Shards.build(c, demand=[1e9], replicas=2, clients=[[3.0, 1.0]])
    >>> st = State(c, s, Placement.build([[0, 1]], n_nodes=3), Policy())
    >>> svc = client_service(st)
    >>> svc.nearest_ms.tolist(), svc.compliance, svc.max_compliance, svc.coverage
    ([0.0, 80.0], 0.75, 1.0, 0.75)
    >>> svc.mean_latency_ms
    20.0
    """
    nodes = state.placement.nodes if nodes is None else nodes
    levels = latency_levels(state.policy, target_ms=target_ms, max_ms=max_ms)
    graph = state.cluster.region_graph
    has_latency = graph.has_latency_model
    if since is not None and since[0].levels == levels:
        old, changed = since
        shard, region, weight = old.entry_shard, old.entry_region, old.weight
        mask = np.zeros(state.shards.n_shards, dtype=bool)
        mask[np.asarray(changed, dtype=np.int64)] = True
        redo = np.flatnonzero(mask[shard])
        nearest, local = old.nearest_ms.copy(), old.local.copy()
        nearest[redo], local[redo] = _serve(state, nodes, shard[redo], region[redo])
        return ClientService(shard, region, weight, nearest, local, levels, has_latency)
    shard, region, weight = _entries(state)
    nearest, local = _serve(state, nodes, shard, region)
    return ClientService(shard, region, weight, nearest, local, levels, has_latency)


def _serve(
    state: State, nodes: np.ndarray, shard: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-replica latency and locality of the client entries (shard, region)."""
    regions = _replica_regions(state, nodes[shard])
    local = (regions == region[:, None]).any(axis=1)
    graph = state.cluster.region_graph
    if graph.has_latency_model:
        nearest = _nearest(graph.latency_ms, region, regions)
    else:
        # No latency model: any live replica is as good as another (0 ms); the
        # aggregates that need latency report None.
        nearest = np.where((regions >= 0).any(axis=1), 0.0, np.inf)
    return nearest, local


def slo_violations(
    state: State,
    nodes: np.ndarray | None = None,
    *,
    share: float = DEFAULT_SLO_SHARE,
    max_ms: float | None = None,
    service: ClientService | None = None,
) -> np.ndarray:
    """(shard, client region) pairs that break the per-shard latency SLO.

    The constraint: every client region holding at least *share* of a shard's client
    demand has a live replica within *max_ms* (default: the policy's
    ``latency_max_ms``, else the runbook's 100 ms). A shard without client demand, or a
    cluster without a latency model, has no SLO to break.

    Parameters
    ----------
    state : State
    nodes : ndarray of int, shape (S, W), optional
    share : float
        In (0, 1].
    max_ms : float, optional
    service : ClientService, optional
        A precomputed :func:`client_service` of *nodes* (its ``max_ms`` is used when
        *max_ms* is None).

    Returns
    -------
    ndarray of int64, shape (k, 2)
        Shard index and client region index of each breach, in shard order.

    Examples
    --------
    >>> from placement import Cluster, Placement, Policy, Shards, State
    >>> c = Cluster.build(node_ids=["a", "b"], resources=["disk_bytes"],
    ...     capacity=[[1e12]] * 2, levels=["region"], location=[["eu"], ["ap"]],
    ...     links=[{"a": "eu", "b": "ap", "latency_ms": 150}])
    >>> s = Shards.build(c, demand=[1e9, 1e9], replicas=1, clients=[[9.0, 1.0], [5.0, 5.0]])
    >>> st = State(c, s, Placement.build([[0], [0]], n_nodes=2), Policy())
    >>> slo_violations(st).tolist()  # shard 0's 10% in ap is below the 20% share
    [[1, 1]]
    """
    if not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise InvalidValueError(f"share must be in (0, 1], got {share!r}.")
    if service is None:
        service = client_service(state, nodes, max_ms=max_ms)
    if not service.has_latency:
        return np.zeros((0, 2), dtype=np.int64)
    limit = service.levels.max_ms if max_ms is None else float(max_ms)
    major = _major(state, service, share)
    bad = major & (service.nearest_ms > limit)
    return np.column_stack([service.entry_shard[bad], service.entry_region[bad]]).astype(np.int64)


def _major(state: State, service: ClientService, share: float) -> np.ndarray:
    """Entries holding at least *share* of their shard's client demand."""
    per_shard = np.bincount(
        service.entry_shard, weights=service.weight, minlength=state.shards.n_shards
    )
    # A relative epsilon so that a region at exactly the share counts despite rounding.
    return (service.weight > 0) & (
        service.weight >= share * per_shard[service.entry_shard] * (1 - 1e-12)
    )


def coverage_status(policy: Policy, coverage: float | None) -> str:
    """``"ok"`` at or above ``policy.coverage_target``, ``"alert"`` below
    ``policy.coverage_alert``, ``"below target"`` between, ``"n/a"`` without client demand.

    >>> coverage_status(Policy(), 0.78), coverage_status(Policy(), 0.7)
    ('below target', 'alert')
    """
    if coverage is None:
        return "n/a"
    if coverage >= policy.coverage_target:
        return "ok"
    return "alert" if coverage < policy.coverage_alert else "below target"


def achievable_compliance(
    state: State, *, target_ms: float | None = None, service: ClientService | None = None
) -> float | None:
    """The highest compliance residency allows: the share of client demand whose region
    is within the target of at least one allowed region that has an active node.

    An upper bound for any placement (capacity, spread and replication may allow less).

    >>> import placement
    >>> st = placement.example_state()
    >>> achievable_compliance(st) >= client_service(st).compliance
    True
    """
    c, s = state.cluster, state.shards
    if service is None:
        service = client_service(state, target_ms=target_ms)
    if not service.has_latency or service.total_demand <= 0:
        return None
    n_regions = len(c.regions)
    has_active = np.bincount(c.region_of[c.active], minlength=n_regions) > 0
    near = c.region_graph.latency_ms <= service.levels.target_ms  # (client, replica region)
    # Per residency class and client region: some allowed region with nodes is near.
    ok = (s.allowed_regions & has_active[None, :]).astype(np.int64) @ near.T.astype(np.int64) > 0
    servable = ok[s.residency_class[service.entry_shard], service.entry_region]
    return float(service.weight[servable].sum() / service.total_demand)


def move_benefit(
    state: State,
    nodes: np.ndarray,
    shard: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    *,
    target_ms: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Client demand each move brings within the latency target, and into coverage.

    The moves are applied in order to *nodes* (a move replaces its shard's replica on
    ``source``, or fills an empty slot when ``source`` is -1); a move's gain is the
    change of its shard's served (covered) client demand from just before to just after
    it, so the gains of a shard's moves add up to its total change. Negative when a move
    gives service up (e.g. a drain away from the clients).

    Parameters
    ----------
    state : State
    nodes : ndarray of int, shape (S, W)
        The placement the moves start from.
    shard, source, target : ndarray of int, shape (M,)
    target_ms : float, optional

    Returns
    -------
    served_gain, covered_gain : ndarray of float64, shape (M,)

    Examples
    --------
    >>> from placement import Cluster, Placement, Policy, Shards, State
    >>> c = Cluster.build(node_ids=["a", "b", "c"], resources=["disk_bytes"],
    ...     capacity=[[1e12]] * 3, levels=["region"], location=[["eu"], ["eu"], ["us"]],
    ...     links=[{"a": "eu", "b": "us", "latency_ms": 80}])
    >>> s = Shards.build(c, demand=[1e9], replicas=2, clients=[[3.0, 1.0]])
    >>> st = State(c, s, Placement.build([[0, 1]], n_nodes=3), Policy())
    >>> g = move_benefit(st, st.placement.nodes, np.array([0]), np.array([1]), np.array([2]))
    >>> g[0].tolist(), g[1].tolist()
    ([1.0], [1.0])
    """
    shard = np.asarray(shard, dtype=np.int64)
    source = np.asarray(source, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    served_gain = np.zeros(shard.size)
    covered_gain = np.zeros(shard.size)
    if shard.size == 0:
        return served_gain, covered_gain
    levels = latency_levels(state.policy, target_ms=target_ms)
    c = state.cluster
    graph = c.region_graph
    clients = state.shards.clients.tocsr()
    # Only the moved shards matter: work on their rows, one pass per rank of a move
    # within its shard (at most a few), each pass vectorized over shards.
    uniq, local_index = np.unique(shard, return_inverse=True)
    rows = np.array(nodes[uniq], dtype=np.int64)
    dense = clients[uniq].toarray()  # (U, n_regions) client demand
    near = (
        graph.latency_ms <= levels.target_ms
        if graph.has_latency_model
        else np.ones(graph.latency_ms.shape, dtype=bool)
    )

    def metrics(r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        regions = _replica_regions(state, r)
        n_reg = d.shape[1]
        has = np.zeros((r.shape[0], n_reg), dtype=bool)
        rr, cc = np.nonzero(regions >= 0)
        has[rr, regions[rr, cc]] = True
        served_regions = has.astype(np.int64) @ near.T.astype(np.int64) > 0  # (U, client)
        return (d * served_regions).sum(axis=1), (d * has).sum(axis=1)

    order = np.argsort(local_index, kind="stable")
    sorted_local = local_index[order]
    starts = np.searchsorted(sorted_local, sorted_local, side="left")
    rank = np.empty(shard.size, dtype=np.int64)
    rank[order] = np.arange(shard.size) - starts
    served, covered = metrics(rows, dense)
    for k in range(int(rank.max()) + 1):
        idx = np.flatnonzero(rank == k)
        u = local_index[idx]  # distinct within a pass: one move per shard
        hit = rows[u] == np.maximum(source[idx], -1)[:, None]
        if not hit.any(axis=1).all():
            m = int(idx[np.flatnonzero(~hit.any(axis=1))[0]])
            raise InvalidValueError(
                f"Move {m}: shard index {shard[m]} has no replica on node {source[m]} "
                "(or no free slot for a created replica)."
            )
        rows[u, hit.argmax(axis=1)] = target[idx]
        new_served, new_covered = metrics(rows[u], dense[u])
        served_gain[idx] = new_served - served[u]
        covered_gain[idx] = new_covered - covered[u]
        served[u], covered[u] = new_served, new_covered
    return served_gain, covered_gain


def regions_keeping_service(
    state: State, nodes: np.ndarray, shard: np.ndarray, slot: np.ndarray, target_ms: float
) -> np.ndarray:
    """For replicas about to move, the regions they may go to without serving less.

    Returns a bool matrix (K, regions): moving replica ``(shard[k], slot[k])`` into region
    r keeps at least as much of its shard's client demand within *target_ms* as now
    (with the other replicas of *nodes* where they are). Shards without clients may go
    anywhere. Balance moves use this so that only repairs can lower latency compliance.

    Examples
    --------
    >>> from placement.datasets import synthetic_state
    >>> st = synthetic_state(30, 200, seed=0)
    >>> ok = regions_keeping_service(st, st.placement.nodes, np.arange(5), np.zeros(5, int), 50.0)
    >>> ok.shape, bool(ok[np.arange(5), st.cluster.region_of[st.placement.nodes[:5, 0]]].all())
    ((5, 5), True)
    """
    c = state.cluster
    n_regions = len(c.regions)
    k_items = shard.size
    out = np.ones((k_items, n_regions), dtype=bool)
    if k_items == 0 or state.shards.clients.nnz == 0:
        return out
    clients = state.shards.clients.tocsr()
    start, stop = clients.indptr[shard], clients.indptr[shard + 1]
    count = stop - start
    if not (count > 0).any():
        return out
    # One row per (item, client entry).
    item = np.repeat(np.arange(k_items), count)
    first = np.cumsum(count) - count  # where each item's rows begin
    entry = np.repeat(start - first, count) + np.arange(item.size)
    client = clients.indices[entry].astype(np.int64)
    weight = np.asarray(clients.data[entry], dtype=np.float64)
    rows = nodes[shard[item]].astype(np.int64)
    others = rows.copy()
    others[np.arange(item.size), slot[item]] = -1  # the moving replica is gone
    lat = c.region_graph.latency_ms
    before = _nearest(lat, client, _replica_regions(state, rows)) <= target_ms
    rest = _nearest(lat, client, _replica_regions(state, others))
    # Served after a move into region r: by the others, or by the new copy in r.
    after = (rest[:, None] <= target_ms) | (lat[client][:, :n_regions] <= target_ms)
    served_before = np.bincount(item, weights=weight * before, minlength=k_items)
    served_after = np.zeros((k_items, n_regions))
    np.add.at(served_after, item, weight[:, None] * after)
    return served_after >= served_before[:, None] - 1e-9 * np.maximum(served_before[:, None], 1)
