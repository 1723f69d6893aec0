"""Engine benchmarks: tiers x scenarios, quality beside time.

Each case records in ``extra_info``: moves, bytes moved, the lower bound and their
ratio, transfer cost, imbalance before and after (per resource), violations after, the
solver's stop reason, its phase times, and the peak memory of one planning call
measured separately under tracemalloc (untimed; tracing slows the call down).

Run: ``python -m pytest benchmarks/bench_engine.py --benchmark-only -k S`` (or M, L);
``--benchmark-json=out.json`` keeps the ``extra_info`` columns. The seed is fixed (0).
"""

from __future__ import annotations

import numpy as np
import pytest

import placement
from placement.planner import plan
from placement.scenarios import with_capacity, with_failed_domain, with_new_nodes, with_node_state

TIME_LIMIT_S = {"S": 10.0, "M": 30.0, "L": 60.0}


def _scenario(state: placement.State, name: str) -> tuple[placement.State, dict]:
    c = state.cluster
    if name == "add-10pct":
        n_new = max(1, c.n_nodes // 10)
        rng = np.random.default_rng(1)
        picks = rng.choice(c.n_nodes, n_new, replace=False)
        loc = [[c.domain_leaf[k][c.domain_of[i, k]] for k in range(len(c.levels))] for i in picks]
        loc = [[r, z, f"{z}-new"] for r, z, _ in loc]
        new = with_new_nodes(state, [f"new-{k}" for k in range(n_new)], c.capacity[picks], loc)
        return new, {}
    if name == "drain-1":
        return with_node_state(state, [c.node_ids[0]], "draining"), {"trigger_imbalance": 10.0}
    if name == "fail-1":
        return with_node_state(state, [c.node_ids[1]], "failed"), {"trigger_imbalance": 10.0}
    if name == "fail-zone":
        return with_failed_domain(state, "zone", c.domain_names[1][0]), {"trigger_imbalance": 10.0}
    if name == "skew-5pct":
        total = float((state.shards.demand[:, c.size_index] * state.shards.replicas).sum())
        return state, {"max_bytes": 0.05 * total}
    if name == "capacity-change":
        rng = np.random.default_rng(2)
        picks = rng.choice(c.n_nodes, max(1, c.n_nodes // 50), replace=False)
        return with_capacity(
            state, {c.node_ids[i]: {"disk_bytes": c.capacity[i, 0] * 0.6} for i in picks}
        ), {}
    raise ValueError(name)


@pytest.mark.parametrize(
    "scenario", ["add-10pct", "drain-1", "fail-1", "fail-zone", "skew-5pct", "capacity-change"]
)
@pytest.mark.parametrize("tier", ["S", "M", "L"])
def test_plan(benchmark, tier_state, peak_memory_mb, tier, scenario):
    state, options = _scenario(tier_state(tier), scenario)
    state.sha256()  # hash once outside the timing (cached on the state)
    kwargs = {"time_limit_s": TIME_LIMIT_S[tier], "seed": 0, **options}
    result = benchmark.pedantic(
        plan, args=(state,), kwargs=kwargs, rounds=1 if tier == "L" else 3, iterations=1
    )
    memory_mb = peak_memory_mb(lambda: plan(state, **kwargs))
    benchmark.extra_info.update(
        {
            "tier": tier,
            "scenario": scenario,
            "moves": result.n_moves,
            "bytes_moved": result.bytes_moved,
            "lower_bound_bytes": result.lower_bound_bytes,
            "bytes_over_bound": result.bound_ratio,
            "gap": result.gap,
            "imbalance_before": result.before["imbalance"],
            "imbalance_after": result.after["imbalance"],
            "transfer_cost": float(result.cost.sum()),
            "violations_after": result.after["violations"],
            "stop_reason": result.stats["stop_reason"],
            "repair_s": result.stats["repair_s"],
            "balance_s": result.stats["balance_s"],
            "bound_s": result.stats["bound_s"],
            "bound_share": result.stats["bound_s"] / max(result.stats["time_s"], 1e-9),
            "knapsack_bytes": result.stats["bound"]["knapsack_bytes"],
            "lp_bound_bytes": result.stats["bound"].get("lp_bytes"),
            "traded": result.stats.get("traded", False),
            "peak_memory_mb": memory_mb,
        }
    )
    assert result.after["violations"] == 0
