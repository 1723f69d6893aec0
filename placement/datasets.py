"""Seeded synthetic clusters and workloads, and the example cluster shipped with the package.

The generator builds everything as arrays (a million shards take about a second) and
returns a valid :class:`~placement.model.State`: replicas spread one per zone across at
least two regions, residency honoured, nodes below headroom on average but unevenly
loaded, as real clusters drift.

Tiers used by tests and benchmarks (replication 3):

====  =======  =========
tier  nodes    shards
====  =======  =========
S     100      10,000
M     1,000    100,000
L     10,000   1,000,000
====  =======  =========
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources as importlib_resources

import numpy as np
import scipy.sparse as sp

from placement.errors import InvalidValueError, UnknownIdError
from placement.model import Cluster, NodeState, Placement, Policy, Shards, State

__all__ = ["REGIONS", "TIERS", "Tier", "example_state", "synthetic_state", "tier_state"]


@dataclass(frozen=True)
class Tier:
    """A benchmark size."""

    name: str
    n_nodes: int
    n_shards: int


TIERS: dict[str, Tier] = {
    "S": Tier("S", 100, 10_000),
    "M": Tier("M", 1_000, 100_000),
    "L": Tier("L", 10_000, 1_000_000),
}

#: Regions of the synthetic clusters, with one-way latency (ms), transfer cost ($/GB) and
#: bandwidth (bit/s) of the links between them. Latencies are typical public-cloud
#: inter-region round-trip figures halved and rounded; costs are typical list prices.
REGIONS: tuple[str, ...] = ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
_LINKS: tuple[tuple[str, str, float, float, float], ...] = (
    ("us-east", "us-west", 32.0, 0.02, 2.5e10),
    ("us-east", "eu-west", 38.0, 0.02, 2.5e10),
    ("eu-west", "eu-central", 9.0, 0.02, 4.0e10),
    ("eu-central", "ap-south", 60.0, 0.05, 1.0e10),
    ("us-west", "ap-south", 110.0, 0.08, 1.0e10),
)
_EU = ("eu-west", "eu-central")
_ZONES_PER_REGION = 3
_NODES_PER_RACK = 8
#: Disk capacity classes (bytes) and their shares: mixed hardware generations.
_DISK_CLASSES = np.array([4e12, 8e12, 16e12])
_DISK_SHARES = np.array([0.3, 0.5, 0.2])


def tier_state(tier: str, *, seed: int = 0) -> State:
    """The synthetic state of a benchmark tier ("S", "M" or "L").

    >>> tier_state("S").shards.n_shards
    10000
    """
    try:
        t = TIERS[tier.upper()]
    except (KeyError, AttributeError):
        raise UnknownIdError(f"Unknown tier {tier!r}; use one of {sorted(TIERS)}.") from None
    return synthetic_state(t.n_nodes, t.n_shards, seed=seed)


def synthetic_state(
    n_nodes: int = 100,
    n_shards: int = 10_000,
    *,
    replicas: int = 3,
    seed: int = 0,
    target_utilization: float = 0.6,
    eu_tenant_share: float = 0.15,
    n_groups: int = 40,
    policy: Policy | None = None,
) -> State:
    """Generate a valid multi-region cluster state.

    Parameters
    ----------
    n_nodes, n_shards : int
    replicas : int
        Replication factor of every shard (placed one per zone, over >= 2 regions).
    seed : int
        Same seed, same state.
    target_utilization : float
        Mean disk utilization of the cluster.
    eu_tenant_share : float
        Share of shards whose tenant keeps data in the EU regions (residency).
    n_groups : int
        Number of tenants; shard counts per tenant follow a Zipf-like law.
    policy : Policy, optional
        Defaults to zone spread, at least two regions, headroom 0.85.

    Returns
    -------
    State
        Valid for clusters of a realistic grain; with fewer than about 20 replicas per
        node a few nodes may stay above headroom (check with :func:`placement.check`).

    Examples
    --------
    >>> st = synthetic_state(30, 500, seed=1)
    >>> int(st.placement.count().min()), st.cluster.n_nodes
    (3, 30)
    """
    if n_nodes < len(REGIONS) * _ZONES_PER_REGION:
        raise InvalidValueError(
            f"synthetic_state needs at least {len(REGIONS) * _ZONES_PER_REGION} nodes (one per zone)."
        )
    if not 0 < target_utilization < 1:
        raise InvalidValueError("target_utilization must be in (0, 1).")
    rng = np.random.default_rng(seed)
    policy = policy or Policy(spread_level="zone", min_regions=2)

    # -- nodes: round-robin over zones so every zone has nodes, mixed disk classes ------
    n_zones = len(REGIONS) * _ZONES_PER_REGION
    zone_of_node = np.arange(n_nodes) % n_zones
    region_of_zone = np.arange(n_zones) // _ZONES_PER_REGION
    rank_in_zone = np.arange(n_nodes) // n_zones
    disk = rng.choice(_DISK_CLASSES, size=n_nodes, p=_DISK_SHARES)
    iops = disk / 4e12 * 20_000 * rng.uniform(0.8, 1.2, n_nodes)
    capacity = np.column_stack([disk, np.round(iops)])
    zone_names = [
        f"{REGIONS[z // _ZONES_PER_REGION]}-{'abc'[z % _ZONES_PER_REGION]}" for z in range(n_zones)
    ]
    location = [
        [REGIONS[region_of_zone[z]], zone_names[z], f"{zone_names[z]}-r{rank // _NODES_PER_RACK}"]
        for z, rank in zip(zone_of_node.tolist(), rank_in_zone.tolist(), strict=True)
    ]
    node_ids = [
        f"{zone_names[z]}-n{rank:03d}"
        for z, rank in zip(zone_of_node.tolist(), rank_in_zone.tolist(), strict=True)
    ]
    cluster = Cluster.build(
        node_ids=node_ids,
        resources=["disk_bytes", "iops"],
        capacity=capacity,
        levels=["region", "zone", "rack"],
        location=location,
        bandwidth_bps=np.where(disk > 8e12, 2.5e10, 1.0e10),
        links=[
            {"a": a, "b": b, "latency_ms": lat, "cost_per_gb": cost, "bandwidth_bps": bw}
            for a, b, lat, cost, bw in _LINKS
        ],
    )
    region_index = {r: i for i, r in enumerate(cluster.regions)}
    # Cluster regions are ordered by first appearance; map ours onto them.
    region_of_zone = np.array([region_index[REGIONS[r]] for r in region_of_zone])

    # -- shards: tenants, residency, heavy-tailed sizes ------------------------------------
    tenant_weight = 1.0 / np.arange(1, n_groups + 1)
    tenant_weight /= tenant_weight.sum()
    group = rng.choice(n_groups, size=n_shards, p=tenant_weight)
    # EU tenants: a random set of tenants holding about eu_tenant_share of the shards.
    order = rng.permutation(n_groups)
    eu_tenants = np.zeros(n_groups, dtype=bool)
    eu_tenants[order[np.cumsum(tenant_weight[order]) <= eu_tenant_share]] = True
    eu_shard = eu_tenants[group]
    size = rng.lognormal(mean=0.0, sigma=1.0, size=n_shards)
    total_disk = capacity[:, 0].sum()
    # Cap the tail at 20x the mean shard and at 5% of the smallest node, so that even small
    # clusters can be balanced (a shard filling half a node is not a sharded workload).
    for _ in range(3):
        size *= target_utilization * total_disk / (replicas * size.sum())
        size = np.minimum(size, np.minimum(20 * size.mean(), 0.05 * disk.min()))
    iops_demand = (
        size / size.mean() * (target_utilization * capacity[:, 1].sum() / (replicas * n_shards))
    )
    iops_demand *= rng.uniform(0.5, 1.5, n_shards)
    demand = np.column_stack([size, iops_demand])

    # -- placement: replicas in distinct zones, the first two in distinct regions ---------
    zone_capacity = np.bincount(zone_of_node, weights=disk, minlength=n_zones)
    allowed_zone = np.ones((n_shards, n_zones), dtype=bool)
    eu_zone = np.isin(region_of_zone, [region_index[r] for r in _EU])
    allowed_zone[eu_shard] = eu_zone
    # Unrestricted shards favour zones that EU-only shards leave free, so that expected
    # utilization is even across regions before the noise of placement.
    eu_load = (
        replicas * size[eu_shard].sum() * zone_capacity * eu_zone / zone_capacity[eu_zone].sum()
    )
    free = np.maximum(zone_capacity - eu_load / target_utilization, 0.05 * zone_capacity)
    log_w = np.where(eu_shard[:, None], np.log(zone_capacity)[None, :], np.log(free)[None, :])
    chosen = np.empty((n_shards, replicas), dtype=np.int64)
    available = allowed_zone.copy()
    for j in range(replicas):
        score = np.where(available, log_w + rng.gumbel(size=(n_shards, n_zones)), -np.inf)
        pick = score.argmax(axis=1)
        chosen[:, j] = pick
        available[np.arange(n_shards), pick] = False
        if j == 0:
            # Second replica in another region, for min_regions=2.
            available &= region_of_zone[None, :] != region_of_zone[pick][:, None]
        elif j == 1:
            available = allowed_zone.copy()
            available[np.arange(n_shards)[:, None], chosen[:, :2]] = False
    node_of = np.empty_like(chosen)
    for z in range(n_zones):
        members = np.flatnonzero(zone_of_node == z)
        cum = np.cumsum(disk[members])
        slots = np.nonzero(chosen == z)
        u = rng.random(slots[0].size) * cum[-1]
        node_of[slots] = members[np.searchsorted(cum, u, side="right").clip(max=members.size - 1)]

    _relieve_overloads(
        node_of, demand, capacity, zone_of_node, region_of_zone, policy.headroom * 0.97
    )

    # -- clients: a home region near the data, sometimes a second one ----------------------
    home = region_of_zone[chosen[:, 0]]
    second = rng.integers(0, len(REGIONS), n_shards)
    has_second = (rng.random(n_shards) < 0.3) & (second != home)
    rows = np.concatenate([np.arange(n_shards), np.flatnonzero(has_second)])
    cols = np.concatenate([home, second[has_second]])
    weights = np.concatenate(
        [rng.lognormal(3.0, 1.0, n_shards), rng.lognormal(1.5, 1.0, int(has_second.sum()))]
    )
    clients = sp.csr_array((weights, (rows, cols)), shape=(n_shards, len(cluster.regions)))

    eu_set = [None, list(_EU)]
    shards = Shards.build(
        cluster,
        demand=demand,
        replicas=replicas,
        residency_class=eu_shard.astype(np.int32),
        residency_sets=eu_set,
        clients=clients,
        group=group,
        group_names=[f"tenant-{g}" for g in range(n_groups)],
    )
    placement = Placement.build(node_of.astype(np.int32), n_nodes=n_nodes)
    return State(cluster, shards, placement, policy)


def example_state() -> State:
    """The example cluster shipped with the package (``placement demo`` shows it).

    A five-region backup cluster of 30 nodes and 600 shards where one node has failed
    (its shards are under-replicated), one node has just joined (empty) and one node is
    hot (above the 85% headroom).

    >>> st = example_state()
    >>> st.cluster.n_nodes, st.shards.n_shards
    (31, 600)
    """
    from placement.io.interchange import state_from_document

    text = (
        importlib_resources.files("placement.data")
        .joinpath("example_state.json")
        .read_text("utf-8")
    )
    import json

    return state_from_document(json.loads(text))


def build_example_state() -> State:
    """Recreate the shipped example state from its seed (used to regenerate and test it)."""
    base = synthetic_state(30, 600, seed=7, target_utilization=0.55)
    c, s, p = base.cluster, base.shards, base.placement
    nodes = p.nodes.copy()
    size = s.demand[:, c.size_index]

    # A hot node: pull same-zone replicas onto it until it passes the headroom.
    hot = 4
    zone = c.domain_of[:, 1]
    load = np.bincount(nodes.ravel(), weights=np.repeat(size, nodes.shape[1]), minlength=c.n_nodes)
    for k in np.argsort(-size):
        if load[hot] > 0.93 * c.capacity[hot, 0]:
            break
        row = nodes[k]
        if hot in row:
            continue
        same_zone = np.flatnonzero(zone[row] == zone[hot])
        if same_zone.size:
            j = same_zone[0]
            load[row[j]] -= size[k]
            load[hot] += size[k]
            row[j] = hot

    # A failed node, and a new empty node in the zone of the failed one.
    state = c.state.copy()
    state[11] = NodeState.FAILED
    new_location = c.locations()
    new_location.append(list(new_location[11]))
    cluster = Cluster.build(
        node_ids=[*c.node_ids, f"{new_location[11][1]}-n099"],
        resources=list(c.resources),
        capacity=np.vstack([c.capacity, c.capacity[11]]),
        levels=list(c.levels),
        location=new_location,
        state=[*state.tolist(), 0],
        bandwidth_bps=[*c.bandwidth_bps.tolist(), c.bandwidth_bps[11]],
        links=c.link_records(),
    )
    policy = Policy(spread_level="zone", min_regions=2, latency_target_ms=50, latency_max_ms=100)
    return State(cluster, s, Placement.build(nodes, n_nodes=cluster.n_nodes), policy)


def _relieve_overloads(
    node_of: np.ndarray,
    demand: np.ndarray,
    capacity: np.ndarray,
    zone_of_node: np.ndarray,
    region_of_zone: np.ndarray,
    limit: float,
) -> None:
    """Move replicas off nodes above *limit* (any resource) to the least-loaded node of the
    same region in a zone the shard does not use yet, so the generated placement is valid
    (same region: residency and region count hold). Touches only overloaded nodes."""
    region_of_node = region_of_zone[zone_of_node]
    n_nodes = capacity.shape[0]
    flat = node_of.ravel()
    load = np.stack(
        [
            np.bincount(flat, weights=np.repeat(demand[:, j], node_of.shape[1]), minlength=n_nodes)
            for j in range(demand.shape[1])
        ],
        axis=1,
    )
    util = (load / capacity).max(axis=1)
    for node in np.flatnonzero(util > limit):
        rows, cols = np.nonzero(node_of == node)
        members = np.flatnonzero(region_of_node == region_of_node[node])
        for k in np.argsort(-demand[rows, 0]):
            if (load[node] / capacity[node]).max() <= limit:
                break
            r, col = rows[k], cols[k]
            others = np.delete(node_of[r], col)
            candidates = members[~np.isin(zone_of_node[members], zone_of_node[others])]
            if candidates.size == 0:
                continue
            after = ((load[candidates] + demand[r]) / capacity[candidates]).max(axis=1)
            best = candidates[np.argmin(after)]
            if after.min() > limit:
                continue
            node_of[r, col] = best
            load[node] -= demand[r]
            load[best] += demand[r]
