"""``placement geo`` and ``placement cost``: the weekly geographic optimization and the
cost of a plan.

::

    placement geo STATE -o PLAN [--max-moves N] [--max-bytes B] [--latency-target MS]
                                [--goal SHARE] [--time-limit S] [--seed K] [--allow-partial]
    placement cost STATE PLAN [--json] [--moves N]

``geo`` repairs what violates the policy, then moves replicas toward their clients until
latency compliance and regional coverage reach the goal (default: the policy's coverage
target, 80%), within the budget, and writes the plan document; it exits 1 when the plan
leaves hard constraints violated (only with ``--allow-partial``). ``cost`` prints the
bytes, transfer cost and estimated time of a plan per region pair, its cross-region
volume against ``policy.cross_region_alert_bytes`` and its bytes into disallowed
regions. Bad input ends in one ``error:`` line (exit 2).

Kept out of :mod:`placement.cli`; :func:`register` is the only hook.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run_cost", "run_geo"]

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the ``geo`` and ``cost`` commands to the ``placement`` parser's subparsers."""
    geo = subparsers.add_parser(
        "geo",
        help="plan moves that bring replicas near their clients (latency, coverage)",
        description=(
            "Repair what violates the policy, then move replicas toward their clients until "
            "latency compliance and regional coverage reach the goal, fewest bytes and "
            "lowest transfer cost first, within the budget. Residency holds for every copy."
        ),
    )
    geo.add_argument("state", help="state document (JSON, placement.state/1)")
    geo.add_argument("-o", "--output", required=True, help="where to write the plan (JSON)")
    geo.add_argument(
        "--max-moves", type=int, default=None, help="most moves in the plan, repairs included"
    )
    geo.add_argument(
        "--max-bytes", type=float, default=None, help="most bytes moved, repairs included"
    )
    geo.add_argument(
        "--latency-target",
        type=float,
        default=None,
        metavar="MS",
        help="latency target in ms (default: the policy's, else 50)",
    )
    geo.add_argument(
        "--goal",
        type=float,
        default=None,
        metavar="SHARE",
        help="compliance and coverage goal in [0, 1] (default: policy.coverage_target)",
    )
    geo.add_argument("--time-limit", type=float, default=10.0, help="seconds (default 10)")
    geo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    geo.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the best partial plan if constraints remain violated",
    )
    geo.set_defaults(handler=run_geo)

    cost = subparsers.add_parser(
        "cost",
        help="bytes, transfer cost and time of a plan per region pair",
        description=(
            "Report a plan's bytes, transfer cost and estimated transfer time per (source "
            "region, target region) pair, its cross-region volume (alert above "
            "policy.cross_region_alert_bytes) and any bytes into disallowed regions."
        ),
    )
    cost.add_argument("state", help="state document the plan was made for")
    cost.add_argument("plan", help="plan document (JSON, placement.plan/1)")
    cost.add_argument("--json", action="store_true", help="print the report as JSON")
    cost.add_argument(
        "--moves",
        type=int,
        default=0,
        metavar="N",
        help="with --json, also list the N moves of best benefit per byte",
    )
    cost.set_defaults(handler=run_cost)


def _pct(x: object) -> str:
    return "n/a" if x is None else f"{float(x):.1%}"  # type: ignore[arg-type]


def run_geo(args: argparse.Namespace) -> int:
    """Execute a parsed ``geo`` command; returns the exit status."""
    from placement.io import load_state
    from placement.scenarios import plan_geo

    state = load_state(args.state)
    result = plan_geo(
        state,
        max_moves=args.max_moves,
        max_bytes=args.max_bytes,
        latency_target_ms=args.latency_target,
        compliance_goal=args.goal,
        coverage_goal=args.goal,
        time_limit_s=args.time_limit,
        seed=args.seed,
        allow_partial=args.allow_partial,
    )
    try:
        result.dump(state, args.output)
    except OSError as exc:
        print(f"error: cannot write {args.output!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    before, after = result.before["latency"], result.after["latency"]
    geo = result.stats["geo"]
    print(
        f"{result.n_moves} moves ({geo['moves']} for latency), "
        f"{result.bytes_moved / 1e9:,.1f} GB, transfer cost ${float(result.cost.sum()):,.2f}; "
        f"within {after['latency_target_ms']:g} ms {_pct(before['compliance'])} -> "
        f"{_pct(after['compliance'])}, coverage {_pct(before['coverage'])} -> "
        f"{_pct(after['coverage'])} (goal {_pct(geo['compliance_goal'])}, residency allows "
        f"{_pct(geo['achievable_compliance'])}); violations {result.before['violations']} -> "
        f"{result.after['violations']}; {geo['stop_reason']}; wrote {args.output}"
    )
    return EXIT_OK if result.after["violations"] == 0 else EXIT_VIOLATIONS


def run_cost(args: argparse.Namespace) -> int:
    """Execute a parsed ``cost`` command; returns the exit status."""
    from placement.cost import cost_report
    from placement.io import load_state
    from placement.plan import load_plan

    state = load_state(args.state)
    report = cost_report(state, load_plan(args.plan, state))
    print(report.to_json(max_moves=args.moves) if args.json else report.to_text())
    return EXIT_OK
