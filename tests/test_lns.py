"""``method="lns"``: CP-SAT over neighbourhoods of the engine's plan (placement.solvers.lns).

The conformance suite (tests/test_conformance.py) checks that LNS reaches the optimum of
every canonical instance, including two the fast engine misses. Here: soundness, budgets,
never worse than the engine, determinism per seed, the skip and stop paths, and that it
closes part of the engine's distance on a cluster where the engine trades.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import placement
from placement import InvalidValueError
from placement.cli import main
from placement.io import dump_state
from placement.plan import load_plan
from placement.planner import plan
from placement.scenarios import with_new_nodes, with_node_state
from placement.solvers.exact import PRESSURE_STEPS, objective_of
from placement.solvers.lns import improve
from tests.test_planner import _assert_sound


def _key(state, rows, target=0.02):
    o = objective_of(state, rows, target_imbalance=target)
    return (round(o["excess_pressure"] * PRESSURE_STEPS), o["bytes_moved"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    scenario=st.sampled_from(["rebalance", "new nodes", "drain", "byte budget", "move budget"]),
)
def test_lns_plans_are_sound_within_budget_never_worse_and_deterministic(seed, scenario):
    state = placement.synthetic_state(16, 240, seed=seed)
    c = state.cluster
    kwargs: dict = {"time_limit_s": 60, "seed": seed, "lns_steps": 5}
    if scenario == "new nodes":
        loc = [[c.domain_leaf[k][c.domain_of[i, k]] for k in range(len(c.levels))] for i in (0, 5)]
        state = with_new_nodes(state, ["n0", "n1"], c.capacity[[0, 5]], loc)
    elif scenario == "drain":
        state = with_node_state(state, [c.node_ids[seed % c.n_nodes]], "draining")
    elif scenario == "byte budget":
        total = float((state.shards.demand[:, c.size_index] * state.shards.replicas).sum())
        kwargs["max_bytes"] = 0.03 * total
    elif scenario == "move budget":
        kwargs["max_moves"] = 12
    fast = plan(state, **{k: v for k, v in kwargs.items() if k != "lns_steps"})
    p = plan(state, method="lns", **kwargs)
    _assert_sound(state, p)
    if "max_bytes" in kwargs:
        assert p.bytes_moved <= kwargs["max_bytes"] * (1 + 1e-9)
    if "max_moves" in kwargs:
        assert p.n_moves <= kwargs["max_moves"]
    assert _key(state, p.target_nodes) <= _key(state, fast.target_nodes)
    assert p.stats["lns"]["steps"] <= 5
    again = plan(state, method="lns", **kwargs)
    assert np.array_equal(again.target_nodes, p.target_nodes)


def test_lns_reaches_the_goal_the_engine_misses_and_then_takes_bytes_back():
    """20 nodes x 600 shards, rebalance to 2% in two resources: the engine trades and
    stops 0.098 points over the goal. LNS reaches the goal (every node at once over a
    few shards of the top third), then its pair passes take back the bytes that cost
    (measured: 10,225 GB after 20 steps, 8,832 after 120; the engine's 8,640 at 2.098%)."""
    state = placement.synthetic_state(20, 600, seed=0)
    fast = plan(state)
    early = plan(state, method="lns", lns_steps=20, time_limit_s=300)
    p = plan(state, method="lns", lns_steps=120, time_limit_s=300)
    _assert_sound(state, p)
    assert fast.stats.get("traded")
    assert _key(state, fast.target_nodes)[0] > 0
    assert _key(state, early.target_nodes)[0] == _key(state, p.target_nodes)[0] == 0
    assert max(p.after["imbalance"].values()) <= 0.02 + 1e-9
    assert p.bytes_moved < early.bytes_moved
    assert p.bytes_moved < 1.05 * fast.bytes_moved
    assert p.stats["fast_bytes_moved"] == pytest.approx(fast.bytes_moved)
    assert p.stats["lns"]["objective_before"]["bytes_moved"] == pytest.approx(fast.bytes_moved)
    # Moves LNS made for balance say so.
    assert set(p.reason_names()) == {"balance"}


def test_improve_keeps_the_rows_without_steps_and_reports_the_objective():
    state = placement.synthetic_state(15, 120, seed=1)
    fast = plan(state)
    res = improve(state, fast.target_nodes, weights=np.ones(2), max_steps=0)
    assert np.array_equal(res.rows, fast.target_nodes)
    assert res.stopped == "steps" and res.steps == 0 and res.improved == 0
    assert res.objective == res.objective_before
    assert res.objective["bytes_moved"] == pytest.approx(fast.bytes_moved)


def test_lns_converges_and_a_drain_keeps_its_bytes():
    # A drain with balance off: the engine's plan moves exactly the drained replicas. No
    # neighbourhood can move fewer bytes; what LNS may still find is cheaper links.
    state = placement.synthetic_state(15, 90, seed=3)
    state = with_node_state(state, [state.cluster.node_ids[2]], "draining")
    fast = plan(state, target_imbalance=10.0)
    p = plan(state, method="lns", target_imbalance=10.0, time_limit_s=60)
    assert p.stats["lns"]["stopped"] == "converged"
    assert p.bytes_moved == pytest.approx(fast.bytes_moved)
    assert p.bytes_moved == pytest.approx(p.lower_bound_bytes)
    assert p.cost.sum() <= fast.cost.sum() + 1e-9
    assert set(p.reason_names()) == {"drain"}


def test_progress_can_stop_lns_and_the_plan_is_still_sound():
    state = placement.synthetic_state(20, 600, seed=0)
    seen = []

    def progress(info):
        seen.append(info)
        return info["phase"] != "lns" or info["done"] < 3

    p = plan(state, method="lns", progress=progress, time_limit_s=60)
    assert p.stats["lns"]["stopped"] == "progress"
    assert p.stats["lns"]["steps"] == 3
    lns = [i for i in seen if i["phase"] == "lns"]
    assert [i["done"] for i in lns] == [1, 2, 3]
    assert all(i["moves"] > 0 and i["bytes_moved"] > 0 for i in lns)
    _assert_sound(state, p)


def test_partial_plans_are_not_improved():
    state = placement.synthetic_state(15, 90, seed=3)
    state = with_node_state(state, [state.cluster.node_ids[2]], "failed")
    p = plan(state, method="lns", max_moves=0, allow_partial=True, time_limit_s=5)
    assert p.after["violations"] > 0
    assert "partial" in p.stats["lns"]["skipped"]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_lns_steps_is_a_clear_error(bad):
    state = placement.synthetic_state(15, 60, seed=1)
    with pytest.raises(InvalidValueError, match="lns_steps"):
        plan(state, method="lns", lns_steps=bad)
    with pytest.raises(InvalidValueError, match="'fast', 'lns' or 'exact'"):
        plan(state, method="LNS")


def test_cli_lns_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    state = placement.synthetic_state(20, 600, seed=0)
    path = tmp_path / "s.json"
    dump_state(state, path)
    out = tmp_path / "p.json"
    args = ["plan", str(path), "-o", str(out), "--method", "lns", "--lns-steps", "5"]
    assert main([*args, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "lns: 5/5 steps" in err  # the last step of a counted phase is always shown
    p = load_plan(out, state)
    assert not placement.check(state, p.target_nodes)
    solver = json.loads(out.read_text())["summary"]["solver"]
    assert solver["lns"]["steps"] == 5 and solver["lns"]["stopped"] == "steps"
