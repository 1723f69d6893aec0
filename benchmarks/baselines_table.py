"""Print the engine-versus-baselines comparison of issue 3 as markdown tables.

One command, fixed seed (the cases and options of ``bench_baselines.py``)::

    .venv/bin/python benchmarks/baselines_table.py            # about 12 minutes
    .venv/bin/python benchmarks/baselines_table.py --quick    # tier S only, CP-SAT 10 s

Table 1: every method on every scenario (engine, one-move greedy and rendezvous at tiers
S and M, naive CP-SAT at S). Table 2: the naive CP-SAT sweep, when it finds a first plan
and when (if ever) it reaches the engine's quality. Times are single wall-clock runs on a
shared machine: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bb = _load("bench_baselines")


def _fmt_bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x / 1e9:.3f} GB"


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _imb(imb: dict[str, float | None]) -> str:
    return " / ".join("-" if v is None else f"{100 * v:.1f}%" for v in imb.values())


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _row(tier: str, name: str, method: str, res: Any, seconds: float, q: dict[str, Any]) -> str:
    status = res if isinstance(res, str) else res.status
    if not isinstance(res, str) and not res.found:
        return (
            f"| {tier} | {name} | {method} | {status} | {seconds:.2f} | no plan | - | - | - | - |"
        )
    counts = ", ".join(f"{k} {n}" for k, n in q["violation_counts"].items())
    ratio = q["bytes_over_bound"]
    if ratio is None:
        # A bound of 0: the target's peaks are no lower than today's, so nothing had to move.
        ratio_text = "inf (LB 0)" if q["bytes_moved"] > 0 else "1.00"
    else:
        ratio_text = f"{ratio:.2f}"
    return (
        f"| {tier} | {name} | {method} | {status} | {seconds:.2f} | {q['moves']} | "
        f"{_fmt_bytes(q['bytes_moved'])} | {ratio_text} | "
        f"{_imb(q['imbalance_after'])} | {q['violations_after']}"
        + (f" ({counts})" if counts else "")
        + " |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tier S only, CP-SAT limit 10 s")
    args = parser.parse_args(argv)
    tiers = ["S"] if args.quick else ["S", "M"]
    if args.quick:
        bb.CPSAT_TIME_LIMIT_S = 10.0
    t_start = time.perf_counter()

    print("## Engine and baselines, per tier and scenario\n")
    print(
        "Bytes/LB: bytes moved over `lower_bound_bytes` of the method's **own** target (what "
        "any plan reaching the same peak utilizations must move). Imbalance: disk / iops "
        "after the plan. Violations: `placement.constraints.check(...).total` of the "
        "target. Time: one wall-clock call (for CP-SAT, model building included).\n"
    )
    print(
        "| tier | scenario | method | status | time s | moves | bytes moved | bytes/LB "
        "| imbalance (disk / iops) | violations |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---|---|")
    cpsat_rows: list[str] = []
    for tier in tiers:
        size = bb.tier_size(tier)
        limit = bb.TIME_LIMIT_S[tier]
        for name in bb.SCENARIOS:
            state, options = bb.case(*size, name)
            ref, t_ref = _timed(bb.engine_plan, *size, name)
            print(
                _row(
                    tier,
                    name,
                    "engine",
                    str(ref.stats.get("stop_reason")),
                    t_ref,
                    bb.summarize(state, ref.target_nodes),
                ),
                flush=True,
            )
            for method, fn in (
                ("one-move greedy", bb.one_move_greedy),
                ("rendezvous", bb.rendezvous_remap),
            ):
                res, t = _timed(fn, state, time_limit_s=limit, seed=bb.SEED, **options)
                print(
                    _row(tier, name, method, res, t, bb.summarize(state, res.nodes)),
                    flush=True,
                )
            if tier == "S":
                res, t = _timed(bb.naive_cpsat, state, **bb.cpsat_options(*size, name))
                print(
                    _row(tier, name, "naive CP-SAT", res, t, bb.summarize(state, res.nodes)),
                    flush=True,
                )
                cpsat_rows.append(_cpsat_row(size, name, res, ref))

    print("\n## Naive CP-SAT: where it stops finding plans, and time to the engine's quality\n")
    print(
        f"Time limit {bb.CPSAT_TIME_LIMIT_S:.0f} s per solve (model building extra), 2 "
        "workers, the scenario's budget, `target_imbalance` = the engine's reached worst "
        "imbalance. *to engine quality*: solve time of the first CP-SAT solution with bytes "
        "moved and worst imbalance at least as good as the engine's plan; *slowdown*: that "
        "time over the engine's planning time.\n"
    )
    print(
        "| nodes | shards | scenario | x vars | build s | model RSS MB | status | first "
        "solution s | to engine quality s | engine s | slowdown | CP-SAT bytes / worst imb "
        "| engine bytes / worst imb |"
    )
    print("|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|")
    sweep = bb.SWEEP[:-1] if not args.quick else bb.SWEEP[:2]
    for n_nodes, n_shards in sweep:
        name = bb.SWEEP_SCENARIO
        state, _ = bb.case(n_nodes, n_shards, name)
        ref = bb.engine_plan(n_nodes, n_shards, name)
        res = bb.naive_cpsat(state, **bb.cpsat_options(n_nodes, n_shards, name))
        print(_cpsat_row((n_nodes, n_shards), name, res, ref), flush=True)
    for row in cpsat_rows:
        print(row)
    print(f"\n_Total wall time {time.perf_counter() - t_start:.0f} s._")
    return 0


def _cpsat_row(size: tuple[int, int], name: str, res: Any, ref: Any) -> str:
    state, _ = bb.case(*size, name)
    st = res.stats
    match_s = st.get("time_to_match_s")
    engine_s = ref.stats["time_s"]
    slowdown = (
        f"{match_s / engine_s:.0f}x"
        if match_s is not None and engine_s > 0
        else (f"> {st.get('solve_s', 0) / engine_s:.0f}x" if engine_s > 0 else "-")
    )
    if res.found:
        q = bb.summarize(state, res.nodes)
        mine = f"{_fmt_bytes(q['bytes_moved'])} / {100 * q['worst_imbalance']:.1f}%"
    else:
        mine = "-"
    theirs = f"{_fmt_bytes(ref.bytes_moved)} / {100 * bb.worst(ref.after['imbalance']):.1f}%"
    return (
        f"| {size[0]} | {size[1]} | {name} | {st.get('n_x_variables')} | {_fmt(st.get('build_s'))} "
        f"| {_fmt(st.get('model_build_rss_mb'), 0)} | {res.status} | "
        f"{_fmt(st.get('first_solution_s'))} | {_fmt(match_s)} | {engine_s:.2f} | {slowdown} "
        f"| {mine} | {theirs} |"
    )


if __name__ == "__main__":
    sys.exit(main())
