"""Infeasibility diagnosis names the real cause, the ids, and a fix; partial plans."""

from __future__ import annotations

import numpy as np
import pytest

import placement
from placement import InfeasibleError, NodeState, check
from placement.diagnose import diagnose, plan_partial
from placement.scenarios import with_node_state
from placement.solvers.exact import plan_exact
from tests.conformance import INFEASIBLE, INSTANCES, make_state


def _budget(options):
    return {k: v for k, v in options.items() if k.startswith("max_")}


@pytest.mark.parametrize("inst", INFEASIBLE, ids=lambda i: i.name)
def test_each_kind_of_conflict_is_named(inst):
    d = diagnose(inst.build(), **_budget(inst.options))
    assert d.feasible is False and d.method == "counting"
    first = d.conflicts[0]
    assert first.kind == inst.conflict, d.summary()
    named = set(first.shards) | set(first.nodes) | set(first.domains)
    assert set(inst.conflict_ids) <= named, (inst.conflict_ids, first)
    assert first.recommendation


def test_recommendations_say_how_much():
    by_name = {i.name: i for i in INFEASIBLE}
    cap = diagnose(by_name["capacity-short-region"].build()).conflicts[0]
    assert cap.shortfall == pytest.approx(10.0)
    assert "needs 10 B more free disk_bytes in eu" in cap.recommendation
    assert "raise headroom to 0.9" in cap.recommendation
    spread = diagnose(by_name["spread-impossible"].build()).conflicts[0]
    assert "allow 2 replicas per zone" in spread.recommendation
    regions = diagnose(by_name["residency-min-regions"].build()).conflicts[0]
    assert "lower min_regions to 1" in regions.recommendation
    budget = by_name["budget-too-small"]
    moves = diagnose(budget.build(), **_budget(budget.options)).conflicts[0]
    assert "raise max_moves to at least 2" in moves.recommendation


@pytest.mark.parametrize("inst", INSTANCES, ids=lambda i: i.name)
def test_feasible_instances_have_no_conflict(inst):
    d = diagnose(inst.build(), **_budget(inst.options))
    assert d.feasible is True and not d.conflicts


def test_cp_sat_core_when_counting_cannot_tell():
    """Four 50-byte shards, three nodes of limit 85: the totals fit (200 <= 255) but no
    node takes two. Only the core search sees it, and it names the three capacities."""
    nodes = [(n, "eu", f"z{i}", 100.0, "active") for i, n in enumerate("abc")]
    shards = [
        {"size": 50, "nodes": [n], "replicas": 1, "id": f"big{i}"} for i, n in enumerate("aabc")
    ]
    st = make_state(nodes, shards)
    d = diagnose(st, time_limit_s=10)
    assert d.feasible is False and d.method == "cp-sat core"
    core = d.conflicts[0]
    assert core.kind == "core"
    assert set(core.nodes) == {"a", "b", "c"}
    assert set(core.constraints) == {"capacity[a]", "capacity[b]", "capacity[c]"}
    assert "headroom" in core.recommendation


def test_counting_at_scale_names_regions_and_shards():
    """Drain all but one node in three EU zones: every EU-resident shard needs a replica
    in eu-central (its only zone left there), which is far too small."""
    st = placement.synthetic_state(45, 3000, seed=1, target_utilization=0.4)
    c = st.cluster
    keep = {"eu-west-a-n000", "eu-west-b-n000", "eu-central-a-n000"}
    eu = [n for n, r in zip(c.node_ids, c.region_of, strict=True) if c.regions[r].startswith("eu")]
    hit = with_node_state(st, [n for n in eu if n not in keep], "draining")
    d = diagnose(hit, use_cp_sat=False)
    assert d.feasible is False and d.time_s < 5
    conflict = d.conflicts[0]
    assert conflict.kind == "capacity" and conflict.domains == ("eu-central",)
    eu_shards = set(st.shards.ids[st.shards.residency_class == 1].tolist())
    assert set(conflict.shards) == eu_shards
    assert "TB more free disk_bytes in eu-central" in conflict.recommendation
    assert conflict.shortfall > 1e12


def test_planner_error_can_carry_a_diagnosis():
    inst = next(i for i in INFEASIBLE if i.name == "pinned-on-draining")
    with pytest.raises(InfeasibleError) as info:
        plan_exact(inst.build(), time_limit_s=5, **inst.options)
    d = info.value.diagnosis
    assert d.conflicts[0].kind == "pinned" and "s-pin" in str(info.value)
    assert InfeasibleError("plain").diagnosis is None


def test_partial_plan_serves_the_most_at_risk_first_and_explains_the_rest():
    st = placement.synthetic_state(15, 300, seed=3)
    # Fail two nodes of the same shard rows: some shards lose two replicas of three.
    both = np.flatnonzero(
        (st.placement.nodes == 0).any(axis=1) & (st.placement.nodes == 5).any(axis=1)
    )
    assert both.size  # shards with one live replica left
    hit = with_node_state(st, [st.cluster.node_ids[0], st.cluster.node_ids[5]], "failed")
    budget = int(both.size)  # fewer moves than the most-at-risk shards need
    pp = plan_partial(hit, max_moves=budget)
    assert pp.plan.n_moves == budget
    # Every move serves a shard with one live replica left (the engine restores a
    # shard's replicas together, so not necessarily all of them get one).
    assert set(pp.plan.shard.tolist()) <= set(both.tolist())
    assert pp.diagnosis.feasible is False
    assert pp.diagnosis.conflicts[0].kind == "max_moves"
    assert pp.unrestored and len(pp.unrestored) >= 1
    # The moves made are valid ones: nothing new breaks.
    v = check(hit, pp.plan.target_nodes)
    assert v.counts()["capacity"] == 0 and v.counts()["spread"] == 0


def test_partial_plan_when_a_region_cannot_take_its_replicas():
    inst = next(i for i in INFEASIBLE if i.name == "capacity-short-region")
    st = inst.build()
    pp = plan_partial(st)
    assert pp.plan.after["violations"] > 0
    assert pp.diagnosis.conflicts[0].kind == "capacity"
    assert pp.diagnosis.conflicts[0].domains == ("eu",)
    assert all(st.cluster.state == NodeState.ACTIVE)
