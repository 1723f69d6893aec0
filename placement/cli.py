"""The ``placement`` command line: parse, call the library, print.

Every failure caused by the input ends in a one-line ``error:`` message and exit status
2, never a traceback. ``analyze`` exits 1 when ``--fail-on`` is met, so a runbook step can
gate on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from placement.errors import PlacementError

__all__ = ["main"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="placement",
        description="Plan where the replicas of sharded data live, and how to get there.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    analyze = sub.add_parser("analyze", help="report balance, health and violations of a state")
    analyze.add_argument("state", help="state document (JSON, placement.state/1)")
    out = analyze.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--prometheus", action="store_true", help="print Prometheus text exposition")
    analyze.add_argument(
        "--fail-on",
        choices=["never", "warning", "critical", "violation"],
        default="never",
        help="exit 1 when the status reaches this level, or on any hard-constraint violation",
    )
    analyze.add_argument(
        "--max-items", type=int, default=None, help="cap each violation list in --json output"
    )

    demo = sub.add_parser("demo", help="analyze the example cluster shipped with the package")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")

    schema = sub.add_parser("schema", help="print the JSON Schema of the state document")
    del schema

    plan = sub.add_parser(
        "plan", help="plan moves: repair first, then improve balance, within the budget"
    )
    plan.add_argument("state", help="state document (JSON, placement.state/1)")
    plan.add_argument(
        "-o", "--output", required=True, help="where to write the plan document (JSON)"
    )
    plan.add_argument(
        "--max-moves", type=int, default=None, help="most moves in the plan, repairs included"
    )
    plan.add_argument(
        "--max-bytes", type=float, default=None, help="most bytes moved, repairs included"
    )
    plan.add_argument("--time-limit", type=float, default=10.0, help="seconds (default 10)")
    plan.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    plan.add_argument(
        "--target-imbalance", type=float, default=0.02, help="stop balancing within this ratio"
    )
    plan.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the best partial plan if constraints remain violated",
    )
    plan.add_argument(
        "--method",
        choices=("fast", "lns", "exact"),
        default="fast",
        help="fast: the vectorized engine (default); lns: the engine, then CP-SAT over "
        "neighbourhoods of 2-3 nodes for the rest of the time limit; exact: CP-SAT "
        "(small clusters)",
    )
    plan.add_argument(
        "--lns-steps",
        type=int,
        default=None,
        metavar="N",
        help="with --method lns: most neighbourhoods (reproducible on any machine)",
    )
    shown = plan.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="no progress line")
    shown.add_argument(
        "--progress",
        action="store_true",
        help="progress lines on stderr even when it is not a terminal (logs, CI)",
    )
    from placement.cli_exec import register  # schedule, validate, verify, resume

    register(sub)
    from placement.cli_roadef import register as register_roadef  # roadef

    register_roadef(sub)
    from placement.cli_geo import register as register_geo  # geo, cost

    register_geo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except PlacementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `placement analyze x.json | head`
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    if hasattr(args, "handler"):  # commands registered by placement.cli_exec
        return int(args.handler(args))
    from placement.evaluate import evaluate

    if args.command == "schema":
        from placement.schema import state_schema

        print(json.dumps(state_schema(), indent=2))
        return EXIT_OK
    if args.command == "demo":
        from placement.datasets import example_state

        report = evaluate(example_state())
        print(report.to_json(max_items=20) if args.json else report.to_text())
        if not args.json:
            print(
                "\nThis is the example cluster shipped with placement (placement/data/example_state.json):"
                "\na failed node, a newly joined empty node and a hot node above headroom."
            )
        return EXIT_OK
    if args.command == "plan":
        return _plan(args)
    if args.command == "analyze":
        from placement.io import load_state

        report = evaluate(load_state(args.state))
        if args.json:
            print(report.to_json(max_items=args.max_items))
        elif args.prometheus:
            sys.stdout.write(report.to_prometheus())
        else:
            print(report.to_text())
        failed = {
            "never": False,
            "warning": report.status in ("warning", "critical"),
            "critical": report.status == "critical",
            "violation": bool(report.violations),
        }[args.fail_on]
        return EXIT_CHECK_FAILED if failed else EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees a command


def _plan(args: argparse.Namespace) -> int:
    from placement.io import load_state
    from placement.planner import plan

    state = load_state(args.state)
    tty = sys.stderr.isatty()
    show = args.progress or (not args.quiet and tty)
    last = [-1.0]

    def progress(info: dict[str, object]) -> bool:
        # On a terminal one line redrawn in place; elsewhere a line at most every 0.5 s,
        # and the last step of a counted phase.
        now = time.monotonic()
        final = info.get("total") is not None and info.get("done") == info.get("total")
        if show and (tty or final or now - last[0] >= 0.5):
            last[0] = now
            total = f"/{info['total']}" if info.get("total") else ""
            start = "\r" if tty else ""
            print(
                f"{start}{info['phase']}: {info['done']}{total} steps, "
                f"{info['moves']} moves, "
                f"{float(info['bytes_moved']) / 1e9:,.1f} GB",  # type: ignore[arg-type]
                end="" if tty else "\n",
                file=sys.stderr,
            )
        return True

    result = plan(
        state,
        max_moves=args.max_moves,
        max_bytes=args.max_bytes,
        time_limit_s=args.time_limit,
        seed=args.seed,
        target_imbalance=args.target_imbalance,
        allow_partial=args.allow_partial,
        progress=progress,
        method=args.method,
        lns_steps=args.lns_steps,
    )
    if show and tty:
        print(file=sys.stderr)
    try:
        result.dump(state, args.output)
    except OSError as exc:
        print(f"error: cannot write {args.output!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ratio = result.bound_ratio
    before = result.before["imbalance"]
    after = result.after["imbalance"]
    print(
        f"{result.n_moves} moves, {result.bytes_moved / 1e9:,.1f} GB "
        f"(lower bound {result.lower_bound_bytes / 1e9:,.1f} GB, ratio {'n/a' if ratio is None else f'{ratio:.3f}'}, "
        f"gap {'n/a' if result.gap is None else f'{result.gap:.1%}'}); "
        f"violations {result.before['violations']} -> {result.after['violations']}; "
        + ", ".join(f"{r} imbalance {_fmt(before[r])} -> {_fmt(after[r])}" for r in before)
        + _latency_line(result)
        + f"; wrote {args.output}"
    )
    return EXIT_OK if result.after["violations"] == 0 else EXIT_CHECK_FAILED


def _latency_line(result: object) -> str:
    """'; within 50 ms 74.6% -> 85.1%' when the plan ran the latency phase, else ''."""
    before = result.before.get("latency") or {}  # type: ignore[attr-defined]
    after = result.after.get("latency") or {}  # type: ignore[attr-defined]
    if "latency" not in result.stats or after.get("compliance") is None:  # type: ignore[attr-defined]
        return ""
    target = after.get("latency_target_ms")
    return (
        f"; within {target:g} ms {_fmt(before.get('compliance'))} -> "
        f"{_fmt(after.get('compliance'))}"
    )


def _fmt(x: object) -> str:
    return "n/a" if x is None else f"{float(x):.1%}"  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
