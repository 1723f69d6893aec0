"""How many bytes must move to reach a balance goal in *every* resource at once?

Solves :func:`placement.balance_lp.solve_balance_lp`, a lower bound that sees all
resources together and where the bytes can land, twice: at the peaks the engine's plan
reaches, one group per node (compare with the plan's knapsack bound and its own bound,
the grouped LP) and at ``(1 + goal) x mean`` in every resource (what the goal itself
costs at least).

Run: ``python benchmarks/balance_lp.py S add-10pct [--goal 0.02] [--bins 16]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import _scenario  # noqa: E402

import placement  # noqa: E402
from placement.balance_lp import fair_loads, solve_balance_lp  # noqa: E402
from placement.constraints import node_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tier", choices=sorted(placement.TIERS))
    parser.add_argument("scenario", default="add-10pct", nargs="?")
    parser.add_argument("--goal", type=float, default=0.02)
    parser.add_argument("--bins", type=int, default=16)
    args = parser.parse_args()
    state, options = _scenario(placement.tier_state(args.tier), args.scenario)
    plan = placement.planner.plan(state, seed=0, **options)
    c = state.cluster
    act = c.active
    peak = (node_load(state, plan.target_nodes)[act] / c.capacity[act]).max(axis=0)
    at_peak = solve_balance_lp(
        state, peak[None, :] * c.capacity, bins=args.bins, exact_groups_up_to=1 << 30
    )
    at_goal = solve_balance_lp(state, (1 + args.goal) * fair_loads(state), bins=args.bins)
    worst = max(v for v in plan.after["imbalance"].values() if v is not None)
    tb = 1e12
    print(
        f"{args.tier} {args.scenario}: engine {plan.bytes_moved / tb:,.2f} TB to {worst:.1%} "
        f"imbalance; knapsack bound {plan.stats['bound']['knapsack_bytes'] / tb:,.2f} TB; "
        f"plan's bound {plan.lower_bound_bytes / tb:,.2f} TB; per-node LP bound at the "
        f"plan's peaks {at_peak.bytes_bound / tb:,.2f} TB ({at_peak.status}, "
        f"{at_peak.seconds:.2f} s, {at_peak.n_groups} groups x {at_peak.n_types} types). "
        f"LP bound for {args.goal:.0%} in every resource: {at_goal.bytes_bound / tb:,.2f} TB "
        f"({at_goal.status}, {at_goal.seconds:.2f} s)."
    )


if __name__ == "__main__":
    main()
