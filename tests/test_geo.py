"""The geo phase and scenario: better latency within the budget, never a broken rule.

Invariants on random clusters (Hypothesis), determinism, the cost report's sums, the CLI,
and the exactness check against the CP-SAT geo model on small instances.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import placement
from placement import planner
from placement.cli import main
from placement.constraints import check, node_load
from placement.cost import cost_report
from placement.errors import InfeasibleError
from placement.latency import client_service, slo_violations
from placement.plan import REASONS, apply_moves, plan_from_document
from placement.scenarios import plan_drain, plan_geo
from placement.solvers.geo import improve_latency, pressure_scale
from placement.solvers.geo_exact import integer_weights, solve_geo_exact
from tests.geo_cases import geo_state

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _peak(state, nodes):
    p = (node_load(state, nodes) * pressure_scale(state)).max(axis=1)
    return float(p[state.cluster.active].max())


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    goal=st.sampled_from([0.6, 0.8, 1.0]),
    max_moves=st.one_of(st.none(), st.integers(0, 12)),
    max_gb=st.one_of(st.none(), st.integers(0, 40)),
    balanced=st.booleans(),
)
def test_improve_latency_keeps_every_rule(seed, goal, max_moves, max_gb, balanced):
    # Balanced starts leave little room under the pressure ceiling: swaps get exercised.
    state = geo_state(seed, balanced=balanced)
    start = state.placement.nodes
    assert check(state).total == 0
    max_bytes = None if max_gb is None else max_gb * 1e9
    new, stats = improve_latency(
        state,
        start,
        compliance_goal=goal,
        coverage_goal=goal,
        max_moves=max_moves,
        max_bytes=max_bytes,
        seed=seed,
    )
    # Every hard constraint, residency included, as constraints.check judges it.
    assert check(state, new).total == 0
    allowed = state.shards.region_allowed()
    rows, cols = np.nonzero(new >= 0)
    assert allowed[rows, state.cluster.region_of[new[rows, cols]]].all()
    # Pins hold: a pinned replica stays on its node.
    p = state.placement
    pr, pc = np.nonzero(p.pinned)
    assert all(p.nodes[r, c] in new[r] for r, c in zip(pr, pc, strict=True))
    # The budget, counted as the plan will count it.
    changed = new != start
    assert int(changed.sum()) <= stats.n_moves  # a shard may move twice
    if max_moves is not None:
        assert stats.n_moves <= max_moves
    if max_bytes is not None:
        assert stats.bytes_moved <= max_bytes
    # Never worse: compliance, coverage, SLO breaches, peak pressure.
    before, after = client_service(state), client_service(state, new)
    assert after.compliance >= before.compliance - 1e-12
    assert after.coverage >= before.coverage - 1e-12
    assert len(slo_violations(state, new)) <= len(slo_violations(state))
    assert _peak(state, new) <= _peak(state, start) * (1 + 1e-9)
    # Gains add up to the change, and benefit per byte is reported per move.
    total = before.total_demand
    assert stats.served_gain.sum() == pytest.approx(
        (after.compliance - before.compliance) * total, abs=1e-6
    )
    assert stats.benefit_per_byte.shape == (stats.n_moves,)
    assert stats.summary["compliance_after"] == after.compliance


@SETTINGS
@given(seed=st.integers(0, 10**6))
def test_plan_geo_is_valid_deterministic_and_within_budget(seed):
    state = geo_state(seed)
    budget = int(np.random.default_rng(seed).integers(1, 15))
    p1 = plan_geo(state, compliance_goal=1.0, coverage_goal=1.0, max_moves=budget, seed=seed)
    p2 = plan_geo(state, compliance_goal=1.0, coverage_goal=1.0, max_moves=budget, seed=seed)
    assert p1.n_moves <= budget
    assert p1.after["violations"] == 0
    assert p1.after["latency"]["compliance"] >= p1.before["latency"]["compliance"] - 1e-12
    assert {REASONS[r] for r in p1.reason.tolist()} <= {"latency"}
    assert np.array_equal(p1.shard, p2.shard) and np.array_equal(p1.target, p2.target)
    # The moves take the state's placement to the target.
    applied = apply_moves(state.placement.nodes, p1.shard, p1.source, p1.target)
    assert np.array_equal(np.sort(applied, axis=1), np.sort(p1.target_nodes, axis=1))
    # The document round-trips.
    back = plan_from_document(p1.to_document(state), state)
    assert np.array_equal(back.target, p1.target)
    # Cost report sums match the plan.
    rep = cost_report(state, p1)
    assert rep.bytes_moved == pytest.approx(p1.bytes_moved)
    assert rep.transfer_cost == pytest.approx(float(p1.cost.sum()))
    assert sum(x.bytes for x in rep.pairs) == pytest.approx(p1.bytes_moved)
    assert sum(x.moves for x in rep.pairs) == p1.n_moves
    assert sum(x.cost for x in rep.pairs) == pytest.approx(float(p1.cost.sum()))
    assert rep.cross_region_bytes == pytest.approx(
        sum(x.bytes for x in rep.pairs if x.cross_region)
    )
    assert rep.residency_breach_bytes == 0
    # Copy sources are live replicas of their shard, in allowed regions.
    if p1.n_moves:
        src = rep.source_node
        assert all(src[k] in state.placement.nodes[p1.shard[k]] for k in range(p1.n_moves))
        allowed = state.shards.region_allowed()
        assert allowed[p1.shard, state.cluster.region_of[src]].all()
    assert rep.served_gain.sum() == pytest.approx(
        (p1.after["latency"]["compliance"] - p1.before["latency"]["compliance"])
        * p1.before["latency"]["client_demand"],
        abs=1e-6,
    )


def test_geo_improves_a_degraded_cluster_to_the_goal():
    state = _degraded(placement.synthetic_state(60, 3000, seed=4))
    before = client_service(state)
    assert before.compliance < 0.8
    p = plan_geo(state, time_limit_s=10)
    after = p.after["latency"]
    assert after["compliance"] >= 0.8 and after["coverage"] >= 0.8 - 1e-9
    assert p.after["violations"] == 0
    geo = p.stats["geo"]
    assert geo["stop_reason"] == "goal reached"
    assert geo["lower_bound_bytes"] <= p.bytes_moved
    # A byte budget is kept, and spent on the best moves first.
    small = plan_geo(state, max_bytes=p.bytes_moved / 4)
    assert small.bytes_moved <= p.bytes_moved / 4
    per_gb = small.stats["geo"]["benefit_per_gb"]["median"]
    assert per_gb >= geo["benefit_per_gb"]["median"]


def test_repairs_keep_their_reasons_and_latency_comes_after():
    state = _degraded(placement.synthetic_state(45, 1500, seed=2))
    drained, p0 = plan_drain(state, [state.cluster.node_ids[0]], trigger_imbalance=10.0)
    p = plan_geo(drained)
    names = p.reason_names()
    assert names.count("drain") == p0.n_moves
    assert "latency" in names
    assert names == sorted(names, key=REASONS.index)  # repairs first, latency last
    assert p.after["violations"] == 0


def test_no_latency_model_or_no_clients_is_a_no_op():
    state = geo_state(5, links=False)
    if len(state.cluster.regions) > 1:
        p = plan_geo(state)
        assert p.n_moves == 0 and p.stats["geo"]["stop_reason"] == "no latency model"


def test_invalid_arguments():
    state = geo_state(1)
    with pytest.raises(placement.InvalidValueError):
        plan_geo(state, compliance_goal=1.5)
    with pytest.raises(placement.InvalidValueError):
        plan_geo(state, latency_target_ms=-5)
    with pytest.raises(placement.InvalidValueError):
        plan_geo(state, slo_share=0)


# Exactness: the fast phase's bytes against the proven optimum of the CP-SAT geo model.
EXACT_SEEDS = range(24)


def _exact_ratio(seed: int, goal: float, *, balanced: bool = False) -> tuple[float, str]:
    state = geo_state(seed, balanced=balanced, pins=False)
    new, stats = improve_latency(
        state, state.placement.nodes, compliance_goal=goal, coverage_goal=goal, seed=seed
    )
    svc = client_service(state, new)
    weight, _ = integer_weights(state)
    res = solve_geo_exact(
        state,
        state.placement.nodes,
        served_goal=int(weight[svc.served].sum()),
        covered_goal=int(weight[svc.local].sum()),
        hint=new,
        time_limit_s=10,
    )
    assert res.nodes is not None and check(state, res.nodes).total == 0
    if res.bytes_moved == 0:
        return (1.0 if stats.bytes_moved == 0 else float("inf")), res.status
    return stats.bytes_moved / res.bytes_moved, res.status


@pytest.mark.parametrize("goal", [0.7, 0.8, 0.9])
def test_fast_bytes_within_10_percent_of_the_exact_optimum(goal, capsys):
    ratios = []
    for seed in EXACT_SEEDS:
        ratio, status = _exact_ratio(seed, goal)
        assert status == "OPTIMAL"
        ratios.append(ratio)
    with capsys.disabled():
        print(
            f"\n  goal {goal}: fast/exact bytes max {max(ratios):.3f}, mean {np.mean(ratios):.3f}"
        )
    assert max(ratios) <= 1.10


def test_cli_geo_and_cost(tmp_path, capsys):
    state = _degraded(placement.synthetic_state(30, 600, seed=3))
    path = tmp_path / "state.json"
    placement.dump_state(state, path)
    out = tmp_path / "plan.json"
    assert main(["geo", str(path), "-o", str(out), "--max-moves", "30", "--seed", "1"]) == 0
    line = capsys.readouterr().out
    assert "within 50 ms" in line and "wrote" in line
    doc = json.loads(out.read_text())
    assert len(doc["moves"]) <= 30 and doc["summary"]["solver"]["geo"]["moves"] >= 1
    assert main(["cost", str(path), str(out)]) == 0
    text = capsys.readouterr().out
    assert "cross-region" in text
    assert main(["cost", str(path), str(out), "--json", "--moves", "3"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["moves"] == len(doc["moves"]) and len(rep["top_moves"]) == min(3, rep["moves"])
    assert main(["geo", str(path), "-o", str(out), "--goal", "2"]) == 2


def _degraded(state: placement.State) -> placement.State:
    """Move 60% of the shards' client demand to a far region (deterministic)."""
    c, s = state.cluster, state.shards
    far = np.array(
        [int(np.argmax(np.where(np.isfinite(row), row, -1))) for row in c.region_graph.latency_ms]
    )
    shift = np.random.default_rng(0).random(s.n_shards) < 0.6
    m = s.clients.tocsr()
    rows = np.repeat(np.arange(s.n_shards), np.diff(m.indptr))
    cols = np.where(shift[rows], far[m.indices], m.indices)
    clients = sp.csr_array((m.data, (rows, cols)), shape=m.shape)
    clients.sum_duplicates()
    return dataclasses.replace(state, shards=dataclasses.replace(s, clients=clients))


def test_swaps_when_a_balanced_cluster_leaves_no_room():
    state = _degraded(placement.synthetic_state(45, 2000, seed=6))
    from placement.planner import plan

    balanced = plan(state, target_imbalance=0.01)
    start = balanced.target_nodes
    new, stats = improve_latency(state, start, seed=1)
    assert stats.summary["swaps"] > 0
    assert check(state, new).total == 0
    assert _peak(state, new) <= _peak(state, start) * (1 + 1e-9)
    assert client_service(state, new).compliance > client_service(state, start).compliance


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 100_000), node_states=st.booleans(), budget=st.sampled_from([None, 5, 40])
)
# Two replicas of one shard left the region each counted on the other to serve.
@example(seed=1230, node_states=False, budget=5)
def test_plan_with_a_latency_target_improves_compliance_and_keeps_residency(
    seed, node_states, budget
):
    """``placement.planner.plan`` (and so ``placement plan``) runs the latency phase when
    the policy sets a latency target: within the budget, never worse, residency kept."""
    state = geo_state(seed, node_states=node_states)
    state = dataclasses.replace(
        state, policy=dataclasses.replace(state.policy, latency_target_ms=40.0)
    )
    try:
        p = planner.plan(state, max_moves=budget, time_limit_s=10)
    except InfeasibleError:
        return
    assert not check(state, p.target_nodes)
    assert budget is None or p.n_moves <= budget
    before = client_service(state, state.placement.nodes).compliance
    after = client_service(state, p.target_nodes).compliance
    if not node_states:  # repairs may have to give up some latency first
        assert after >= before - 1e-9
    latency_moves = p.reason == REASONS.index("latency")
    if latency_moves.any():
        assert "latency" in p.stats
    again = planner.plan(state, max_moves=budget, time_limit_s=10)
    assert np.array_equal(again.target_nodes, p.target_nodes)


@pytest.mark.parametrize("goal", [0.8, 0.9])
def test_geo_scenario_within_10_percent_of_the_exact_optimum_on_rebalanced_starts(goal):
    """On freshly rebalanced small clusters single moves and swaps may cost up to 2.2x
    the optimum (room must be freed by chains of moves); plan_geo polishes such small
    instances with the exact model, so the scenario's bytes stay within 10%."""
    ratios = []
    for seed in range(12):
        state = geo_state(seed, balanced=True, pins=False)
        p = plan_geo(state, compliance_goal=goal, coverage_goal=goal, seed=seed)
        assert not check(state, p.target_nodes)
        svc = client_service(state, p.target_nodes)
        weight, _ = integer_weights(state)
        res = solve_geo_exact(
            state,
            state.placement.nodes,
            served_goal=int(weight[svc.served].sum()),
            covered_goal=int(weight[svc.local].sum()),
            hint=p.target_nodes,
            time_limit_s=10,
        )
        assert res.status == "OPTIMAL"
        if res.bytes_moved:
            ratios.append(p.bytes_moved / res.bytes_moved)
    assert max(ratios, default=1.0) <= 1.10, ratios
