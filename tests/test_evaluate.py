"""The report and the constraint checks agree with the spec's definitions on hand-made cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import placement
from placement import Cluster, NodeState, Placement, Policy, Shards, State, check, evaluate

TB = 1e12


def _state(
    *,
    caps=(4 * TB, 4 * TB, 4 * TB, 4 * TB),
    zones=("z1", "z2", "z3", "z4"),
    regions=("eu", "eu", "us", "us"),
    states=None,
    demand=(1 * TB,),
    rows=((0, 2),),
    replicas=2,
    policy=None,
    allowed=None,
    clients=None,
    links=None,
) -> State:
    n = len(caps)
    cluster = Cluster.build(
        node_ids=[f"n{i}" for i in range(n)],
        resources=["disk_bytes"],
        capacity=[[c] for c in caps],
        levels=["region", "zone"],
        location=[[r, z] for r, z in zip(regions, zones, strict=True)],
        state=states,
        links=links,
    )
    shards = Shards.build(
        cluster, demand=list(demand), replicas=replicas, allowed_regions=allowed, clients=clients
    )
    return State(cluster, shards, Placement.build(list(rows), n_nodes=n), policy or Policy())


def test_imbalance_ratio_matches_spec_definition():
    # n0 holds 2 TB of 4 TB; n1..n3 hold 1, 0, 1 TB. Mean = 4/16 = 0.25, max = 0.5.
    st = _state(demand=(1 * TB, 1 * TB), rows=((0, 2), (0, 3)), replicas=2)
    st = _state(demand=(1 * TB, 1 * TB), rows=((0, 1), (0, 3)), replicas=2)
    r = evaluate(st)
    disk = r.resources[0]
    assert disk.mean_utilization == pytest.approx(0.25)
    assert disk.max_utilization == pytest.approx(0.5)
    assert disk.imbalance_ratio == pytest.approx(1.0)
    assert disk.max_node == "n0"
    assert disk.status == "critical" and disk.alert


def test_imbalance_ignores_non_active_nodes_and_thresholds_are_configurable():
    st = _state(
        demand=(1 * TB, 0.9 * TB),
        rows=((0, 2), (1, 3)),
        states=["active", "active", "active", "draining"],
        policy=Policy(imbalance_warning=0.1, imbalance_critical=0.5, imbalance_alert=0.4),
    )
    r = evaluate(st)
    # Active load 2.9 TB over 12 TB; max 1/4. Ratio = 0.25 / (2.9/12) - 1.
    expected = 0.25 / (2.9 / 12) - 1
    assert r.resources[0].imbalance_ratio == pytest.approx(expected)
    assert r.resources[0].status == "ok"
    assert not r.resources[0].alert
    assert r.violations.counts()["draining"] == 1


def test_capacity_violation_over_headroom_names_node():
    st = _state(caps=(1 * TB, 4 * TB, 4 * TB, 4 * TB), demand=(0.9 * TB,), rows=((0, 2),))
    v = check(st)
    assert v.counts()["capacity"] == 1
    d = v.describe(st)["capacity"][0]
    assert d["node"] == "n0" and d["utilization"] == pytest.approx(0.9)
    assert not check(st.with_placement(Placement.build([[1, 2]], n_nodes=4))).counts()["capacity"]


def test_spread_and_min_regions_and_residency():
    # Two replicas in zone z1 (two nodes there) break spread and span one region.
    st = _state(zones=("z1", "z1", "z3", "z4"), rows=((0, 1),), policy=Policy(min_regions=2))
    v = check(st)
    assert v.counts()["spread"] == 1 and v.spread[0].tolist() == [0, 0, 2]
    assert v.counts()["regions"] == 1
    st2 = _state(rows=((0, 2),), allowed=[["eu"]])
    v2 = check(st2)
    assert v2.residency.tolist() == [[0, 2]]
    assert v2.describe(st2)["residency"] == [{"shard": "s0", "node": "n2"}]


def test_replication_health_on_failed_node():
    st = _state(rows=((0, 2),), replicas=3, states=["failed", "active", "active", "active"])
    v = check(st)
    assert v.live_count.tolist() == [1]
    assert v.counts()["failed"] == 1 and v.counts()["under_replicated"] == 1
    assert v.counts()["below_min"] == 1  # min_available defaults to a majority: 2
    assert v.counts()["unavailable"] == 0
    assert evaluate(st).status == "critical"


def test_latency_compliance_and_coverage():
    links = [{"a": "eu", "b": "us", "latency_ms": 80}]
    # Shard 0 lives in eu only; its clients: 3 in eu (0 ms), 1 in us (80 ms).
    st = _state(
        rows=((0, 1),),
        zones=("z1", "z2", "z3", "z4"),
        clients=[[3.0, 1.0]],
        links=links,
        policy=Policy(latency_target_ms=50, latency_max_ms=100),
    )
    r = evaluate(st)
    assert r.coverage == pytest.approx(0.75)
    assert r.latency_compliance == pytest.approx(0.75)
    assert r.latency_max_compliance == pytest.approx(1.0)
    assert r.latency_source == "policy"
    us = next(x for x in r.regions if x.region == "us")
    assert us.coverage == 0.0 and us.latency_compliance == 0.0


def test_no_latency_model_means_undefined_compliance():
    st = _state(rows=((0, 1),), clients=[[1.0, 1.0]])
    r = evaluate(st)
    assert r.latency_compliance is None and r.coverage == pytest.approx(0.5)
    assert json.loads(r.to_json())["latency_compliance"] is None


def test_region_graph_matrices():
    g = placement.RegionGraph.from_links(
        ["a", "b", "c"],
        [
            {"a": "a", "b": "b", "latency_ms": 10, "cost_per_gb": 0.5, "bandwidth_bps": 1e9},
            {"a": "b", "b": "c", "latency_ms": 10, "cost_per_gb": 0.5, "bandwidth_bps": 5e8},
            {"a": "a", "b": "c", "latency_ms": 50, "cost_per_gb": 0.1},
        ],
    )
    assert g.latency_ms[0, 2] == 20  # via b
    assert g.cost_per_gb[0, 2] == pytest.approx(0.1)  # direct is cheaper
    assert g.bandwidth_bps[0, 2] == 5e8  # bottleneck of the lowest-latency path
    assert np.array_equal(g.latency_ms, g.latency_ms.T)


def test_report_renderings_are_consistent():
    r = evaluate(placement.example_state())
    d = r.to_dict()
    assert d["status"] == r.status
    assert d["violation_counts"] == r.violations.counts()
    assert json.loads(r.to_json())["state_sha256"] == r.state.sha256()
    text = r.to_text()
    assert "under_replicated" in text and r.status.upper() in text
    prom = r.to_prometheus()
    for name in (
        "placement_imbalance_ratio",
        "placement_node_up",
        "placement_violations",
        "placement_latency_compliance_ratio",
    ):
        assert f"# TYPE {name} gauge" in prom
    failed = r.state.cluster.node_ids[
        int(np.flatnonzero(r.state.cluster.state == NodeState.FAILED)[0])
    ]
    assert f'placement_node_up{{node="{failed}",state="failed"}} 0.0' in prom
    assert f'placement_violations{{kind="failed"}} {float(r.violations.counts()["failed"])}' in prom


def test_example_state_is_regenerated_from_its_seed():
    from placement.datasets import build_example_state

    assert build_example_state().sha256() == placement.example_state().sha256()


def test_inputs_are_not_mutated_and_arrays_are_read_only():
    st = placement.synthetic_state(30, 300, seed=4)
    before = st.placement.nodes.copy()
    evaluate(st)
    check(st, st.placement.nodes)
    assert np.array_equal(before, st.placement.nodes)
    with pytest.raises(ValueError):
        st.placement.nodes[0, 0] = 1
    with pytest.raises(ValueError):
        st.cluster.capacity[0, 0] = 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), moves=st.integers(0, 30))
def test_check_agrees_with_a_plain_python_reference(seed, moves):
    """The vectorized checker agrees with a per-shard Python reading of the spec."""
    state = placement.synthetic_state(15, 60, seed=seed)
    rng = np.random.default_rng(seed)
    nodes = state.placement.nodes.copy()
    for _ in range(moves):  # random damage: replicas moved anywhere, dropped or duplicated
        s, j = rng.integers(nodes.shape[0]), rng.integers(nodes.shape[1])
        nodes[s, j] = rng.integers(-1, state.cluster.n_nodes)
    states = rng.choice([0, 0, 0, 1, 2], size=state.cluster.n_nodes).astype(np.int8)
    state = state.with_cluster(state.cluster.with_state(states))
    v = check(state, nodes)
    c, sh, pol = state.cluster, state.shards, state.policy
    lvl = state.spread_level_index
    exp_under, exp_spread, exp_regions, exp_res = [], set(), [], []
    for s in range(sh.n_shards):
        live = sorted({int(x) for x in nodes[s] if x >= 0 and c.state[x] != NodeState.FAILED})
        if len(live) < sh.replicas[s]:
            exp_under.append(s)
        doms = [c.domain_of[x, lvl] for x in live]
        for d in set(doms):
            if doms.count(d) > pol.max_per_domain:
                exp_spread.add((s, d))
        if len({c.region_of[x] for x in live}) < min(pol.min_regions, sh.replicas[s]):
            exp_regions.append(s)
        allowed = sh.allowed_regions[sh.residency_class[s]]
        exp_res.extend(
            (s, x)
            for x in nodes[s]
            if x >= 0 and c.state[x] != NodeState.FAILED and not allowed[c.region_of[x]]
        )
    assert v.under_replicated.tolist() == exp_under
    assert {(a, b) for a, b, _ in v.spread.tolist()} == exp_spread
    assert v.regions[:, 0].tolist() == exp_regions
    assert sorted(map(tuple, v.residency.tolist())) == sorted(exp_res)
    load = np.zeros(c.n_nodes)
    for s in range(sh.n_shards):
        for x in nodes[s]:
            if x >= 0:
                load[x] += sh.demand[s, c.size_index]
    assert np.allclose(placement.node_load(state, nodes)[:, c.size_index], load)
    assert math.isclose(
        v.live_count.sum(), sum(len({x for x in r if x >= 0 and c.state[x] != 2}) for r in nodes)
    )
