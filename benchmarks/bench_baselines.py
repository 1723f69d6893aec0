"""Baselines beside the engine (issue 3, part 8): same scenarios, same run, quality beside time.

Cases (the scenarios of ``bench_engine.py``):

* ``test_engine``: :func:`placement.planner.plan`, tiers S and M, for reference.
* ``test_one_move_greedy``: the classic one-move-at-a-time balancer, tiers S and M.
* ``test_rendezvous``: weighted rendezvous remapping, tiers S and M. Tier L is left out:
  rendezvous ranks every node for every shard, 10,000 x 1,000,000 keys; measured once on
  the L base state it took 182 s (834 MB peak RSS) and left 328 capacity violations,
  which is not "fast" (1.3 s at M).
* ``test_naive_cpsat``: the naive CP-SAT model at tier S, every scenario.
* ``test_naive_cpsat_sweep``: the naive model on growing clusters (15/20/50/100 nodes with
  100/500/2,000/10,000 shards; the synthetic generator needs 15 nodes, one per zone) for
  the add-10% scenario, to find where it stops finding plans.

CP-SAT is asked for the engine's quality: ``target_imbalance`` is the worst imbalance the
engine's plan reached (the engine aims at 2% but may stop above it), with the scenario's
budget, and ``time_to_match_s`` is when its first solution at least as good as the
engine's plan in bytes moved and worst imbalance arrived. ``slowdown`` is that time over
the engine's planning time (CP-SAT's model building not included; it is ``build_s``).

Each case records in ``extra_info``: moves, bytes moved, the lower bound of the
baseline's **own** target (:func:`placement.planner.lower_bound_bytes`: what any plan
reaching the same peak utilizations must move) and the ratio to it, the engine's bytes
for comparison, imbalance per resource (:func:`placement.planner.imbalance`), violations
(:func:`placement.constraints.check`), status and the baseline's statistics.

Run: ``python -m pytest benchmarks --benchmark-only -k "bench_baselines and S"`` (naming the
file itself collects it twice: once by pytest, once by the conftest hook);
``benchmarks/baselines_table.py`` prints the same comparisons as markdown tables. The
cases are cached at module level rather than through the ``tier_state`` fixture (same
generator, same seed) so that the table script can use them without pytest.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import placement
from placement.constraints import check, node_load
from placement.plan import Plan
from placement.planner import imbalance, lower_bound_bytes, plan
from placement.solvers.baselines import (
    BaselineResult,
    moved_replicas,
    naive_cpsat,
    one_move_greedy,
    rendezvous_remap,
)


def _sibling(name: str) -> ModuleType:
    """Load a benchmark module next to this one (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_engine_bench = _sibling("bench_engine")
#: The engine benchmark's scenarios and time limits, so that both files measure the same.
scenario = _engine_bench._scenario
TIME_LIMIT_S: dict[str, float] = _engine_bench.TIME_LIMIT_S
SCENARIOS = ("add-10pct", "drain-1", "fail-zone", "skew-5pct", "capacity-change")
CPSAT_TIME_LIMIT_S = 60.0
#: (nodes, shards) of the naive CP-SAT sweep; the last is tier S.
SWEEP = ((15, 100), (20, 500), (50, 2_000), (100, 10_000))
SWEEP_SCENARIO = "add-10pct"
SEED = 0


@functools.cache
def base_state(n_nodes: int, n_shards: int) -> placement.State:
    """The seeded synthetic state of a size (tier S is ``base_state(100, 10_000)``)."""
    return placement.synthetic_state(n_nodes, n_shards, seed=SEED)


def tier_size(tier: str) -> tuple[int, int]:
    t = placement.TIERS[tier]
    return t.n_nodes, t.n_shards


@functools.cache
def case(n_nodes: int, n_shards: int, name: str) -> tuple[placement.State, dict[str, Any]]:
    """A scenario's state and the plan options of ``bench_engine.py`` for it."""
    state, options = scenario(base_state(n_nodes, n_shards), name)
    state.sha256()  # hash once, outside any timing (cached on the state)
    return state, options


def time_limit(n_nodes: int) -> float:
    """The engine benchmark's time limit for the tier of this size."""
    tier = "S" if n_nodes <= 100 else "M" if n_nodes <= 1_000 else "L"
    return TIME_LIMIT_S[tier]


@functools.cache
def engine_plan(n_nodes: int, n_shards: int, name: str) -> Plan:
    """The engine's plan of a case (the reference quality for the CP-SAT runs)."""
    state, options = case(n_nodes, n_shards, name)
    return plan(state, time_limit_s=time_limit(n_nodes), seed=SEED, allow_partial=True, **options)


def worst(imb: dict[str, float | None]) -> float:
    return max((v for v in imb.values() if v is not None), default=0.0)


def summarize(state: placement.State, nodes: np.ndarray) -> dict[str, Any]:
    """Quality of a target placement, judged like every plan: moves and bytes of the diff,
    the lower bound of this target's own peak utilizations, imbalance, violations."""
    moves, bytes_moved = moved_replicas(state, nodes)
    load = node_load(state, nodes)
    v = check(state, nodes, load=load)
    bound = lower_bound_bytes(state, nodes, target_load=load)
    imb = imbalance(state, nodes, load)
    return {
        "moves": moves,
        "bytes_moved": bytes_moved,
        "lower_bound_bytes": bound,
        "lower_bound_of": "own target",
        "bytes_over_bound": bytes_moved / bound if bound > 0 else None,
        "imbalance_after": imb,
        "worst_imbalance": worst(imb),
        "violations_after": v.total,
        "violation_counts": {k: n for k, n in v.counts().items() if n},
    }


def record(benchmark: Any, state: placement.State, result: BaselineResult, **extra: Any) -> None:
    stats = {k: v for k, v in result.stats.items() if k != "solutions"}
    benchmark.extra_info.update(
        {**extra, **summarize(state, result.nodes), "status": result.status, "stats": stats}
    )


# -- the engine, for reference -------------------------------------------------------------


@pytest.mark.parametrize("scenario_name", SCENARIOS)
@pytest.mark.parametrize("tier", ["S", "M"])
def test_engine(benchmark, tier, scenario_name):
    state, options = case(*tier_size(tier), scenario_name)
    result = benchmark.pedantic(
        plan,
        args=(state,),
        kwargs={"time_limit_s": TIME_LIMIT_S[tier], "seed": SEED, **options},
        rounds=1 if tier == "M" else 3,
        iterations=1,
    )
    benchmark.extra_info.update(
        {
            "tier": tier,
            "scenario": scenario_name,
            "method": "engine",
            **summarize(state, result.target_nodes),
            "status": result.stats.get("stop_reason"),
        }
    )
    assert result.after["violations"] == 0


# -- one move at a time --------------------------------------------------------------------


@pytest.mark.parametrize("scenario_name", SCENARIOS)
@pytest.mark.parametrize("tier", ["S", "M"])
def test_one_move_greedy(benchmark, tier, scenario_name):
    state, options = case(*tier_size(tier), scenario_name)
    result = benchmark.pedantic(
        one_move_greedy,
        args=(state,),
        kwargs={"time_limit_s": TIME_LIMIT_S[tier], "seed": SEED, **options},
        rounds=1 if tier == "M" else 3,
        iterations=1,
    )
    record(
        benchmark,
        state,
        result,
        tier=tier,
        scenario=scenario_name,
        method="one-move greedy",
        engine_bytes_moved=engine_plan(*tier_size(tier), scenario_name).bytes_moved,
    )
    # Every greedy move keeps every hard constraint; only a spent budget or time limit
    # can leave a repair undone.
    if result.status not in ("budget", "time-limit"):
        assert benchmark.extra_info["violations_after"] == 0


# -- rendezvous ----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario_name", SCENARIOS)
@pytest.mark.parametrize("tier", ["S", "M"])
def test_rendezvous(benchmark, tier, scenario_name):
    state, options = case(*tier_size(tier), scenario_name)
    result = benchmark.pedantic(
        rendezvous_remap,
        args=(state,),
        kwargs={"time_limit_s": TIME_LIMIT_S[tier], "seed": SEED, **options},
        rounds=1 if tier == "M" else 3,
        iterations=1,
    )
    # Capacity violations are expected (hashing ignores load) and recorded, not asserted.
    record(
        benchmark,
        state,
        result,
        tier=tier,
        scenario=scenario_name,
        method="rendezvous",
        engine_bytes_moved=engine_plan(*tier_size(tier), scenario_name).bytes_moved,
    )


# -- naive CP-SAT --------------------------------------------------------------------------


def cpsat_options(n_nodes: int, n_shards: int, name: str) -> dict[str, Any]:
    """The scenario's budget, with the engine's reached quality as CP-SAT's goal."""
    _, options = case(n_nodes, n_shards, name)
    ref = engine_plan(n_nodes, n_shards, name)
    reached = worst(ref.after["imbalance"])
    kept = {k: v for k, v in options.items() if k in ("max_moves", "max_bytes")}
    return {
        **kept,
        "target_imbalance": reached,
        "match_bytes": ref.bytes_moved,
        "match_imbalance": reached,
        "time_limit_s": CPSAT_TIME_LIMIT_S,
        "seed": SEED,
    }


def _cpsat_case(benchmark: Any, n_nodes: int, n_shards: int, name: str, **extra: Any) -> None:
    state, _ = case(n_nodes, n_shards, name)
    ref = engine_plan(n_nodes, n_shards, name)
    result = benchmark.pedantic(
        naive_cpsat,
        args=(state,),
        kwargs=cpsat_options(n_nodes, n_shards, name),
        rounds=1,
        iterations=1,
    )
    match_s = result.stats.get("time_to_match_s")
    engine_s = ref.stats["time_s"]
    record(
        benchmark,
        state,
        result,
        **extra,
        scenario=name,
        method="naive CP-SAT",
        nodes=n_nodes,
        shards=n_shards,
        found=result.found,
        engine_time_s=engine_s,
        engine_bytes_moved=ref.bytes_moved,
        engine_worst_imbalance=worst(ref.after["imbalance"]),
        slowdown=(match_s / engine_s) if match_s is not None and engine_s > 0 else None,
    )
    if result.found:
        assert benchmark.extra_info["violations_after"] == 0


@pytest.mark.parametrize("scenario_name", SCENARIOS)
def test_naive_cpsat(benchmark, scenario_name):
    _cpsat_case(benchmark, *tier_size("S"), scenario_name, tier="S")


@pytest.mark.parametrize(("n_nodes", "n_shards"), SWEEP[:-1])
def test_naive_cpsat_sweep(benchmark, n_nodes, n_shards):
    # The sweep's last point is tier S, measured by test_naive_cpsat.
    _cpsat_case(benchmark, n_nodes, n_shards, SWEEP_SCENARIO, tier="sweep")
