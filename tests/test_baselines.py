"""The baselines run, return well-shaped targets, and keep their promises.

One-move greedy and naive CP-SAT are valid on feasible instances; rendezvous is
deterministic per seed and disturbs only about 1/N of the replicas when a node joins.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import placement
from placement import check
from placement.planner import imbalance, plan
from placement.scenarios import with_new_nodes, with_node_state
from placement.solvers.baselines import (
    moved_replicas,
    naive_cpsat,
    one_move_greedy,
    rendezvous_remap,
)


@pytest.fixture(scope="module")
def tiny():
    state = placement.synthetic_state(15, 40, seed=3)
    assert check(state).total == 0
    return state


@pytest.fixture(scope="module")
def tiny_failed(tiny):
    """One node failed: every baseline has repairs to do."""
    return with_node_state(tiny, [tiny.cluster.node_ids[2]], "failed")


@pytest.mark.parametrize("baseline", [one_move_greedy, rendezvous_remap, naive_cpsat])
def test_every_baseline_returns_a_target_of_the_placement_shape(tiny_failed, baseline):
    res = baseline(tiny_failed, time_limit_s=2, seed=1)
    assert res.nodes.shape == tiny_failed.placement.nodes.shape
    assert res.nodes.dtype == np.int32
    assert ((res.nodes >= -1) & (res.nodes < tiny_failed.cluster.n_nodes)).all()
    assert isinstance(res.status, str) and isinstance(res.stats, dict)
    if res.found:
        # No slot holds a node twice, and each shard has its replication factor.
        rows = np.sort(res.nodes, axis=1)
        assert not ((rows[:, 1:] == rows[:, :-1]) & (rows[:, 1:] >= 0)).any()


def test_one_move_greedy_repairs_and_balances_validly(tiny, tiny_failed):
    res = one_move_greedy(tiny_failed, target_imbalance=0.05)
    assert check(tiny_failed, res.nodes).total == 0
    failed = 2
    assert not (res.nodes == failed).any()
    # A balancing run on the valid state stays valid and never raises the peak.
    res = one_move_greedy(tiny, target_imbalance=0.0)
    assert check(tiny, res.nodes).total == 0
    before = placement.evaluate(tiny).resources[0].imbalance_ratio
    after = imbalance(tiny, res.nodes)["disk_bytes"]
    assert after <= before + 1e-12


def test_one_move_greedy_keeps_the_budget(tiny):
    res = one_move_greedy(tiny, target_imbalance=0.0, max_moves=3)
    moves, _ = moved_replicas(tiny, res.nodes)
    assert moves <= 3
    assert check(tiny, res.nodes).total == 0


def test_naive_cpsat_finds_a_valid_plan_on_a_tiny_feasible_instance(tiny_failed):
    res = naive_cpsat(tiny_failed, time_limit_s=10, target_imbalance=0.3)
    assert res.found and res.status in ("OPTIMAL", "FEASIBLE")
    assert check(tiny_failed, res.nodes).total == 0
    assert res.stats["first_solution_s"] is not None
    assert res.stats["n_x_variables"] == 40 * 15


def test_naive_cpsat_refuses_a_model_above_its_size_limit(tiny):
    res = naive_cpsat(tiny, max_variables=100)
    assert (res.status, res.found) == ("MODEL_TOO_LARGE", False)
    assert "600 variables" in res.stats["message"]
    assert np.array_equal(res.nodes, tiny.placement.nodes)


def test_rendezvous_is_deterministic_per_seed(tiny):
    a = rendezvous_remap(tiny, seed=7).nodes
    assert np.array_equal(a, rendezvous_remap(tiny, seed=7).nodes)
    assert not np.array_equal(a, rendezvous_remap(tiny, seed=8).nodes)


def test_rendezvous_keeps_spread_regions_and_residency(tiny):
    counts = check(tiny, rendezvous_remap(tiny, seed=0).nodes).counts()
    # Only capacity may suffer: hashing ignores load.
    assert {k: n for k, n in counts.items() if n and k != "capacity"} == {}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), state_seed=st.integers(0, 50))
def test_rendezvous_moves_about_one_nth_when_a_node_joins(seed, state_seed):
    state = placement.synthetic_state(30, 600, seed=state_seed)
    c = state.cluster
    new = with_new_nodes(state, ["joiner"], c.capacity[[0]], [c.locations()[0]])
    before = rendezvous_remap(state, seed=seed).nodes
    after = rendezvous_remap(new, seed=seed).nodes
    joiner = c.n_nodes
    same = (np.sort(before, axis=1) == np.sort(after, axis=1)).all(axis=1)
    # Consistency: a shard changes only if it now uses the new node (the new node took a
    # slot and the rest of its walk shifted; no other shard sees any difference).
    has_joiner = (after == joiner).any(axis=1)
    assert (same | has_joiner).all()
    # Minimal disruption: the replicas that moved are about the new node's share of the
    # weight (1/31 here), with slack for the walk's knock-on moves and sampling noise.
    moved = int(((after[:, :, None] != before[:, None, :]).all(axis=2) & (after >= 0)).sum())
    total = int((after >= 0).sum())
    share = c.capacity[0, c.size_index] / new.cluster.capacity[:, c.size_index].sum()
    assert moved <= 2.0 * share * total + 10
    elsewhere = moved - int((after == joiner).sum())
    assert elsewhere <= 0.1 * moved + 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    state_seed=st.integers(0, 10_000),
    n_nodes=st.integers(15, 40),
    n_shards=st.integers(50, 400),
    target=st.floats(0.0, 0.2),
)
def test_one_move_greedy_gets_stuck_only_where_the_engine_shows_a_way(
    state_seed, n_nodes, n_shards, target
):
    """A baseline may fail, but honestly: when the one-move greedy leaves violations,
    either CP-SAT proves none can be avoided or the library's planner finds a valid
    plan (single moves get stuck on small tight clusters; making room needs more)."""
    state = placement.synthetic_state(n_nodes, n_shards, seed=state_seed)
    ids = state.cluster.node_ids
    rng = np.random.default_rng(state_seed)
    gone, leaving = rng.choice(len(ids), 2, replace=False)
    state = with_node_state(state, [ids[gone]], "failed")
    state = with_node_state(state, [ids[leaving]], "draining")
    res = one_move_greedy(state, target_imbalance=target)
    if check(state, res.nodes).total:
        try:
            p = plan(state, target_imbalance=target, time_limit_s=20)
        except placement.InfeasibleError:
            proof = naive_cpsat(state, trigger_imbalance=100.0, time_limit_s=20)
            assert proof.status == "INFEASIBLE", check(state, res.nodes).counts()
        else:
            assert not check(state, p.target_nodes)
