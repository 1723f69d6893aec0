"""``placement roadef``: solve or check a ROADEF/EURO 2012 machine-reassignment instance.

::

    placement roadef MODEL ASSIGNMENT -o SOLUTION [--time-limit S] [--seed K] [--workers W]
                     [--starts KIND ...] [--bound]
    placement roadef MODEL ASSIGNMENT --check SOLUTION

The first form improves the original assignment with the library's reassignment engine
and writes the new assignment in the official solution format; the second evaluates a
given solution file. Both print the five cost terms (original and new), the total and
the feasibility. With ``--bound`` both also prove a lower bound on every solution's cost
(:func:`~placement.solvers.reassign_bound.reassignment_lower_bound`) and print the share
of the new total that it does not prove necessary. Bad input files end in one ``error:``
line (exit 2); a checked solution that violates a hard constraint exits 1.

Kept out of :mod:`placement.cli` so that the benchmark command can grow without touching
the core commands; :func:`register` is the only hook.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from placement.solvers.reassign import START_KINDS

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_INFEASIBLE = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the ``roadef`` command to the ``placement`` parser's subparsers."""
    p = subparsers.add_parser(
        "roadef",
        help="solve or check a ROADEF/EURO 2012 machine-reassignment instance",
        description=(
            "Improve the original assignment of a ROADEF/EURO 2012 instance (model and "
            "assignment files in the challenge's format) and write the new assignment, or "
            "check a solution file. Prints each cost term before and after."
        ),
    )
    p.add_argument("model", help="model file (model_*.txt)")
    p.add_argument("assignment", help="original assignment file (assignment_*.txt)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-o", "--output", help="where to write the solution file")
    what.add_argument("--check", metavar="SOLUTION", help="evaluate this solution file instead")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help=(
            "searches in parallel, one per core; after half the time limit a stuck one "
            "restarts from the best of all; the best wins (default 1)"
        ),
    )
    p.add_argument(
        "--starts",
        nargs="+",
        choices=START_KINDS,
        default=None,
        metavar="KIND",
        help=f"how each worker starts, one per worker ({', '.join(START_KINDS)}; "
        "default: the library's choice for the number of workers)",
    )
    p.add_argument("--no-lns", action="store_true", help="local search only, no CP-SAT steps")
    p.add_argument(
        "--bound",
        action="store_true",
        help="also prove a lower bound (LP relaxation) and print the share of the new "
        "total it does not prove necessary",
    )
    p.add_argument(
        "--bound-time-limit",
        type=float,
        default=60.0,
        help="seconds for the bound's LP, on top of --time-limit (default 60)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``roadef`` command; returns the exit status."""
    from placement.errors import InvalidValueError
    from placement.io.roadef import (
        read_roadef_assignment,
        read_roadef_model,
        write_roadef_solution,
    )
    from placement.roadef import evaluate_roadef, roadef_problem, solve_roadef

    instance = read_roadef_model(args.model)
    original = read_roadef_assignment(args.assignment, instance)
    problem = roadef_problem(instance)
    before = evaluate_roadef(instance, original, original, problem=problem)
    st = instance.stats()
    print(
        f"instance: {st['processes']} processes, {st['machines']} machines, "
        f"{st['resources']} resources ({st['transient']} transient), {st['services']} "
        f"services, {st['dependencies']} dependencies, {st['balance_costs']} balance costs"
    )
    if args.bound and args.bound_time_limit <= 0:
        raise InvalidValueError(
            f"--bound-time-limit must be positive, got {args.bound_time_limit}."
        )
    if args.check is not None:
        solution = read_roadef_assignment(args.check, instance, what="solution")
        after = evaluate_roadef(instance, original, solution, problem=problem)
        _print_terms(before.costs, after.costs)
        _print_feasibility(after.violations)
        if args.bound:
            _print_bound(problem, original, after.costs["total"], args.bound_time_limit)
        return EXIT_OK if after.feasible else EXIT_INFEASIBLE

    if args.time_limit <= 0:
        raise InvalidValueError(f"--time-limit must be positive, got {args.time_limit}.")
    if args.workers < 1:
        raise InvalidValueError(f"--workers must be at least 1, got {args.workers}.")
    if args.starts is not None and len(args.starts) != args.workers:
        raise InvalidValueError(
            f"--starts names {len(args.starts)} start(s) for {args.workers} worker(s); "
            "give one per worker (--workers sets their number)."
        )
    show = not args.quiet and sys.stderr.isatty()

    def progress(info: dict[str, Any]) -> None:
        if show:
            print(
                f"\r{info['seconds']:6.1f}s round {info['round']} {info['phase']:<5} "
                f"total {info['total']:,}",
                end="",
                file=sys.stderr,
            )

    started = time.perf_counter()
    result = solve_roadef(
        instance,
        original,
        time_limit_s=args.time_limit,
        seed=args.seed,
        lns=not args.no_lns,
        progress=progress,
        workers=args.workers,
        starts=args.starts,
    )
    if show:
        print(file=sys.stderr)
    write_roadef_solution(args.output, result.assignment)
    after = evaluate_roadef(instance, original, result.assignment, problem=problem)
    _print_terms(before.costs, after.costs)
    _print_feasibility(after.violations)
    if args.bound:
        _print_bound(problem, original, after.costs["total"], args.bound_time_limit)
    moved = int((result.assignment != original).sum())
    print(
        f"moved {moved} of {len(original)} processes in {result.stats['rounds']} rounds; "
        f"wrote {args.output} ({time.perf_counter() - started:.1f} s, seed {args.seed}, "
        f"{args.workers} worker{'s' if args.workers > 1 else ''})"
    )
    return EXIT_OK if after.feasible else EXIT_INFEASIBLE


def _print_bound(problem: Any, original: Any, total: int, time_limit_s: float) -> None:
    from placement.solvers.reassign_bound import reassignment_lower_bound

    bound = reassignment_lower_bound(problem, original, time_limit_s=time_limit_s)
    lp = (
        f"LP relaxation {bound.lp:,} in {bound.lp_seconds:.1f} s"
        if bound.lp is not None
        else f"LP relaxation {bound.lp_status}"
    )
    unproven = (total - bound.value) / total if total else 0.0
    print(
        f"lower bound: {bound.value:,} (simple {bound.simple:,}; {lp}"
        + ("" if bound.shed is None else f"; per-node shedding {bound.shed:,}")
        + "); "
        f"unproven share of the new total: {unproven:.2%}"
    )


def _print_terms(before: dict[str, int], after: dict[str, int]) -> None:
    print(f"{'term':<14}{'original':>18}{'new':>18}{'change':>18}")
    for term in before:
        change = after[term] - before[term]
        line = f"{term:<14}{before[term]:>18,}{after[term]:>18,}{change:>+18,}"
        if term == "total" and before[term]:
            line += f"  ({change / before[term]:+.2%})"
        print(line)


def _print_feasibility(violations: list[Any]) -> None:
    if not violations:
        print("feasible: yes (capacity, transient, conflict, spread and dependency hold)")
        return
    kinds: dict[str, int] = {}
    for v in violations:
        kinds[v.kind] = kinds.get(v.kind, 0) + 1
    print("feasible: NO (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")")
    for v in violations[:5]:
        print(f"  {v.kind}: {v.message}")
