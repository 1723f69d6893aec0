"""The execution commands of the ``placement`` CLI: schedule, validate, verify, resume.

:func:`register` adds them to the main parser (:mod:`placement.cli`); each command's
handler returns the exit status: 0 when all is well, 1 when a check fails (with a
readable list), and input errors end in one ``error:`` line with status 2 (raised as
:class:`~placement.errors.PlacementError`, printed by :func:`placement.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from placement.errors import SchemaError, UnknownIdError, format_ids

__all__ = ["register"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


def register(sub: Any) -> None:
    """Add ``schedule``, ``validate``, ``verify`` and ``resume`` to the CLI's subparsers."""
    p = sub.add_parser(
        "schedule", help="order a plan's moves into safe waves, with an estimated duration"
    )
    p.add_argument("state", help="state document the plan was made for")
    p.add_argument("plan", help="plan document (placement.plan/1)")
    p.add_argument("-o", "--output", required=True, help="where to write the scheduled plan")
    _limits(p)
    p.add_argument(
        "--no-region-links", action="store_true", help="do not throttle copies between regions"
    )
    p.add_argument(
        "--no-temporary",
        action="store_true",
        help="report cycles between full nodes instead of routing through a temporary node",
    )
    _approval_options(p)
    p.set_defaults(handler=_schedule)

    p = sub.add_parser(
        "validate", help="replay a plan or scheduled plan and list every safety violation"
    )
    p.add_argument("state", help="state document the plan was made for")
    p.add_argument("plan", help="plan document, scheduled (with waves) or not")
    _limits(p)
    p.add_argument("--max-moves", type=int, default=None, help="budget: most moves")
    p.add_argument("--max-bytes", type=float, default=None, help="budget: most bytes moved")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _approval_options(p)
    p.set_defaults(handler=_validate)

    p = sub.add_parser("verify", help="compare the cluster after (partial) execution with the plan")
    p.add_argument("state", help="state document the plan was made for")
    p.add_argument("plan", help="plan document")
    p.add_argument("observed", help="state document read from the cluster now")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--partial-ok",
        action="store_true",
        help="exit 0 while moves are only pending (nothing failed or lost)",
    )
    p.set_defaults(handler=_verify)

    p = sub.add_parser(
        "resume", help="plan what is left after a partial execution, keeping the work done"
    )
    p.add_argument("state", help="state document the plan was made for")
    p.add_argument("plan", help="plan document")
    p.add_argument("observed", help="state document read from the cluster now")
    p.add_argument("-o", "--output", required=True, help="where to write the new plan")
    p.add_argument("--no-schedule", action="store_true", help="write the plan without waves")
    p.add_argument("--time-limit", type=float, default=10.0, help="planner seconds (default 10)")
    p.set_defaults(handler=_resume)


def _limits(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="transfers per node and wave (default: policy.max_concurrent_per_node)",
    )
    p.add_argument(
        "--max-bytes-in-flight", type=float, default=None, help="bytes copied per wave at most"
    )


def _approval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--approval-bytes", type=float, default=None, help="approval needed above these bytes"
    )
    p.add_argument(
        "--approval-share",
        type=float,
        default=None,
        help="approval needed above this share of the cluster's bytes (0..1)",
    )
    p.add_argument(
        "--approval-cross-region-bytes",
        type=float,
        default=None,
        help="approval needed above these cross-region bytes (default: policy, 100 GB)",
    )


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SchemaError(f"{what} file {path!r} does not exist.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"Cannot read {what} file {path!r}: {exc}.") from None


def _write(path: str, doc: dict[str, Any]) -> int | None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    except OSError as exc:
        print(f"error: cannot write {path!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return None


def _donors(doc: dict[str, Any], state: Any) -> np.ndarray | None:
    """The ``copy_from`` of each move, when the document names them (scheduled plans)."""
    moves = doc.get("moves") or []
    if not moves or not all(isinstance(m, dict) and "copy_from" in m for m in moves):
        return None
    index = state.cluster.node_index()
    out = np.full(len(moves), -1, dtype=np.int64)
    unknown = []
    for k, m in enumerate(moves):
        d = m["copy_from"]
        if d is None:
            continue
        if not isinstance(d, str) or d not in index:
            unknown.append(f"moves[{k}].copy_from")
            continue
        out[k] = index[d]
    if unknown:
        raise UnknownIdError(f"Unknown donor nodes in {format_ids(unknown)}.")
    return out


def _approval_line(state: Any, plan: Any, args: argparse.Namespace) -> str:
    from placement.validate import approval

    a = approval(
        state,
        plan,
        max_bytes=args.approval_bytes,
        max_cluster_share=args.approval_share,
        max_cross_region_bytes=args.approval_cross_region_bytes,
    )
    if a.required:
        return "approval required: " + "; ".join(a.reasons)
    return (
        f"approval not required ({a.bytes_moved / 1e9:,.1f} GB, {a.cluster_share:.2%} of the "
        f"cluster, {a.cross_region_bytes / 1e9:,.1f} GB cross-region)"
    )


def _schedule(args: argparse.Namespace) -> int:
    from placement.io import load_state
    from placement.plan import plan_from_document
    from placement.schedule import schedule

    state = load_state(args.state)
    plan = plan_from_document(_read_json(args.plan, "Plan"), state)
    result = schedule(
        state,
        plan,
        max_concurrent_per_node=args.max_concurrent,
        max_bytes_in_flight=args.max_bytes_in_flight,
        region_links=not args.no_region_links,
        temporary_placements=not args.no_temporary,
    )
    failed = _write(args.output, result.to_document(state))
    if failed is not None:
        return failed
    ratio = result.ratio
    print(
        f"{result.plan.n_moves} moves in {result.n_waves} waves"
        + (f" ({int(result.temporary.sum())} temporary)" if result.temporary.any() else "")
        + f", estimated {_duration(result.duration_s)} (lower bound "
        f"{_duration(result.lower_bound_s)}, ratio {'n/a' if ratio is None else f'{ratio:.3f}'}); "
        f"wrote {args.output}"
    )
    print(_approval_line(state, result, args))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from placement.io import load_state
    from placement.plan import plan_from_document
    from placement.validate import validate

    state = load_state(args.state)
    doc = _read_json(args.plan, "Plan")
    # Drift is reported as a violation (exit 1) rather than refused (exit 2).
    plan = plan_from_document(doc, state, check_hash=False)
    report = validate(
        state,
        plan,
        donors=_donors(doc, state),
        max_concurrent_per_node=args.max_concurrent,
        max_bytes_in_flight=args.max_bytes_in_flight,
        max_moves=args.max_moves,
        max_bytes=args.max_bytes,
    )
    if args.json:
        out = report.to_dict(limit=None)
        print(json.dumps(out, indent=1))
    else:
        print(report.to_text())
        print(_approval_line(state, plan, args))
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def _verify(args: argparse.Namespace) -> int:
    from placement.io import load_state
    from placement.plan import plan_from_document
    from placement.verify import verify

    state = load_state(args.state)
    plan = plan_from_document(_read_json(args.plan, "Plan"), state)
    report = verify(state, plan, load_state(args.observed))
    if args.json:
        print(json.dumps(report.to_dict(limit=None), indent=1))
    else:
        print(report.to_text())
    good = report.ok if args.partial_ok else report.complete
    return EXIT_OK if good else EXIT_CHECK_FAILED


def _resume(args: argparse.Namespace) -> int:
    from placement.io import load_state
    from placement.plan import plan_from_document
    from placement.schedule import schedule
    from placement.verify import resume

    state = load_state(args.state)
    plan = plan_from_document(_read_json(args.plan, "Plan"), state)
    observed = load_state(args.observed)
    new = resume(state, plan, observed, time_limit_s=args.time_limit)
    if args.no_schedule:
        doc = new.to_document(observed)
        note = ""
    else:
        result = schedule(observed, new)
        doc = result.to_document(observed)
        note = f" in {result.n_waves} waves, estimated {_duration(result.duration_s)}"
    failed = _write(args.output, doc)
    if failed is not None:
        return failed
    stats = new.stats
    print(
        f"{new.n_moves} moves left{note} ({stats.get('kept', 0)} kept from the plan, "
        f"{stats.get('replanned', 0)} from a repair; {stats.get('done', 0)} done, "
        f"{stats.get('failed', 0)} failed); violations {new.before['violations']} -> "
        f"{new.after['violations']}; wrote {args.output}"
    )
    return EXIT_OK if new.after["violations"] == 0 else EXIT_CHECK_FAILED


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"
