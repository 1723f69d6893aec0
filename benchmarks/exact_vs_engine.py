"""How far is the fast engine from the optimum, and does exact mode prove it in time?

For small synthetic clusters (15-20 nodes, up to 2,000 shards) and the engine's benchmark
scenarios, runs the engine (:func:`placement.planner.plan`) and the exact mode
(:func:`placement.solvers.exact.solve_exact`, hinted with the engine's plan) and prints
one row per case:

* ``engine excess`` / ``exact excess``: largest weighted utilization over
  ``(1 + target) x mean`` (0 = every node within the target);
* ``engine GB`` / ``exact GB``: bytes moved; ``bound GB``: the exact mode's proven lower
  bound on bytes at its balance; ``gap``: (exact - bound) / exact;
* ``engine $`` / ``exact $``: transfer cost (the exact mode's tie-break after bytes);
* ``stages``: status of the balance / bytes / transfer-cost stages (O: proven optimal,
  F: best found in time); the cost stage is skipped when the cost is already 0;
* ``engine vs opt``: engine bytes over the exact optimum minus 1, when both reach the same
  balance (otherwise ``balance`` when the engine stops at a worse balance);
* with ``--lns S``: ``lns GB`` and ``lns vs opt``, the same for ``plan(method="lns")``
  given S seconds (the engine, then CP-SAT over neighbourhoods of 2-3 nodes), and
  ``lns excess``.

The bound is the larger of CP-SAT's and the LP relaxation's (``polish``, on by default:
exact mode also dives from the LP point and searches with LNS; ``--no-polish`` compares
with the plain search).

Run: ``python benchmarks/exact_vs_engine.py [--time-limit 60] [--workers 1] [--quick]
[--no-polish] [--lns 60]`` (``--quick``: the 500-shard cases only). Seeds are fixed; with
``--workers 1`` a case that ends OPTIMAL gives the same row on any run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import placement
from placement.plan import Plan
from placement.planner import plan
from placement.scenarios import with_failed_domain, with_new_nodes, with_node_state
from placement.solvers.exact import PRESSURE_STEPS, solve_exact


def _scenario(state: placement.State, name: str) -> tuple[placement.State, dict]:
    c = state.cluster
    if name == "rebalance":
        return state, {}
    if name == "drain-1":
        return with_node_state(state, [c.node_ids[0]], "draining"), {"target_imbalance": 10.0}
    if name == "fail-1":
        return with_node_state(state, [c.node_ids[1]], "failed"), {"target_imbalance": 10.0}
    if name == "fail-zone":
        return with_failed_domain(state, "zone", c.domain_names[1][0]), {"target_imbalance": 10.0}
    if name == "add-2":
        picks = [2, 7]
        loc = [[c.domain_leaf[k][c.domain_of[i, k]] for k in range(len(c.levels))] for i in picks]
        loc = [[r, z, f"{z}-new"] for r, z, _ in loc]
        new = with_new_nodes(state, ["new-0", "new-1"], c.capacity[picks], loc)
        return new, {"target_imbalance": 0.1}
    if name == "skew-5pct":
        total = float((state.shards.demand[:, c.size_index] * state.shards.replicas).sum())
        return state, {"max_bytes": 0.05 * total, "target_imbalance": 0.1}
    raise ValueError(name)


def _excess(state: placement.State, nodes: np.ndarray, target: float) -> float:
    c, s = state.cluster, state.shards
    load = placement.node_load(state, nodes)
    mean = (s.demand * s.replicas[:, None]).sum(axis=0) / c.capacity[c.active].sum(axis=0)
    ok = c.active
    p = load[ok] / (c.capacity[ok] * mean[None, :])
    return max(float(p.max()) - (1 + target), 0.0)


def _versus(p: Plan, excess: float, x_ex: float, x_gb: float) -> str:
    """A plan's bytes over exact mode's, when it reaches the same balance."""
    same_balance = round(excess * PRESSURE_STEPS) <= round(x_ex * PRESSURE_STEPS) + 1
    if p.after["violations"]:
        return "invalid"
    if same_balance and x_gb > 0:
        return f"{p.bytes_moved / 1e9 / x_gb - 1:+.2%}"
    if same_balance:
        return "0 = 0" if p.bytes_moved == 0 else "+inf"
    return "balance"


CASES = [
    (15, 500, "rebalance"),
    (15, 500, "drain-1"),
    (15, 500, "fail-1"),
    (20, 2000, "rebalance"),
    (20, 2000, "drain-1"),
    (20, 2000, "fail-1"),
    (20, 2000, "fail-zone"),
    (20, 2000, "add-2"),
    (20, 2000, "skew-5pct"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-polish", action="store_true", help="plain CP-SAT search, no LP dive")
    ap.add_argument("--lns", type=float, default=None, metavar="S", help="also method='lns', S s")
    args = ap.parse_args()
    head = (
        f"{'nodes':>5} {'shards':>6} {'scenario':<10} {'engine excess':>13} {'engine GB':>10} "
        f"{'eng s':>6} {'status':<8} {'stages':<6} {'exact excess':>12} {'exact GB':>10} {'bound GB':>10} "
        f"{'gap':>7} {'exact s':>7} {'engine vs opt':>13} {'engine $':>8} {'exact $':>8}"
        + (f" {'lns excess':>10} {'lns GB':>8} {'lns vs opt':>10}" if args.lns else "")
    )
    print(head)
    print("-" * len(head))
    for n_nodes, n_shards, name in CASES:
        if args.quick and n_shards > 500:
            continue
        base = placement.synthetic_state(n_nodes, n_shards, seed=0)
        state, options = _scenario(base, name)
        target = options.get("target_imbalance", 0.02)
        t0 = time.perf_counter()
        engine = plan(state, time_limit_s=10, allow_partial=True, **options)
        t_engine = time.perf_counter() - t0
        result = solve_exact(
            state,
            time_limit_s=args.time_limit,
            workers=args.workers,
            hint=engine.target_nodes if engine.after["violations"] == 0 else None,
            polish=not args.no_polish,
            **options,
        )
        e_ex = _excess(state, engine.target_nodes, target)
        if result.nodes is None:
            print(
                f"{n_nodes:>5} {n_shards:>6} {name:<10} {e_ex:>13.4f} "
                f"{engine.bytes_moved / 1e9:>10.1f} {t_engine:>6.1f} {result.status:<8}"
            )
            continue
        # Per stage (balance / bytes / cost): O = proven optimal, F = best found.
        stages = "/".join(st["status"][0] for st in result.stages)
        x_ex = result.objective["excess_pressure"]
        x_gb = result.objective["bytes_moved"] / 1e9
        versus = _versus(engine, e_ex, x_ex, x_gb)
        lns_cols = ""
        if args.lns:
            lns = plan(state, method="lns", time_limit_s=args.lns, allow_partial=True, **options)
            l_ex = _excess(state, lns.target_nodes, target)
            lns_cols = (
                f" {l_ex:>10.4f} {lns.bytes_moved / 1e9:>8.1f} {_versus(lns, l_ex, x_ex, x_gb):>10}"
            )
        print(
            f"{n_nodes:>5} {n_shards:>6} {name:<10} {e_ex:>13.4f} "
            f"{engine.bytes_moved / 1e9:>10.1f} {t_engine:>6.1f} {result.status:<8} "
            f"{stages:<6} {x_ex:>12.4f} {x_gb:>10.1f} {result.bound['bytes_moved'] / 1e9:>10.1f} "
            f"{(result.gap or 0):>7.2%} {result.time_s:>7.1f} {versus:>13} "
            f"{float(engine.cost.sum()):>8.2f} {result.objective['transfer_cost']:>8.2f}"
            + lns_cols,
            flush=True,
        )


if __name__ == "__main__":
    main()
