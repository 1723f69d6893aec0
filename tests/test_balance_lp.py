"""The aggregated LP bound (placement.balance_lp): valid, at least the knapsack bound, honest
about what it cannot bound."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import placement
from placement.balance_lp import fair_loads, knapsack_bytes, solve_balance_lp
from placement.constraints import node_load
from placement.scenarios import with_capacity, with_failed_domain, with_new_nodes, with_node_state


def _peak_caps(state: placement.State, target: np.ndarray) -> np.ndarray:
    """(N, R) loads at the peak utilization a placement reaches, per resource."""
    c = state.cluster
    load = node_load(state, target)
    act = c.active
    peak = (load[act] / c.capacity[act]).max(axis=0)
    return peak[None, :] * c.capacity


def _scenarios(seed: int) -> list[placement.State]:
    st = placement.synthetic_state(30, 600, seed=seed)
    c = st.cluster
    picks = list(range(3))
    loc = [[c.domain_leaf[k][c.domain_of[i, k]] for k in range(len(c.levels))] for i in picks]
    loc = [[r, z, f"{z}-new"] for r, z, _ in loc]
    return [
        st,
        with_new_nodes(st, ["n0", "n1", "n2"], c.capacity[picks], loc),
        with_node_state(st, [c.node_ids[0]], "draining"),
        with_failed_domain(st, "zone", c.domain_names[1][0]),
        with_capacity(st, {c.node_ids[4]: {"disk_bytes": c.capacity[4, 0] * 0.6}}),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_is_below_every_plan_and_above_the_knapsack(seed: int) -> None:
    # Validity: a plan that reached its peaks moved at least the LP optimum at those peaks
    # (with nodes grouped or not); strength: the LP is never below the per-node knapsack
    # bound the planner reports for the same peaks.
    for state in _scenarios(seed):
        p = placement.planner.plan(state, seed=0)
        caps = _peak_caps(state, p.target_nodes)
        per_node = solve_balance_lp(state, caps)
        grouped = solve_balance_lp(state, caps, exact_groups_up_to=0)
        assert per_node.status == grouped.status == "optimal"
        assert per_node.bytes_bound <= p.bytes_moved * (1 + 1e-9) + 1.0
        assert grouped.bytes_bound <= per_node.bytes_bound * (1 + 1e-6) + 1.0
        knapsack = p.stats["bound"]["knapsack_bytes"]
        assert per_node.bytes_bound >= knapsack * (1 - 1e-5) - 1.0
        # The plan's own bound (the larger of the knapsack and an 8-bin grouped LP).
        assert knapsack * (1 - 1e-9) <= p.lower_bound_bytes <= p.bytes_moved * (1 + 1e-9) + 1.0


def test_exact_mode_plans_respect_the_bound() -> None:
    # Exact mode reaches other peaks with other moves than the engine; the LP at its
    # peaks is still at most its bytes.
    st = placement.synthetic_state(15, 80, seed=5)
    c = st.cluster
    loc = [[c.domain_leaf[k][c.domain_of[0, k]] for k in range(len(c.levels))]]
    st = with_new_nodes(st, ["extra"], c.capacity[[0]], [[loc[0][0], loc[0][1], "x"]])
    p = placement.planner.plan(st, seed=0, time_limit_s=5, method="exact")
    lp = solve_balance_lp(st, _peak_caps(st, p.target_nodes))
    assert lp.status == "optimal"
    assert 0 < lp.bytes_bound <= p.bytes_moved * (1 + 1e-9)


def test_two_resources_cost_more_than_their_knapsacks() -> None:
    # At a 2% goal in both resources, landing the bytes under both caps forces trades the
    # per-node knapsacks cannot see: the LP bound is well above their sum.
    st = placement.synthetic_state(60, 3000, seed=2)
    caps = 1.02 * fair_loads(st)
    load = node_load(st, st.placement.nodes)
    rows, cols = np.nonzero(st.placement.nodes >= 0)
    where = st.placement.nodes[rows, cols].astype(np.int64)
    size = st.shards.demand[:, 0]
    must = np.maximum(load[:, 0] - caps[:, 0], 0.0)
    for r in range(1, st.cluster.n_resources):
        need = np.maximum(load[:, r] - caps[:, r], 0.0)
        k = knapsack_bytes(where, st.shards.demand[rows, r], size[rows], need, st.cluster.n_nodes)
        must = np.maximum(must, k)
    lp = solve_balance_lp(st, caps)
    assert lp.status == "optimal"
    assert lp.bytes_bound > 1.05 * must.sum()
    # More bins can only tighten (finer per-byte ranges), never overstate.
    assert solve_balance_lp(st, caps, bins=16).bytes_bound >= lp.bytes_bound * (1 - 1e-6)
    assert solve_balance_lp(st, caps, bins=1).bytes_bound <= lp.bytes_bound * (1 + 1e-6)


def test_unreachable_caps_are_reported_infeasible() -> None:
    st = placement.synthetic_state(20, 300, seed=0)
    caps = 0.5 * fair_loads(st)  # half the mean everywhere: the data cannot fit
    assert solve_balance_lp(st, caps).status == "infeasible"


def test_zero_byte_replicas_with_other_demand_are_unsupported() -> None:
    st = placement.synthetic_state(20, 300, seed=0)
    demand = st.shards.demand.copy()
    demand[0, st.cluster.size_index] = 0.0
    shards = dataclasses.replace(st.shards, demand=demand)
    st2 = dataclasses.replace(st, shards=shards)
    lp = solve_balance_lp(st2, fair_loads(st2) * 1.1)
    assert lp.status == "unsupported" and lp.bytes_bound == 0.0


def test_a_cut_short_solve_gives_no_bound() -> None:
    # Only an optimum bounds: a solve stopped by its time limit says so and returns 0.
    st = placement.synthetic_state(600, 30_000, seed=2)
    lp = solve_balance_lp(st, 1.02 * fair_loads(st), time_limit_s=0.01)
    assert lp.status == "time limit" and lp.bytes_bound == 0.0


def test_caps_of_the_wrong_shape_are_a_clear_error() -> None:
    st = placement.synthetic_state(20, 300, seed=0)
    with pytest.raises(placement.InvalidValueError, match=r"\(20, 2\)"):
        solve_balance_lp(st, fair_loads(st)[:5])


def _tiny_state(seed: int, n_nodes: int, n_shards: int) -> placement.State:
    """Nodes of one region, one replica per shard, random bytes and iops per shard."""
    rng = np.random.default_rng(seed)
    cluster = placement.Cluster.build(
        node_ids=[f"n{i}" for i in range(n_nodes)],
        resources=["disk_bytes", "iops"],
        capacity=[[100e9, 100.0]] * n_nodes,
        levels=["region", "zone"],
        location=[["r", f"z{i}"] for i in range(n_nodes)],
    )
    shards = placement.Shards.build(
        cluster,
        ids=[f"s{k}" for k in range(n_shards)],
        demand=np.c_[rng.integers(1, 11, n_shards) * 1e9, rng.integers(1, 11, n_shards)],
        replicas=1,
    )
    start = placement.Placement.build(
        rng.integers(0, n_nodes, (n_shards, 1)).tolist(), n_nodes=n_nodes, width=1
    )
    return placement.State(cluster, shards, start, placement.Policy(spread_level="zone"))


def test_bound_is_below_the_brute_force_optimum() -> None:
    # Every placement of 8 single-replica shards on 4 nodes is tried (65,536). The caps
    # are the peaks of the best-balanced one, so that reaching them takes trades; the
    # fewest bytes moved by any placement under them is the true optimum, and every
    # form of the LP stays below it. Conserving the binned resource (with the tangent
    # cuts) never loosens the plain model, and tightens it on some of the seeds.
    n_nodes, n_shards = 4, 8
    tighter = 0
    for seed in range(20):
        st = _tiny_state(seed, n_nodes, n_shards)
        demand, start = st.shards.demand, st.placement.nodes[:, 0]
        every = np.stack(np.meshgrid(*[np.arange(n_nodes)] * n_shards, indexing="ij"), -1).reshape(
            -1, n_shards
        )  # node of each shard, in every placement
        load = np.zeros((every.shape[0], n_nodes, 2))
        for k in range(n_shards):
            load[np.arange(every.shape[0]), every[:, k]] += demand[k]
        cap = st.cluster.capacity
        pressure = (load / cap[None] / (demand.sum(axis=0) / cap.sum(axis=0))).max(axis=(1, 2))
        caps = _peak_caps(st, every[np.argmin(pressure)][:, None])
        fits = (load <= caps[None] * (1 + 1e-9)).all(axis=(1, 2))
        moved = ((every != start[None, :]) * demand[:, 0][None, :]).sum(axis=1)
        optimum = float(moved[fits].min())
        for bins in (1, 2, 4):
            for groups in (0, 100):
                plain, tight = (
                    solve_balance_lp(
                        st, caps, bins=bins, exact_groups_up_to=groups, conserve=conserve
                    )
                    for conserve in (False, True)
                )
                assert plain.status == tight.status == "optimal"
                assert tight.bytes_bound <= optimum * (1 + 1e-9) + 1.0, (seed, bins, groups)
                assert tight.bytes_bound >= plain.bytes_bound * (1 - 1e-6) - 1.0
                tighter += tight.bytes_bound > plain.bytes_bound * (1 + 1e-3)
    assert tighter > 0


def test_conserving_the_binned_resource_tightens_the_bound() -> None:
    # Tier-S-like add of nodes at a 2% goal: the plain model lets every sender free the
    # most iops per byte of its types and every taker add the least; conserved, the
    # bound rises (by about 2% here) and stays valid (the test above).
    st = placement.synthetic_state(60, 3000, seed=2)
    caps = 1.02 * fair_loads(st)
    plain = solve_balance_lp(st, caps, conserve=False)
    tight = solve_balance_lp(st, caps)
    assert plain.status == tight.status == "optimal"
    assert tight.bytes_bound > 1.01 * plain.bytes_bound
