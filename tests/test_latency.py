"""Latency metrics (placement.latency) against a brute-force, shard-by-shard computation."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import placement
from placement.errors import InvalidValueError
from placement.latency import (
    DEFAULT_SLO_SHARE,
    achievable_compliance,
    client_service,
    coverage_status,
    latency_levels,
    move_benefit,
    slo_violations,
)
from placement.model import Policy
from tests.geo_cases import geo_state

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _brute(state, nodes, target_ms, max_ms):
    """Per (shard, client region): nearest live replica latency, served, tolerable, local."""
    c = state.cluster
    lat = c.region_graph.latency_ms
    has_model = c.region_graph.has_latency_model
    clients = state.shards.clients.toarray()
    out = []
    for s in range(state.shards.n_shards):
        live = [int(n) for n in nodes[s] if n >= 0 and c.state[n] != 2]
        for cl in range(len(c.regions)):
            w = clients[s, cl]
            if w <= 0:
                continue
            if not live:
                near = math.inf
            elif has_model:
                near = min(lat[cl, c.region_of[n]] for n in live)
            else:
                near = 0.0
            local = any(c.region_of[n] == cl for n in live)
            out.append((s, cl, w, near, near <= target_ms, near <= max_ms, local))
    return out


def _share(rows, k):
    total = sum(r[2] for r in rows)
    return None if total <= 0 else sum(r[2] for r in rows if r[k]) / total


@SETTINGS
@given(seed=st.integers(0, 10**6), links=st.booleans(), node_states=st.booleans())
def test_client_service_matches_brute_force(seed, links, node_states):
    state = geo_state(seed, links=links, node_states=node_states)
    nodes = state.placement.nodes
    svc = client_service(state)
    lv = svc.levels
    rows = _brute(state, nodes, lv.target_ms, lv.max_ms)
    assert len(rows) == svc.entry_shard.size
    for e, (s, cl, w, near, _, _, local) in enumerate(rows):
        assert (svc.entry_shard[e], svc.entry_region[e]) == (s, cl)
        assert svc.weight[e] == w and svc.local[e] == local
        assert svc.nearest_ms[e] == near
    assert svc.coverage == pytest.approx(_share(rows, 6))
    if links or len(state.cluster.regions) <= 1:
        assert svc.compliance == pytest.approx(_share(rows, 4))
        assert svc.max_compliance == pytest.approx(_share(rows, 5))
        finite = [r for r in rows if math.isfinite(r[3])]
        total = sum(r[2] for r in finite)
        expect = sum(r[2] * r[3] for r in finite) / total if total else None
        assert svc.mean_latency_ms == pytest.approx(expect)
    else:
        assert svc.compliance is None and svc.mean_latency_ms is None
    # The report shares the meaning.
    report = placement.evaluate(state)
    assert report.latency_compliance == svc.compliance
    assert report.coverage == svc.coverage
    assert report.latency_max_compliance == svc.max_compliance


@SETTINGS
@given(seed=st.integers(0, 10**6), links=st.booleans(), n_changed=st.integers(0, 20))
def test_client_service_since_another_placement_equals_a_full_computation(seed, links, n_changed):
    # Only the entries of changed shards are served anew; the result is the full one.
    state = geo_state(seed, links=links, node_states=True)
    rng = np.random.default_rng(seed)
    before = client_service(state)
    nodes = state.placement.nodes.copy()
    rows = rng.choice(nodes.shape[0], min(n_changed, nodes.shape[0]), replace=False)
    nodes[rows] = rng.integers(-1, state.cluster.n_nodes, (rows.size, nodes.shape[1]))
    full = client_service(state, nodes)
    quick = client_service(state, nodes, since=(before, rows))
    assert np.array_equal(quick.nearest_ms, full.nearest_ms)
    assert np.array_equal(quick.local, full.local)
    assert quick.summary() == full.summary()


@SETTINGS
@given(seed=st.integers(0, 10**6), share=st.sampled_from([0.1, DEFAULT_SLO_SHARE, 0.5, 1.0]))
def test_slo_violations_match_brute_force(seed, share):
    state = geo_state(seed, node_states=seed % 2 == 0)
    lv = latency_levels(state.policy)
    rows = _brute(state, state.placement.nodes, lv.target_ms, lv.max_ms)
    per_shard: dict[int, float] = {}
    for s, _, w, *_ in rows:
        per_shard[s] = per_shard.get(s, 0.0) + w
    expect = sorted(
        (s, cl) for s, cl, w, near, *_ in rows if w >= share * per_shard[s] and near > lv.max_ms
    )
    got = slo_violations(state, share=share)
    assert sorted(map(tuple, got.tolist())) == expect


@SETTINGS
@given(seed=st.integers(0, 10**6))
def test_achievable_compliance_is_the_residency_bound(seed):
    state = geo_state(seed)
    c, s = state.cluster, state.shards
    lv = latency_levels(state.policy)
    allowed = s.region_allowed()
    lat = c.region_graph.latency_ms
    has_nodes = np.bincount(c.region_of[c.active], minlength=len(c.regions)) > 0
    clients = s.clients.toarray()
    total = clients.sum()
    servable = sum(
        clients[i, cl]
        for i in range(s.n_shards)
        for cl in range(len(c.regions))
        if any(
            allowed[i, r] and has_nodes[r] and lat[cl, r] <= lv.target_ms
            for r in range(len(c.regions))
        )
    )
    got = achievable_compliance(state)
    assert got == pytest.approx(servable / total)
    assert got >= client_service(state).compliance - 1e-12


@SETTINGS
@given(seed=st.integers(0, 10**6), data=st.data())
def test_move_benefit_is_the_change_of_service(seed, data):
    state = geo_state(seed)
    c = state.cluster
    nodes = state.placement.nodes
    rng = np.random.default_rng(seed)
    # Random moves (validity does not matter for the metric), some shards moved twice.
    k = data.draw(st.integers(1, 8))
    shard = rng.integers(0, state.shards.n_shards, k)
    cur = nodes.copy()
    source, target = [], []
    for sh in shard.tolist():
        row = cur[sh]
        j = int(rng.integers(row.size))
        free = [n for n in range(c.n_nodes) if n not in row]
        t = int(rng.choice(free))
        source.append(int(row[j]))
        target.append(t)
        row[j] = t
    served, covered = move_benefit(state, nodes, shard, np.array(source), np.array(target))
    lv = latency_levels(state.policy)
    before = _brute(state, nodes, lv.target_ms, lv.max_ms)
    after = _brute(state, cur, lv.target_ms, lv.max_ms)
    assert served.sum() == pytest.approx(
        sum(r[2] for r in after if r[4]) - sum(r[2] for r in before if r[4])
    )
    assert covered.sum() == pytest.approx(
        sum(r[2] for r in after if r[6]) - sum(r[2] for r in before if r[6])
    )


def test_levels_and_status():
    assert latency_levels(Policy()).target_ms == 50.0
    lv = latency_levels(Policy(latency_target_ms=20, latency_max_ms=40), target_ms=30)
    assert (lv.target_ms, lv.max_ms, lv.source) == (30.0, 40.0, "argument")
    assert latency_levels(Policy(), target_ms=150).max_ms == 150.0
    with pytest.raises(InvalidValueError):
        latency_levels(Policy(), target_ms=-1)
    with pytest.raises(InvalidValueError):
        latency_levels(Policy(), target_ms=60, max_ms=50)
    with pytest.raises(InvalidValueError):
        slo_violations(geo_state(1), share=0)
    assert coverage_status(Policy(), 0.85) == "ok"
    assert coverage_status(Policy(), None) == "n/a"


def test_no_clients_means_undefined():
    state = geo_state(3)
    empty = state.shards.clients * 0
    empty.eliminate_zeros()
    st0 = dataclasses.replace(state, shards=dataclasses.replace(state.shards, clients=empty))
    svc = client_service(st0)
    assert svc.compliance is None and svc.coverage is None and svc.mean_latency_ms is None
    assert slo_violations(st0).shape == (0, 2)
    assert achievable_compliance(st0) is None


def test_metrics_are_array_work():
    """Tier S (10,000 shards) in well under a second: no per-shard Python loop."""
    state = placement.tier_state("S")
    t0 = time.perf_counter()
    svc = client_service(state)
    slo_violations(state, service=svc)
    assert time.perf_counter() - t0 < 1.0
    assert svc.entry_shard.size == state.shards.clients.nnz
