"""The runbook's graceful node departure, end to end: plan, check, schedule, validate, cost.

A node of a 100-node, 10,000-shard cluster is marked draining. The planner repairs (the
drained replicas, and any other violation the cluster has) without balancing, and its
lower bound shows how close to the least possible the bytes are; the schedule orders the
moves into waves that never leave a shard below its minimum; the independent validator
replays them; the cost report shows where the bytes travel and what they cost.

Run it with ``python examples/runbook_drain.py``.
"""

from __future__ import annotations

import placement
from placement.cost import cost_report
from placement.planner import plan
from placement.scenarios import with_node_state


def main() -> None:
    """Drain one node and print the evidence an operator would check before executing."""
    state = placement.synthetic_state(100, 10_000, seed=1)
    leaving = state.cluster.node_ids[7]
    drained = with_node_state(state, [leaving], "draining")

    p = plan(drained, trigger_imbalance=1.0)  # repairs only: no balancing below 100%
    print(
        f"drain {leaving}: {p.n_moves} moves, {p.bytes_moved / 1e12:.2f} TB "
        f"(lower bound {p.lower_bound_bytes / 1e12:.2f} TB, gap {p.gap:.1%}), "
        f"violations {p.before['violations']} -> {p.after['violations']}"
    )

    waves = placement.schedule(drained, p)
    print(
        f"schedule: {waves.n_waves} waves, about {waves.duration_s / 3600:.1f} h "
        f"(bound {waves.lower_bound_s / 3600:.1f} h)"
    )

    report = placement.validate(drained, waves)
    print(f"validate: {'clean' if report.ok else report.counts()}")

    costs = cost_report(drained, p)
    top = costs.pairs[0]
    print(
        f"cost: ${costs.transfer_cost:,.2f} in total, {costs.cross_region_bytes / 1e9:,.0f} GB "
        f"cross-region; busiest pair {top.source_region} -> {top.target_region}: "
        f"{top.moves} moves"
    )
    for alert in costs.alerts:
        print(f"alert: {alert}")


if __name__ == "__main__":
    main()
