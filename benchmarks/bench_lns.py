"""``method="lns"`` benchmarks: what CP-SAT over neighbourhoods adds to the engine's plan.

Tier S (100 nodes, 10,000 shards) and the engine's balancing scenarios, each with a
fixed number of neighbourhoods (``LNS_STEPS``; each is a fixed amount of CP-SAT's
deterministic work, so the plan is the same on any machine and only the time varies).
``extra_info`` holds the engine's columns (see ``bench_engine.py``) and, beside them,
the engine's own bytes (``fast_bytes_moved``), its ratio to the same bound
(``fast_over_bound``), and the neighbourhoods solved and kept.

Run: ``python -m pytest benchmarks/bench_lns.py --benchmark-only
--benchmark-json=lns.json`` then ``python benchmarks/report.py lns.json --columns
fast_over_bound,bytes_over_bound,gap,imbalance_after,lns_improved,moves,fast_moves``
(about 5 minutes: one round per case).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import _scenario  # noqa: E402

from placement.planner import plan  # noqa: E402

#: Neighbourhoods per case.
LNS_STEPS = 600


@pytest.mark.parametrize("scenario", ["add-10pct", "skew-5pct", "capacity-change"])
def test_lns(benchmark, tier_state, scenario):
    state, options = _scenario(tier_state("S"), scenario)
    state.sha256()
    fast = plan(state, seed=0, **options)
    kwargs = {"time_limit_s": 3600.0, "seed": 0, "method": "lns", "lns_steps": LNS_STEPS}
    result = benchmark.pedantic(
        plan, args=(state,), kwargs={**kwargs, **options}, rounds=1, iterations=1
    )
    lns = result.stats["lns"]
    bound = result.lower_bound_bytes
    benchmark.extra_info.update(
        {
            "tier": "S",
            "scenario": scenario,
            "moves": result.n_moves,
            "fast_moves": fast.n_moves,
            "bytes_moved": result.bytes_moved,
            "fast_bytes_moved": fast.bytes_moved,
            "lower_bound_bytes": bound,
            "bytes_over_bound": result.bound_ratio,
            "fast_over_bound": fast.bytes_moved / bound if bound > 0 else None,
            "gap": result.gap,
            "imbalance_after": result.after["imbalance"],
            "fast_imbalance_after": fast.after["imbalance"],
            "transfer_cost": float(result.cost.sum()),
            "violations_after": result.after["violations"],
            "lns_steps": lns.get("steps"),
            "lns_improved": lns.get("improved"),
            "lns_stopped": lns.get("stopped"),
            "bound": result.stats.get("bound"),
        }
    )
    assert result.after["violations"] == 0
