"""Schedules are safe at every instant, ordered by urgency, and honest about their time.

Hand-built clusters pin down each rule (transient capacity, concurrency, one move per
shard per wave, spread order, cycles, donors, duration and bound); every engine
scenario's schedule replays cleanly through the independent validator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import placement
from placement import NodeState, SchedulingError, StateDriftError, check
from placement.model import Cluster, Placement, Policy, Shards, State
from placement.plan import REASONS, Plan, apply_moves, plan_from_document
from placement.scenarios import (
    plan_add_nodes,
    plan_capacity_change,
    plan_drain,
    plan_failure,
    plan_rebalance,
    with_node_state,
)
from placement.schedule import move_classes, schedule
from placement.validate import validate

GB = 1e9


def make_state(
    nodes: Sequence[tuple[Any, ...]],
    shards: Sequence[dict[str, Any]],
    *,
    policy: Policy | None = None,
    links: Sequence[dict[str, Any]] | None = None,
) -> State:
    """A one-resource state. *nodes*: ``(id, region, zone, capacity_bytes, state
    [, bandwidth_bps])``; *shards*: dicts with ``size``, ``nodes`` (ids) and optionally
    ``replicas`` (default: the listed count), ``allowed``, ``pinned``, ``min_available``."""
    ids = [n[0] for n in nodes]
    cluster = Cluster.build(
        node_ids=ids,
        resources=["disk_bytes"],
        capacity=[[n[3]] for n in nodes],
        levels=["region", "zone"],
        location=[[n[1], n[2]] for n in nodes],
        state=[n[4] for n in nodes],
        bandwidth_bps=[n[5] if len(n) > 5 else 8e9 for n in nodes],
        links=links,
    )
    index = {n: i for i, n in enumerate(ids)}
    replicas = [int(x.get("replicas", len(x["nodes"]))) for x in shards]
    mins = [x.get("min_available", r // 2 + 1) for x, r in zip(shards, replicas, strict=True)]
    sh = Shards.build(
        cluster,
        demand=[[float(x["size"])] for x in shards],
        replicas=replicas,
        min_available=mins,
        ids=[x.get("id", f"s{i}") for i, x in enumerate(shards)],
        allowed_regions=[x.get("allowed") for x in shards],
    )
    width = max(replicas)
    rows = [[index[n] for n in x["nodes"]] for x in shards]
    pinned = [
        [n in set(x.get("pinned", ())) for n in x["nodes"]] + [False] * (width - len(x["nodes"]))
        for x in shards
    ]
    pl = Placement.build(rows, n_nodes=len(ids), width=width, pinned=pinned)
    return State(cluster, sh, pl, policy or Policy(spread_level="zone", headroom=1.0))


def make_plan(state: State, moves: Sequence[tuple[str, str | None, str]], **extra: Any) -> Plan:
    """A plan from ``(shard, from, to)`` ids, read through the interchange document."""
    doc = {
        "format": "placement.plan/1",
        "state_sha256": state.sha256(),
        "moves": [
            {"shard": s, "from": a, "to": b, "reason": extra.get("reason", "balance")}
            for s, a, b in moves
        ],
    }
    return plan_from_document(doc, state)


def wave_of(sch: placement.Schedule, state: State, shard: str, target: str) -> int:
    p = sch.plan
    s = state.shards.id_index()[shard]
    b = state.cluster.node_ids.index(target)
    k = np.flatnonzero((p.shard == s) & (p.target == b))
    assert k.size == 1
    return int(p.wave[k[0]])


def assert_clean(state: State, sch: placement.Schedule, **limits: Any) -> None:
    report = validate(state, sch, **limits)
    assert report.ok, report.to_text()
    assert sorted(np.concatenate(sch.waves()).tolist()) == list(range(sch.plan.n_moves))
    final = apply_moves(state.placement.nodes, sch.plan.shard, sch.plan.source, sch.plan.target)
    assert np.array_equal(np.sort(final, axis=1), np.sort(sch.plan.target_nodes, axis=1))


# -- hand-built rules ---------------------------------------------------------------------


def test_transient_capacity_waits_for_the_space_to_be_freed():
    # t holds x (50 GB of 100); y (60 GB) arrives once x has left: never both at once.
    st = make_state(
        [
            ("t", "r", "z1", 100 * GB, "active"),
            ("u", "r", "z2", 100 * GB, "active"),
            ("v", "r", "z3", 100 * GB, "active"),
        ],
        [
            {"id": "x", "size": 50 * GB, "nodes": ["t"]},
            {"id": "y", "size": 60 * GB, "nodes": ["v"]},
        ],
    )
    p = make_plan(st, [("y", "v", "t"), ("x", "t", "u")])
    sch = schedule(st, p)
    assert wave_of(sch, st, "x", "u") < wave_of(sch, st, "y", "t")
    assert_clean(st, sch)
    # Replayed in plan order (one move per step), the first step overflows t in flight.
    naive = validate(st, p)
    assert naive.counts() == {"transient-capacity": 1}


def test_concurrency_limit_per_node_and_wave():
    nodes = [("hub", "r", "z0", 1000 * GB, "active")] + [
        (f"n{i}", "r", f"z{i + 1}", 1000 * GB, "active") for i in range(7)
    ]
    shards = [{"id": f"s{i}", "size": GB, "nodes": [f"n{i}"]} for i in range(7)]
    st = make_state(nodes, shards)
    p = make_plan(st, [(f"s{i}", f"n{i}", "hub") for i in range(7)])
    sch = schedule(st, p, max_concurrent_per_node=3)
    per_wave = np.bincount(sch.plan.wave)
    assert sch.n_waves >= 3 and per_wave.max() <= 3
    assert sch.duration_s == pytest.approx(7.0) == sch.lower_bound_s  # 7 GB into hub at 1 GB/s
    assert_clean(st, sch, max_concurrent_per_node=3)
    crowded = validate(st, replace(p, wave=np.zeros(7, dtype=np.int64)), max_concurrent_per_node=3)
    assert crowded.counts() == {"node-concurrency": 1}  # reported once, at the 4th transfer


def test_one_move_per_shard_per_wave_and_a_safe_order():
    # Shard s: a(z1) b(z2) c(z3) -> a'(z1) d(z4) c. In plan order b -> a' comes first and
    # puts two replicas in z1 for a while; the schedule moves a -> d first.
    st = make_state(
        [
            ("a", "r", "z1", 100 * GB, "active"),
            ("a2", "r", "z1", 100 * GB, "active"),
            ("b", "r", "z2", 100 * GB, "active"),
            ("c", "r", "z3", 100 * GB, "active"),
            ("d", "r", "z4", 100 * GB, "active"),
        ],
        [{"id": "s", "size": GB, "nodes": ["a", "b", "c"]}],
    )
    p = make_plan(st, [("s", "b", "a2"), ("s", "a", "d")])
    assert validate(st, p).counts() == {"spread": 1}
    sch = schedule(st, p)
    assert wave_of(sch, st, "s", "d") < wave_of(sch, st, "s", "a2")
    assert_clean(st, sch)


def test_sources_are_paired_anew_when_no_order_is_safe():
    # a(z1) b(z2) -> b2(z2) a2(z1) as planned (a -> b2, b -> a2): whichever goes first
    # doubles a zone. Paired a -> a2, b -> b2 the same replicas are reached safely.
    st = make_state(
        [
            ("a", "r", "z1", 100 * GB, "active"),
            ("a2", "r", "z1", 100 * GB, "active"),
            ("b", "r", "z2", 100 * GB, "active"),
            ("b2", "r", "z2", 100 * GB, "active"),
        ],
        [{"id": "s", "size": GB, "nodes": ["a", "b"], "min_available": 1}],
    )
    p = make_plan(st, [("s", "a", "b2"), ("s", "b", "a2")])
    sch = schedule(st, p)
    ids = st.cluster.node_ids
    pairs = {(ids[a], ids[b]) for a, b in zip(sch.plan.source, sch.plan.target, strict=True)}
    assert pairs == {("a", "a2"), ("b", "b2")} and sch.stats["pairings_changed"] == 1
    assert_clean(st, sch)


def test_unsafe_moves_are_a_clear_error():
    st = make_state(
        [
            ("a", "r", "z1", 100 * GB, "active"),
            ("b", "r", "z2", 100 * GB, "active"),
            ("x", "r", "z2", 100 * GB, "active"),
            ("c", "r", "z3", 100 * GB, "active"),
            ("o", "other", "z4", 100 * GB, "active"),
        ],
        [
            {"id": "s", "size": GB, "nodes": ["a", "x"], "min_available": 1},
            {"id": "home", "size": GB, "nodes": ["a"], "allowed": ["r"]},
        ],
    )
    # A chain through b (same zone as x) has no safe order: a -> b must come first.
    with pytest.raises(SchedulingError, match="No order of the 2 moves of shard 's'"):
        schedule(st, make_plan(st, [("s", "a", "b"), ("s", "b", "c")]))
    # A single move out of the shard's allowed regions breaches residency in any order.
    with pytest.raises(SchedulingError, match="cannot run safely"):
        schedule(st, make_plan(st, [("home", "a", "o")]))


def _swap_state(spare_gb: float) -> State:
    return make_state(
        [
            ("A", "r", "z1", 100 * GB, "active"),
            ("B", "r", "z2", 100 * GB, "active"),
            ("C", "r", "z3", spare_gb * GB, "active"),
        ],
        [
            {"id": "p", "size": 60 * GB, "nodes": ["A"]},
            {"id": "q", "size": 60 * GB, "nodes": ["B"]},
        ],
    )


def test_swap_between_full_nodes_goes_through_a_temporary_node():
    st = _swap_state(100)
    p = make_plan(st, [("p", "A", "B"), ("q", "B", "A")])
    sch = schedule(st, p)
    assert sch.plan.n_moves == 3 and sch.temporary.sum() == 2
    assert sch.stats["cycles_broken"] == 1
    assert_clean(st, sch)
    doc = sch.to_document(st)
    assert sum(1 for m in doc["moves"] if m.get("temporary")) == 2
    again = plan_from_document(json.loads(json.dumps(doc)), st)
    assert again.n_waves == sch.n_waves


def test_swap_cycle_without_room_names_the_cycle():
    with pytest.raises(
        SchedulingError, match=r"cycle between full nodes (A -> B -> A|B -> A -> B)"
    ):
        schedule(_swap_state(10), make_plan(_swap_state(10), [("p", "A", "B"), ("q", "B", "A")]))
    st = _swap_state(100)
    with pytest.raises(SchedulingError, match="Temporary placements are disabled"):
        schedule(st, make_plan(st, [("p", "A", "B"), ("q", "B", "A")]), temporary_placements=False)


def test_restores_first_fewest_live_replicas_first():
    # One target, one transfer at a time: the shard with one live replica is restored
    # first, then the one with two, then the balance move.
    st = make_state(
        [
            ("f", "r", "z0", 100 * GB, "failed"),
            ("t", "r", "z1", 100 * GB, "active"),
            ("a", "r", "z2", 100 * GB, "active"),
            ("b", "r", "z3", 100 * GB, "active"),
            ("c", "r", "z4", 100 * GB, "active"),
        ],
        [
            {"id": "one", "size": 5 * GB, "nodes": ["f", "a"]},
            {"id": "two", "size": 1 * GB, "nodes": ["f", "b", "c"]},
            {"id": "bal", "size": 9 * GB, "nodes": ["c"]},
        ],
    )
    p = make_plan(st, [("bal", "c", "t"), ("two", "f", "t"), ("one", "f", "t")])
    assert move_classes(st, p).tolist() == [3, 0, 0]
    sch = schedule(st, p, max_concurrent_per_node=1)
    order = [wave_of(sch, st, s, "t") for s in ("one", "two", "bal")]
    assert order == sorted(order) and len(set(order)) == 3
    assert_clean(st, sch, max_concurrent_per_node=1)


def test_bytes_in_flight_cap_and_a_larger_move_alone():
    nodes = [(f"n{i}", "r", f"z{i}", 100 * GB, "active") for i in range(8)]
    shards = [
        {"id": f"s{i}", "size": (30 if i == 0 else 4) * GB, "nodes": [f"n{i}"]} for i in range(4)
    ]
    st = make_state(nodes, shards)
    p = make_plan(st, [(f"s{i}", f"n{i}", f"n{i + 4}") for i in range(4)])
    sch = schedule(st, p, max_bytes_in_flight=10 * GB)
    copied = np.bincount(sch.plan.wave, weights=sch.plan.size_bytes)
    big = wave_of(sch, st, "s0", "n4")
    assert np.bincount(sch.plan.wave)[big] == 1  # 30 GB > cap: alone
    assert all(c <= 10 * GB for w, c in enumerate(copied) if w != big)
    assert_clean(st, sch, max_bytes_in_flight=10 * GB)


def test_duration_bound_and_ratio_of_a_single_copy():
    st = make_state(
        [("a", "r", "z1", 100 * GB, "active", 8e9), ("b", "r", "z2", 100 * GB, "active", 16e9)],
        [{"id": "s", "size": 10 * GB, "nodes": ["a"]}],
    )
    sch = schedule(st, make_plan(st, [("s", "a", "b")]))
    # 10 GB out of a at 1 GB/s: 10 s, and no schedule can do better.
    assert sch.duration_s == pytest.approx(10.0)
    assert sch.lower_bound_s == pytest.approx(10.0) and sch.ratio == pytest.approx(1.0)


def test_region_links_throttle_and_donor_choice():
    links = [{"a": "eu", "b": "us", "latency_ms": 80, "bandwidth_bps": 8e8}]
    st = make_state(
        [
            ("e1", "eu", "e-z1", 100 * GB, "active"),
            ("e2", "eu", "e-z2", 100 * GB, "active"),
            ("u1", "us", "u-z1", 100 * GB, "active"),
            ("u2", "us", "u-z2", 100 * GB, "active"),
            ("u3", "us", "u-z3", 100 * GB, "active"),
        ],
        [
            {"id": "mixed", "size": 4 * GB, "nodes": ["e1", "u1"]},
            {"id": "eu_only", "size": 2 * GB, "nodes": ["e1"], "allowed": ["eu"]},
            {"id": "far", "size": 1 * GB, "nodes": ["e2"]},
        ],
        links=links,
    )
    p = make_plan(st, [("mixed", "e1", "u2"), ("eu_only", "e1", "e2"), ("far", "e2", "u3")])
    sch = schedule(st, p)
    ids = st.cluster.node_ids
    assert [ids[d] for d in sch.donor.tolist()] == ["u1", "e1", "e2"]  # same region first
    # Only "far" must cross: 1 GB over a 0.1 GB/s link is 10 s.
    assert sch.lower_bound_s == pytest.approx(10.0)
    assert sch.stats["cross_region_bytes"] == pytest.approx(GB)
    assert schedule(st, p, region_links=False).lower_bound_s < 10.0
    assert_clean(st, sch)


def test_refuses_a_drifted_plan_and_bad_parameters():
    st = placement.synthetic_state(30, 300, seed=3)
    from placement.planner import plan

    p = plan(st, max_moves=5)
    drifted = with_node_state(st, [st.cluster.node_ids[0]], "draining")
    with pytest.raises(StateDriftError, match="drifted"):
        schedule(drifted, p)
    with pytest.raises(placement.InvalidValueError, match="max_concurrent_per_node"):
        schedule(st, p, max_concurrent_per_node=0)
    with pytest.raises(placement.InvalidValueError, match="max_bytes_in_flight"):
        schedule(st, p, max_bytes_in_flight=-1.0)


def test_a_lost_shard_has_no_donor():
    st = make_state(
        [("f", "r", "z1", 100 * GB, "failed"), ("t", "r", "z2", 100 * GB, "active")],
        [{"id": "gone", "size": GB, "nodes": ["f"]}],
    )
    sch = schedule(st, make_plan(st, [("gone", "f", "t")]))
    assert sch.donor.tolist() == [-1] and sch.stats["lost_moves"] == 1
    assert validate(st, sch).counts() == {"no-live-copy": 1}


def test_empty_plan():
    st = placement.synthetic_state(30, 200, seed=1)
    from placement.planner import plan

    p = plan(st, max_moves=0)
    sch = schedule(st, p)
    assert sch.n_waves == 0 and sch.duration_s == 0 and sch.ratio == 1.0
    assert validate(st, sch).ok


# -- the plan document's waves ------------------------------------------------------------


def test_waves_round_trip_and_are_checked():
    st = placement.example_state()
    from placement.planner import plan

    sch = schedule(st, plan(st, time_limit_s=5))
    doc = json.loads(json.dumps(sch.to_document(st)))
    assert [sorted(w) for w in doc["waves"]] == [sorted(w.tolist()) for w in sch.waves()]
    again = plan_from_document(doc, st)
    assert np.array_equal(again.wave, sch.plan.wave)
    assert "waves" not in plan(st, time_limit_s=5).to_document(st)
    bad = json.loads(json.dumps(doc))
    bad["waves"][0].append(bad["waves"][1][0])
    with pytest.raises(placement.InvalidValueError, match="more than once"):
        plan_from_document(bad, st)
    bad = json.loads(json.dumps(doc))
    bad["waves"][0].pop()
    with pytest.raises(placement.InvalidValueError, match="leave out"):
        plan_from_document(bad, st)
    bad = json.loads(json.dumps(doc))
    bad["waves"][0].append(10_000)
    with pytest.raises(placement.InvalidValueError, match="do not exist"):
        plan_from_document(bad, st)
    bad["waves"] = {"0": [0]}
    with pytest.raises(placement.SchemaError, match="waves"):
        plan_from_document(bad, st)


# -- every engine scenario ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return placement.synthetic_state(60, 2000, seed=5)


def _scenarios(st: State) -> list[tuple[str, State, Plan]]:
    c = st.cluster
    out = []
    new, p = plan_add_nodes(
        st,
        ["new-1", "new-2"],
        [[8e12, 40000]] * 2,
        [["us-east", "us-east-a", "x"], ["eu-west", "eu-west-b", "y"]],
        time_limit_s=5,
    )
    out.append(("add", new, p))
    out.append(("drain", *plan_drain(st, [c.node_ids[3]], time_limit_s=5)))
    out.append(("failure", *plan_failure(st, [c.node_ids[5]], time_limit_s=5)))
    out.append(("zone", *plan_failure(st, zone=c.domain_names[1][2], time_limit_s=5)))
    out.append(
        (
            "capacity",
            *plan_capacity_change(st, {c.node_ids[7]: {"disk_bytes": 2e12}}, time_limit_s=5),
        )
    )
    out.append(("rebalance", *plan_rebalance(st, maintenance=True, time_limit_s=5)))
    return out


@pytest.mark.parametrize("which", ["example", "synthetic"])
def test_every_scenario_schedules_and_validates_cleanly(which, small):
    st = placement.example_state() if which == "example" else small
    if which == "example":
        from placement.planner import plan

        cases = [("repair", st, plan(st, time_limit_s=5))]
        cases += [c for c in _scenarios(placement.synthetic_state(30, 600, seed=9))]
    else:
        cases = _scenarios(st)
    for name, new, p in cases:
        sch = schedule(new, p)
        assert_clean(new, sch)
        assert sch.duration_s >= sch.lower_bound_s * (1 - 1e-9), name
        assert sch.ratio is None or sch.ratio < 2.0, (name, sch.ratio)
        classes = move_classes(new, sch.plan)
        if (classes == 0).any() and (classes == 3).any():
            # Restores start no later than balance moves.
            assert sch.plan.wave[classes == 0].min() <= sch.plan.wave[classes == 3].min(), name
        assert not check(new, sch.plan.target_nodes)
        assert set(REASONS[r] for r in sch.plan.reason.tolist()) <= set(REASONS)


def test_node_states_are_respected_by_donors(small):
    new, p = plan_failure(small, zone=small.cluster.domain_names[1][0], time_limit_s=5)
    sch = schedule(new, p)
    assert (new.cluster.state[sch.donor[sch.donor >= 0]] != NodeState.FAILED).all()
    assert (new.cluster.state[sch.plan.target] == NodeState.ACTIVE).all()
