"""Build a small two-region cluster state from plain Python lists, then evaluate it.

Shows the array-facing constructors of the façade: ``placement.Cluster.build`` (nodes,
capacities and locations), ``placement.Shards.build`` (demand, replication, residency),
``placement.Placement.build`` (where each replica is, as node indices) and
``placement.State`` (which checks the parts against each other and the policy). Node
and shard ids appear only at the edges; inside, everything is an index.

Run it with ``python examples/build_cluster.py``.
"""

from __future__ import annotations

import placement

TB, GB = 1e12, 1e9


def main() -> None:
    """Build a small state from lists, evaluate it and print the text report."""
    # -- the machines: 2 regions x 3 zones, one node per zone, two resources ------------
    node_ids = ["eu-a1", "eu-b1", "eu-c1", "us-a1", "us-b1", "us-c1"]
    location = [
        ["eu", "eu-a", "rack-1"],
        ["eu", "eu-b", "rack-2"],
        ["eu", "eu-c", "rack-3"],
        ["us", "us-a", "rack-1"],
        ["us", "us-b", "rack-2"],
        ["us", "us-c", "rack-3"],
    ]
    # Mixed hardware: one node has twice the disk of the others.
    capacity = [
        [4 * TB, 20_000],
        [4 * TB, 20_000],
        [8 * TB, 40_000],
        [4 * TB, 20_000],
        [4 * TB, 20_000],
        [4 * TB, 20_000],
    ]

    cluster = placement.Cluster.build(
        node_ids=node_ids,
        resources=["disk_bytes", "iops"],
        capacity=capacity,
        levels=["region", "zone", "rack"],
        location=location,
        links=[{"a": "eu", "b": "us", "latency_ms": 80, "cost_per_gb": 0.02}],
    )

    # -- the workload: five shards of replication 3; two must stay in the EU ------------
    shards = placement.Shards.build(
        cluster,
        ids=["orders", "users", "events", "eu-billing", "eu-audit"],
        demand=[
            [900 * GB, 3000],
            [400 * GB, 1500],
            [1500 * GB, 2500],
            [600 * GB, 800],
            [300 * GB, 200],
        ],
        replicas=3,
        allowed_regions=[None, None, None, ["eu"], ["eu"]],
        # Client demand weight per region, in cluster.regions order (here: eu, us).
        clients=[[10.0, 90.0], [50.0, 50.0], [5.0, 1.0], [40.0, 0.0], [3.0, 0.0]],
        group=["shop", "shop", "analytics", "finance", "finance"],
    )

    # -- the current placement: node indices per shard; "events" lost a replica --------
    replicas = placement.Placement.build(
        [
            [0, 3, 4],  # orders: eu-a1, us-a1, us-b1
            [1, 4, 5],  # users
            [2, 3],  # events: only two replicas listed -> under-replicated
            [0, 1, 2],  # eu-billing: all in the EU, one per zone
            [0, 1, 2],  # eu-audit
        ],
        n_nodes=cluster.n_nodes,
        width=3,
    )

    policy = placement.Policy(
        spread_level="zone", min_regions=1, latency_target_ms=50, latency_max_ms=100
    )
    state = placement.State(cluster, shards, replicas, policy)

    print(
        f"built a state of {cluster.n_nodes} nodes in regions {list(cluster.regions)} "
        f"and {shards.n_shards} shards (sha256 {state.sha256()[:12]})"
    )
    print()
    print(placement.evaluate(state).to_text())


if __name__ == "__main__":
    main()
