"""Read an evaluation report programmatically instead of printing its text table.

Shows what a :class:`placement.Report` holds for a generated cluster of 100 nodes and
10,000 shards: the per-node ``utilization`` matrix (to list the hottest nodes), the
per-resource summaries (imbalance ratio against the warning/critical thresholds), the
violations (counts, and ``describe`` for the ids behind them) and the Prometheus text
exposition a monitoring job would scrape.

Run it with ``python examples/read_report.py``.
"""

from __future__ import annotations

import numpy as np

import placement


def main() -> None:
    """Print the parts of a report a program would read."""
    state = placement.synthetic_state(100, 10_000, seed=1)
    report = placement.evaluate(state)
    cluster = state.cluster

    print(f"status {report.status}; {cluster.n_nodes} nodes, {state.shards.n_shards} shards")

    # utilization is an (N, R) array in cluster.resources order; rank active nodes by the
    # size resource. Inactive nodes hold no capacity that counts, so they are left out.
    size = cluster.size_index
    util = np.where(cluster.active, report.utilization[:, size], -np.inf)
    print(f"\nhottest active nodes by {cluster.size_resource}:")
    for i in np.argsort(-util, kind="stable")[:5]:
        row = ", ".join(
            f"{r} {report.utilization[i, j]:.1%}" for j, r in enumerate(cluster.resources)
        )
        print(f"  {cluster.node_ids[i]:<22} {row}")

    print("\nresources:")
    policy = state.policy
    for r in report.resources:
        print(
            f"  {r.resource:<11} mean {r.mean_utilization:.1%}  max {r.max_utilization:.1%} on "
            f"{r.max_node}  imbalance {r.imbalance_ratio:.3f} -> {r.status} "
            f"(warning at {policy.imbalance_warning}, critical at {policy.imbalance_critical})"
        )

    # The generated state has no violations; break one shard (two replicas moved into one zone) to
    # have something to describe. evaluate() takes another placement of the same shards.
    nodes = state.placement.nodes.copy()
    zone = cluster.domain_of[:, state.spread_level_index]
    candidates = (zone == zone[nodes[0, 0]]) & ~np.isin(np.arange(cluster.n_nodes), nodes[0])
    nodes[0, 1] = np.flatnonzero(candidates)[0]
    broken = placement.evaluate(state, nodes)
    violated = {kind: n for kind, n in broken.violations.counts().items() if n}
    print(f"\nviolations of the valid state: {report.violations.total}")
    print(f"violations after moving one replica into another's zone: {violated}")
    for kind, items in broken.violations.describe(state, limit=3).items():
        for item in items:
            print(f"  {kind}: {item}")

    print("\nPrometheus exposition (first lines):")
    for line in report.to_prometheus().splitlines()[:8]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
