"""How many bytes must move to reach an imbalance goal in *every* resource at once?

An aggregated LP (HiGHS through SciPy) that the per-resource bytes bound cannot see:
shards are binned by residency class and by their ratio of the second resource to
bytes; per node and bin it chooses bytes to send away and to receive, so that every
active node ends at or below ``(1 + goal) x mean`` utilization in every resource, with
the fewest bytes sent. Spread and integrality are relaxed; within a bin, shards are
taken to share the bin's average ratio (so this estimates, it does not bound).

Run: ``python benchmarks/balance_lp.py S add-10pct [--goal 0.02] [--bins 6]``
(tier S and M solve in well under a second; tier L takes about a minute).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import _scenario  # noqa: E402

import placement  # noqa: E402
from placement.constraints import node_load  # noqa: E402


def bytes_to_goal(state: placement.State, goal: float, bins: int) -> tuple[float, float]:
    """(bytes sent in the LP optimum, seconds to solve)."""
    c, s = state.cluster, state.shards
    nodes = state.placement.nodes
    load = node_load(state, nodes)
    act = c.active
    n, r_count = c.n_nodes, c.n_resources
    size = s.demand[:, c.size_index]
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    mean = total / c.capacity[act].sum(axis=0)
    cap_goal = (1 + goal) * mean * c.capacity  # (N, R) load allowed at the goal
    other = [r for r in range(r_count) if r != c.size_index]
    ratio = s.demand[:, other[0]] / np.maximum(size, 1e-300) if other else np.zeros(s.n_shards)
    edges = np.quantile(ratio, np.linspace(0, 1, bins + 1))
    ratio_bin = np.clip(np.searchsorted(edges, ratio, side="right") - 1, 0, bins - 1)
    n_types = s.allowed_regions.shape[0] * bins
    kind = s.residency_class * bins + ratio_bin
    unit = mean[c.size_index] * c.capacity[act, c.size_index].mean()  # an average node's bytes
    rows, cols = np.nonzero(nodes >= 0)
    where = nodes[rows, cols]
    have = np.zeros((n_types, n))
    np.add.at(have, (kind[rows], where), size[rows] / unit)
    per_byte = np.zeros((n_types, r_count))  # resource per byte of each type
    type_bytes = np.bincount(kind, weights=size, minlength=n_types)
    for r in range(r_count):
        amount = np.bincount(kind, weights=s.demand[:, r], minlength=n_types)
        per_byte[:, r] = amount / np.maximum(type_bytes, 1e-300) * unit
    allowed = np.repeat(s.allowed_regions[:, c.region_of], bins, axis=0) & act[None, :]
    # Variables: send[t, n], take[t, n], slack[n, r] (penalized: infeasible goals still solve).
    n_send = n_types * n
    n_var = 2 * n_send + n * r_count
    row_scale = 1 / (mean * c.capacity[act].mean(axis=0))
    a_rows, a_cols, a_vals = [], [], []
    for r in range(r_count):
        for t in range(n_types):
            a_rows += [r * n + np.arange(n)] * 2
            a_cols += [t * n + np.arange(n), n_send + t * n + np.arange(n)]
            coef = per_byte[t, r] * row_scale[r] * np.ones(n)
            a_vals += [-coef, coef]
        a_rows.append(r * n + np.arange(n))
        a_cols.append(2 * n_send + np.arange(n) * r_count + r)
        a_vals.append(-np.ones(n))
    a_ub = sp.csr_matrix(
        (np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))),
        shape=(r_count * n, n_var),
    )
    b_ub = ((np.where(act[:, None], cap_goal, 0.0) - load) * row_scale).T.ravel()
    t_idx = np.repeat(np.arange(n_types), n)
    a_eq = sp.csr_matrix(
        (
            np.r_[np.ones(n_send), -np.ones(n_send)],
            (np.r_[t_idx, t_idx], np.r_[np.arange(n_send), n_send + np.arange(n_send)]),
        ),
        shape=(n_types, n_var),
    )
    upper = np.r_[
        have.ravel(), np.where(allowed, np.inf, 0.0).ravel(), np.full(n * r_count, np.inf)
    ]
    cost = np.r_[np.ones(n_send), np.zeros(n_send), np.full(n * r_count, 1e4)]
    t0 = time.perf_counter()
    res = scipy.optimize.linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=np.zeros(n_types),
        bounds=np.stack([np.zeros(n_var), upper], axis=1),
        method="highs",
    )
    elapsed = time.perf_counter() - t0
    if res.status != 0:
        raise RuntimeError(res.message)
    slack = res.x[2 * n_send :].sum()
    if slack > 1e-6:
        print(f"note: the goal is out of reach even fractionally (slack {slack:.3g})")
    return float(res.x[:n_send].sum() * unit), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tier", choices=sorted(placement.TIERS))
    parser.add_argument("scenario", default="add-10pct", nargs="?")
    parser.add_argument("--goal", type=float, default=0.02)
    parser.add_argument("--bins", type=int, default=6)
    args = parser.parse_args()
    state, _ = _scenario(placement.tier_state(args.tier), args.scenario)
    sent, seconds = bytes_to_goal(state, args.goal, args.bins)
    plan = placement.planner.plan(state)
    worst = max(v for v in plan.after["imbalance"].values() if v is not None)
    print(
        f"{args.tier} {args.scenario}: LP to {args.goal:.1%} in every resource: "
        f"{sent / 1e12:,.1f} TB ({seconds:.1f} s). Engine: {plan.bytes_moved / 1e12:,.1f} TB "
        f"to {worst:.1%} (its per-resource bound {plan.lower_bound_bytes / 1e12:,.1f} TB)."
    )


if __name__ == "__main__":
    main()
