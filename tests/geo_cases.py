"""Small random multi-region states for the latency and geo tests.

:func:`geo_state` builds, from one integer seed, a cluster of 2-4 regions in a chain of
links with random latency, cost and bandwidth, two zones per region, 8-15 nodes,
20-60 shards with residency, pins and one or two client regions each, and a placement
that is valid (every hard constraint holds) unless nodes are failed or draining on
request. Sizes and client weights are whole numbers, so the exact model is exact.
"""

from __future__ import annotations

import numpy as np

from placement import Cluster, Placement, Policy, Shards, State

REGIONS = ("a", "b", "c", "d")


def geo_state(
    seed: int,
    *,
    balanced: bool = False,
    pins: bool = True,
    links: bool = True,
    node_states: bool = False,
    replicas: int | None = None,
    n_shards: int | None = None,
) -> State:
    """A random small state (see the module docstring).

    *balanced* places each replica on the least-utilized candidate node (a tight pressure
    ceiling) instead of a random one (a drifted cluster); *node_states* marks one node
    failed and one draining (the placement then breaks those rules).
    """
    rng = np.random.default_rng(seed)
    n_regions = int(rng.integers(2, 5))
    regions = REGIONS[:n_regions]
    zones_per_region = 2
    n_zones = n_regions * zones_per_region
    n_nodes = int(rng.integers(max(8, n_zones), 16))
    n_shards = int(rng.integers(20, 61)) if n_shards is None else n_shards
    rf = int(rng.integers(2, 4)) if replicas is None else replicas
    zone = np.arange(n_nodes) % n_zones
    region = zone // zones_per_region
    cap = rng.choice([100, 150, 200], size=n_nodes).astype(float) * 1e9
    location = [[regions[region[i]], f"{regions[region[i]]}{zone[i]}"] for i in range(n_nodes)]
    link_records = [
        {
            "a": regions[k],
            "b": regions[k + 1],
            "latency_ms": float(rng.integers(10, 80)),
            "cost_per_gb": float(rng.integers(1, 9)) / 100,
            "bandwidth_bps": float(rng.choice([2e9, 5e9, 1e10])),
        }
        for k in range(n_regions - 1)
    ]
    cluster = Cluster.build(
        node_ids=[f"n{i}" for i in range(n_nodes)],
        resources=["disk_bytes"],
        capacity=cap[:, None],
        levels=["region", "zone"],
        location=location,
        links=link_records if links else None,
        bandwidth_bps=rng.choice([1e9, 1e10], size=n_nodes),
    )
    size = rng.integers(1, 9, size=n_shards).astype(float) * 1e9
    restricted = (rng.random(n_shards) < 0.3) & (n_regions >= 3)
    allowed = [["a", "b"] if r else None for r in restricted]
    clients = np.zeros((n_shards, n_regions))
    home = rng.integers(0, n_regions, n_shards)
    clients[np.arange(n_shards), home] = rng.integers(1, 100, n_shards)
    two = rng.random(n_shards) < 0.3
    second = rng.integers(0, n_regions, n_shards)
    clients[np.flatnonzero(two), second[two]] += rng.integers(1, 30, int(two.sum()))
    clients[rng.random(n_shards) < 0.05] = 0.0  # a few shards without clients

    load = np.zeros(n_nodes)
    limit = 0.85 * cap
    rows: list[list[int]] = []
    for s in range(n_shards):
        ok_region = (
            np.isin(np.arange(n_regions), [0, 1]) if restricted[s] else np.ones(n_regions, bool)
        )
        row: list[int] = []
        for j in range(rf):
            used_zones = {int(zone[x]) for x in row}
            used_regions = {int(region[x]) for x in row}
            cand = [
                int(n)
                for n in rng.permutation(n_nodes)
                if ok_region[region[n]]
                and load[n] + size[s] <= limit[n]
                and zone[n] not in used_zones
                and (j != 1 or region[n] not in used_regions)
            ]
            if not cand:  # pragma: no cover - retried with another seed
                return geo_state(
                    seed + 100_000,
                    balanced=balanced,
                    pins=pins,
                    links=links,
                    node_states=node_states,
                    replicas=replicas,
                    n_shards=n_shards,
                )
            n = min(cand, key=lambda k: load[k] / cap[k]) if balanced else cand[0]
            row.append(n)
            load[n] += size[s]
        rows.append(row)
    pinned = None
    if pins:
        pinned = np.zeros((n_shards, rf), dtype=bool)
        pinned[rng.random(n_shards) < 0.1, 0] = True
    state = None
    if node_states:
        state = ["active"] * n_nodes
        state[int(rng.integers(n_nodes))] = "failed"
        state[int(rng.integers(n_nodes))] = "draining"
        cluster = cluster.with_state(
            np.array([{"active": 0, "draining": 1, "failed": 2}[x] for x in state], dtype=np.int8)
        )
    shards = Shards.build(
        cluster, demand=size, replicas=rf, allowed_regions=allowed, clients=clients
    )
    policy = Policy(
        spread_level="zone",
        min_regions=2,
        latency_target_ms=float(rng.choice([40.0, 50.0, 60.0])),
        latency_max_ms=100.0,
    )
    return State(
        cluster,
        shards,
        Placement.build(rows, n_nodes=n_nodes, pinned=pinned),
        policy,
    )
