"""``placement plan`` with a latency target on the degraded tiers: compliance, balance, time.

The synthetic tiers serve their clients well already; ``bench_geo.degrade_clients`` moves
the client demand of 60% of the shards to the farthest region (fixed seed). The policy
then gets ``latency_target_ms = 50`` and the planner runs as a user would call it.

Run: ``python benchmarks/plan_latency.py S M`` (tier L takes about a minute).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_geo import degrade_clients  # noqa: E402

import placement  # noqa: E402
from placement.latency import client_service  # noqa: E402
from placement.plan import REASONS  # noqa: E402
from placement.planner import plan  # noqa: E402


def main(tiers: list[str]) -> None:
    for tier in tiers:
        state = degrade_clients(placement.tier_state(tier))
        policy = dataclasses.replace(state.policy, latency_target_ms=50.0)
        state = dataclasses.replace(state, policy=policy)
        before = client_service(state, state.placement.nodes).compliance
        t0 = time.perf_counter()
        p = plan(state)
        elapsed = time.perf_counter() - t0
        after = client_service(state, p.target_nodes).compliance
        worst = max(v for v in p.after["imbalance"].values() if v is not None)
        latency_moves = int((p.reason == REASONS.index("latency")).sum())
        print(
            f"{tier}: compliance {before:.1%} -> {after:.1%}, imbalance {worst:.1%}, "
            f"{p.n_moves} moves ({latency_moves} for latency), violations "
            f"{p.after['violations']}, {elapsed:.1f} s"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["S", "M"])
