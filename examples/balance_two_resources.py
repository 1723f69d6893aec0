"""Rebalance a cluster where disk and iops must both end near the mean, and read the evidence.

Ten empty nodes join a 100-node, 10,000-shard cluster. Disk and iops per shard are
correlated, but nodes differ in iops per byte of capacity, so moving replicas off hot
nodes alone leaves every node at the level in one resource or the other. The planner's
trade round follows the balance LP's flows (nodes below the goal give iops-heavy replicas
and take disk-heavy ones) and reaches the 2% goal in both. Its bound is the LP's, which
sees those trades; the per-node knapsack, printed beside it, does not. The same plan
with iops ignored (``weights``) shows what the second resource costs.

Run it with ``python examples/balance_two_resources.py``.
"""

from __future__ import annotations

import numpy as np

import placement
from placement.planner import plan
from placement.scenarios import with_new_nodes


def main() -> None:
    """Plan the rebalance twice (both resources, disk only) and print what each costs."""
    state = placement.synthetic_state(100, 10_000, seed=0)
    c = state.cluster
    like = np.random.default_rng(1).choice(c.n_nodes, 10, replace=False)
    where = [[c.domain_leaf[k][c.domain_of[i, k]] for k in range(len(c.levels))] for i in like]
    joined = with_new_nodes(
        state,
        [f"new-{k}" for k in range(10)],
        c.capacity[like],
        [[region, zone, f"{zone}-new"] for region, zone, _ in where],
    )

    for label, weights in (("disk and iops", None), ("disk only", {"iops": 0.0})):
        p = plan(joined, weights=weights)
        imbalance = ", ".join(f"{r} {v:.1%}" for r, v in p.after["imbalance"].items())
        bound = p.stats["bound"]
        print(
            f"{label}: {p.n_moves} moves, {p.bytes_moved / 1e12:.1f} TB -> {imbalance}; "
            f"bound {p.lower_bound_bytes / 1e12:.1f} TB (knapsack "
            f"{bound['knapsack_bytes'] / 1e12:.1f} TB), gap {p.gap:.1%}, "
            f"trade round {'ran' if p.stats.get('traded') else 'not needed'}"
        )


if __name__ == "__main__":
    main()
