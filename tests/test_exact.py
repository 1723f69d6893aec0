"""Exact mode: strengthening cuts off no optimum; answers are valid, bounded, reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ortools.sat.python import cp_model

import placement
import placement.planner
import placement.scenarios
from placement import InfeasibleError, check
from placement.errors import TopologyError
from placement.solvers.exact import (
    _Budget,
    _lp_dive,
    _Model,
    _prepare,
    _relax,
    _Relaxation,
    _solver,
    plan_exact,
    solve_exact,
    solve_subproblem,
)
from tests.conformance import make_state
from tests.conformance.brute import _excess_steps, brute_force


def _random_tiny(seed: int) -> tuple[placement.State, dict]:
    """4-5 nodes, 3 shards: small enough to enumerate every placement."""
    rng = np.random.default_rng(seed)
    n_nodes = int(rng.integers(4, 6))
    regions = ["eu", "us"][: int(rng.integers(1, 3))]
    nodes = []
    for i in range(n_nodes):
        region = regions[i % len(regions)]
        zone = f"{region}-{int(rng.integers(0, 2))}"
        cap = float(rng.choice([40, 60, 100]))
        nodes.append((f"n{i}", region, zone, cap, "active"))
    if rng.random() < 0.5:  # two identical empty nodes: the symmetry-breaking case
        nodes[-1] = (nodes[-1][0], nodes[-2][1], nodes[-2][2], nodes[-2][3], "active")
    if rng.random() < 0.3:
        k = int(rng.integers(0, n_nodes))
        nodes[k] = (*nodes[k][:4], str(rng.choice(["draining", "failed"])))
    names = [n[0] for n in nodes]
    shards = []
    for _ in range(3):
        rf = int(rng.integers(1, 3))
        holders = rng.choice(n_nodes - 2, size=int(rng.integers(1, rf + 1)), replace=False)
        shard = {
            "size": int(rng.integers(5, 35)),
            "replicas": rf,
            "nodes": [names[h] for h in holders],
        }
        if len(regions) > 1 and rng.random() < 0.3:
            shard["allowed"] = [str(rng.choice(regions))]
        if rng.random() < 0.2:
            shard["pinned"] = shard["nodes"][:1]
        if rng.random() < 0.5:
            shard["group"] = str(rng.choice(["g1", "g2"]))
        shards.append(shard)
    state = make_state(nodes, shards, policy=placement.Policy(spread_level="zone"))
    options: dict = {"target_imbalance": float(rng.choice([0.02, 0.3, 10.0]))}
    if rng.random() < 0.3:
        options["max_moves"] = int(rng.integers(0, 4))
    if rng.random() < 0.2:
        options["max_moves_per_node"] = int(rng.integers(1, 3))
    if rng.random() < 0.2:
        options["max_bytes"] = float(rng.integers(0, 60))
    if rng.random() < 0.2:
        options["max_moves_per_group"] = int(rng.integers(0, 2))
    return state, options


def _key(result):
    return (
        int(result.stages[0]["objective"]),
        round(result.objective["bytes_moved"], 6),
    )


@pytest.mark.parametrize("seed", range(60))
def test_strengthening_cuts_off_no_optimum(seed):
    """Symmetry breaking, redundant cuts and LP polishing: same optimum as the plain model,
    and as enumerating every placement; the LP bound never exceeds a proven optimum."""
    try:
        state, options = _random_tiny(seed)
    except TopologyError:
        pytest.skip("generated a cluster whose shape cannot hold the shards")
    strong = solve_exact(state, time_limit_s=10, **options)
    plain = solve_exact(
        state,
        time_limit_s=10,
        symmetry_breaking=False,
        redundant_constraints=False,
        polish=False,
        **options,
    )
    brute = brute_force(state, **options)
    if brute is None:
        assert strong.status == plain.status == "INFEASIBLE"
        return
    assert strong.status == plain.status == "OPTIMAL"
    assert _key(strong) == _key(plain) == brute.key[:2]
    assert strong.objective["transfer_cost"] == pytest.approx(brute.key[2], abs=1e-12)
    assert not check(state, strong.nodes)
    for stage in strong.stages[1:]:
        if "lp_bound" in stage:
            assert stage["lp_bound"] <= stage["objective"] + 1e-9


def _stage_model(st, *, target, z):
    """The bytes stage of solve_exact's model, built by hand: balance fixed at *z*."""
    data = _prepare(
        st,
        st.placement.nodes,
        np.arange(st.shards.n_shards),
        np.ones(st.cluster.n_nodes, dtype=bool),
        _Budget(),
        target,
        np.ones(st.cluster.n_resources),
    )
    model = _Model(data, symmetry_breaking=True, redundant=True)
    model.m.add(model.z <= z)
    model._cover_cuts(z)
    model.m.minimize(model.bytes_expr)
    return model


@pytest.mark.parametrize("seed", range(3))
def test_lp_bound_and_dive_are_sound(seed):
    """The LP bound is below the proven optimum of the stage; the dive's start is a valid
    placement (every pair the LP fixes is kept in the copy, the stage model untouched)."""
    st = placement.synthetic_state(15, 40, seed=seed)
    z = solve_exact(st, target_imbalance=0.1, time_limit_s=10).stages[0]["objective"]
    model = _stage_model(st, target=0.1, z=round(z))
    relax = _relax(model, 10.0)
    assert relax is not None and relax.x.shape == (len(model.x),)
    n_constraints = len(model.m.proto.constraints)
    dive = _lp_dive(model, relax, 10.0, 0, None)
    assert len(model.m.proto.constraints) == n_constraints  # the dive works on a copy
    solver = _solver(20.0, 0, 1, None)
    assert solver.solve(model.m) == cp_model.OPTIMAL
    assert relax.bound <= solver.objective_value + 1e-9
    if dive is not None:
        rows = model.rows_from_values(dive[0])
        assert not check(st, rows)
        assert dive[1] >= solver.objective_value - 1e-9


def test_dive_falls_back_to_rins_and_never_loses_the_hint():
    """A rounding that cannot be completed (the complement of a solution breaks every
    replica count) leaves the RINS neighbourhood, whose hint keeps it feasible."""
    st = placement.synthetic_state(15, 40, seed=0)
    model = _stage_model(st, target=10.0, z=0)
    solver = _solver(20.0, 0, 1, None)
    assert solver.solve(model.m) == cp_model.OPTIMAL
    best = np.array([solver.boolean_value(v) for v in model.x], dtype=bool)
    model.hint(model.rows_from_values(best))
    hinted = model.hinted_objective()
    assert hinted == solver.objective_value
    fake = _Relaxation(x=(~best).astype(float), bound=0.0)
    dive = _lp_dive(model, fake, 10.0, 0, None)
    assert dive is not None and dive[1] <= hinted
    assert not check(st, model.rows_from_values(dive[0]))


def test_lp_polish_is_valid_and_reproducible():
    """A balance case the LP cannot prove: the dive runs, the reported bound is at least
    the LP's and below the objective, and a work-based limit gives the same plan twice."""
    st = placement.synthetic_state(15, 150, seed=1)
    kwargs = {"target_imbalance": 0.05, "time_limit_s": 30, "deterministic_time": 0.5}
    a = solve_exact(st, **kwargs)
    b = solve_exact(st, **kwargs)
    bytes_stage = a.stages[1]
    assert "lp_bound" in bytes_stage and "dive" in bytes_stage
    assert not check(st, a.nodes)
    assert bytes_stage["bound"] >= math.ceil(bytes_stage["lp_bound"] - 1e-9)
    assert a.objective["bytes_moved"] >= a.bound["bytes_moved"] * (1 - 1e-9)
    assert np.array_equal(a.nodes, b.nodes)


def test_symmetric_new_nodes_are_ordered_and_optimal():
    nodes = [
        ("a", "eu", "z1", 100.0, "active"),
        ("b", "eu", "z2", 100.0, "active"),
        ("c", "eu", "z3", 100.0, "active"),
        ("d", "eu", "z3", 100.0, "active"),
        ("e", "eu", "z3", 100.0, "active"),
    ]
    shards = [{"size": 10, "nodes": ["a"], "replicas": 1} for _ in range(5)]
    shards += [{"size": 10, "nodes": ["b"], "replicas": 1} for _ in range(5)]
    state = make_state(nodes, shards)
    r = solve_exact(state, time_limit_s=10)
    assert r.stats["symmetric_node_classes"] == 1
    assert r.status == "OPTIMAL" and r.objective["bytes_moved"] == 60.0  # 2 per node
    load = placement.node_load(state, r.nodes)[:, 0]
    assert load[2] >= load[3] >= load[4]


def test_plan_exact_is_sound_and_reproducible():
    st = placement.synthetic_state(15, 120, seed=4)
    st = placement.State(
        st.cluster.with_state(np.where(np.arange(15) == 0, 1, 0).astype(np.int8)),
        st.shards,
        st.placement,
        st.policy,
    )
    a = plan_exact(st, target_imbalance=0.5, max_moves=60, time_limit_s=20, seed=1)
    b = plan_exact(st, target_imbalance=0.5, max_moves=60, time_limit_s=20, seed=1)
    assert a.after["violations"] == 0 and not check(st, a.target_nodes)
    assert a.n_moves <= 60 and not (a.target_nodes == 0).any()
    assert a.stats["status"] == "OPTIMAL" and a.stats["gap"] == 0
    assert np.array_equal(a.target_nodes, b.target_nodes)
    assert a.bytes_moved >= a.lower_bound_bytes * (1 - 1e-9)
    drained = st.shards.demand[(st.placement.nodes == 0).any(axis=1), 0].sum()
    assert a.bytes_moved == pytest.approx(drained)  # the drain is all that must move
    assert set(a.reason_names()) == {"drain"}


def test_exact_never_worse_than_engine_on_balance_then_bytes():
    st = placement.synthetic_state(15, 150, seed=2)
    engine = placement.planner.plan(st, target_imbalance=0.1, time_limit_s=5)
    exact = solve_exact(st, target_imbalance=0.1, time_limit_s=3, hint=engine.target_nodes)
    assert exact.status in ("OPTIMAL", "FEASIBLE") and not check(st, exact.nodes)
    w = np.ones(st.cluster.n_resources)
    steps = [
        _excess_steps(st, placement.node_load(st, rows), 0.1, w)
        for rows in (exact.nodes, engine.target_nodes)
    ]
    assert (steps[0], exact.objective["bytes_moved"]) <= (steps[1], engine.bytes_moved + 1e-6)
    assert exact.bound["bytes_moved"] <= exact.objective["bytes_moved"] + 1e-6


def test_subproblem_keeps_everything_outside_the_neighbourhood():
    st = placement.synthetic_state(15, 200, seed=6)
    failed = placement.scenarios.with_node_state(st, [st.cluster.node_ids[3]], "failed")
    start = placement.planner.plan(failed, trigger_imbalance=10.0).target_nodes
    shards = np.flatnonzero((st.placement.nodes == 3).any(axis=1))[:5]
    nodes = np.arange(15)
    rows, res = solve_subproblem(
        failed, start, shards, nodes, target_imbalance=10.0, time_limit_s=10
    )
    assert res.status == "OPTIMAL"
    full = start.copy()
    full[shards] = rows
    assert not check(failed, full)
    others = np.setdiff1d(np.arange(st.shards.n_shards), shards)
    assert np.array_equal(full[others], start[others])
    # Bytes count from the state's placement, for the whole plan: at least every lost
    # replica, at most what the engine's plan (the hint) moved.
    lost = st.shards.demand[(st.placement.nodes == 3).any(axis=1), 0].sum()
    moved = res.objective["bytes_moved"]
    engine_bytes = placement.planner.plan(failed, trigger_imbalance=10.0).bytes_moved
    assert lost * (1 - 1e-9) <= moved <= engine_bytes + 1e-6


def test_infeasible_raises_with_diagnosis():
    nodes = [("a", "eu", "z1", 100.0, "active"), ("b", "eu", "z2", 100.0, "draining")]
    st = make_state(nodes, [{"size": 10, "nodes": ["a", "b"]}])
    with pytest.raises(InfeasibleError) as info:
        plan_exact(st, time_limit_s=5)
    assert info.value.diagnosis is not None and info.value.diagnosis.feasible is False
    assert info.value.diagnosis.conflicts[0].kind == "spread"


def test_bad_parameters():
    st = placement.synthetic_state(15, 30, seed=0)
    with pytest.raises(placement.InvalidValueError, match="workers"):
        solve_exact(st, workers=0)
    with pytest.raises(placement.InvalidValueError, match="hint"):
        solve_exact(st, hint=np.zeros((2, 2), dtype=np.int32))
