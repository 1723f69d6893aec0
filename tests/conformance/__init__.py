"""Canonical tiny instances with known answers, shared by every solver path's tests.

Each :class:`Instance` is built in code (no files) and states its answer:

* feasible ones give the optimum of the exact mode's lexicographic objective — balance
  steps (largest weighted excess over ``1 + target_imbalance`` times the mean, in
  1/10,000 of the mean), then bytes moved — worked out by hand in ``why`` and confirmed
  by brute-force enumeration (:mod:`tests.conformance.brute`) in the test suite;
* infeasible ones give the kind of conflict the diagnosis must name, and the ids.

``greedy_bytes`` records what the fast engine is known to move where it misses the
optimum (the conformance test allows exactly that, so a regression or an improvement
both show up).

Most instances use ``target_imbalance=10``: balance is then no constraint and the
optimum is the cheapest repair, which is easy to reason about by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from placement.model import Cluster, Placement, Policy, Shards, State

__all__ = ["INFEASIBLE", "INSTANCES", "Instance", "make_state"]

REPAIR_ONLY = {"target_imbalance": 10.0}


def make_state(
    nodes: Sequence[tuple[str, str, str, float, str]],
    shards: Sequence[dict[str, Any]],
    *,
    policy: Policy | None = None,
    links: Sequence[dict[str, Any]] | None = None,
) -> State:
    """A one-resource (``disk_bytes``) state from compact records.

    *nodes*: ``(id, region, zone, capacity, state)``. *shards*: dicts with ``size``,
    ``nodes`` (ids), and optionally ``replicas`` (default 2), ``allowed`` (regions),
    ``pinned`` (ids), ``group``.
    """
    ids = [n[0] for n in nodes]
    cluster = Cluster.build(
        node_ids=ids,
        resources=["disk_bytes"],
        capacity=[[n[3]] for n in nodes],
        levels=["region", "zone"],
        location=[[n[1], n[2]] for n in nodes],
        state=[n[4] for n in nodes],
        links=links,
    )
    index = {n: i for i, n in enumerate(ids)}
    sh = Shards.build(
        cluster,
        demand=[[float(x["size"])] for x in shards],
        replicas=[int(x.get("replicas", 2)) for x in shards],
        ids=[x.get("id", f"s{i}") for i, x in enumerate(shards)],
        allowed_regions=[x.get("allowed") for x in shards],
        group=[x.get("group") for x in shards],
    )
    width = max(int(x.get("replicas", 2)) for x in shards)
    rows = [[index[n] for n in x["nodes"]] for x in shards]
    pinned = [
        [n in set(x.get("pinned", ())) for n in x["nodes"]] + [False] * (width - len(x["nodes"]))
        for x in shards
    ]
    placement = Placement.build(rows, n_nodes=len(ids), width=width, pinned=pinned)
    return State(cluster, sh, placement, policy or Policy(spread_level="zone"))


@dataclass(frozen=True)
class Instance:
    """A canonical instance and its known answer."""

    name: str
    build: Callable[[], State]
    options: dict[str, Any] = field(default_factory=dict)
    # Feasible: optimum (balance steps, bytes moved). Infeasible: None.
    optimum: tuple[int, float] | None = None
    why: str = ""
    # Infeasible: the diagnosis kind expected, and ids it must name.
    conflict: str | None = None
    conflict_ids: tuple[str, ...] = ()
    # What the greedy engine moves when it is known to miss the optimum (bytes).
    greedy_bytes: float | None = None


def _one_region(
    caps: Sequence[float], states: Sequence[str] | None = None, region: str = "eu"
) -> list[tuple[str, str, str, float, str]]:
    names = "abcdefgh"
    states = states or ["active"] * len(caps)
    return [
        (names[i], region, f"z{i + 1}", float(cap), st)
        for i, (cap, st) in enumerate(zip(caps, states, strict=True))
    ]


def _noop() -> State:
    return make_state(
        _one_region([100, 100, 100]),
        [{"size": 10, "nodes": ["a", "b"]}, {"size": 10, "nodes": ["b", "c"]}],
    )


def _drain() -> State:
    return make_state(
        _one_region([100, 100, 100, 100], ["active", "active", "active", "draining"]),
        [
            {"size": 10, "nodes": ["a", "d"]},
            {"size": 20, "nodes": ["b", "c"]},
            {"size": 15, "nodes": ["d", "b"]},
        ],
    )


def _failed() -> State:
    return make_state(
        _one_region([100, 100, 100, 100], ["active", "active", "active", "failed"]),
        [
            {"size": 10, "nodes": ["a", "d"]},
            {"size": 5, "nodes": ["d", "b"]},
            {"size": 7, "nodes": ["c"]},  # under-replicated already: one replica missing
        ],
    )


def _knapsack() -> State:
    # a holds 74 + 10 + 3 + 3 = 90 > 85 (headroom 0.85 of 100): 5 must leave.
    return make_state(
        _one_region([100, 100, 100, 100]),
        [
            {"size": 74, "nodes": ["a"], "replicas": 1},
            {"size": 10, "nodes": ["a"], "replicas": 1},
            {"size": 3, "nodes": ["a"], "replicas": 1},
            {"size": 3, "nodes": ["a"], "replicas": 1},
        ],
    )


def _spread() -> State:
    nodes = [
        ("a", "eu", "z1", 100.0, "active"),
        ("b", "eu", "z1", 100.0, "active"),
        ("c", "eu", "z2", 100.0, "active"),
        ("d", "eu", "z3", 100.0, "active"),
    ]
    return make_state(nodes, [{"size": 10, "nodes": ["a", "b"]}, {"size": 4, "nodes": ["c", "d"]}])


def _regions() -> State:
    nodes = [
        ("a", "eu", "e1", 100.0, "active"),
        ("b", "eu", "e2", 100.0, "active"),
        ("c", "us", "u1", 100.0, "active"),
    ]
    return make_state(
        nodes,
        [{"size": 10, "nodes": ["a", "b"]}, {"size": 6, "nodes": ["a", "c"]}],
        policy=Policy(spread_level="zone", min_regions=2),
    )


def _residency() -> State:
    nodes = [
        ("a", "eu", "e1", 100.0, "active"),
        ("b", "eu", "e2", 100.0, "active"),
        ("c", "us", "u1", 100.0, "active"),
    ]
    return make_state(
        nodes,
        [
            {"size": 10, "nodes": ["a", "c"], "allowed": ["eu"]},
            {"size": 8, "nodes": ["a", "c"]},
        ],
    )


def _pinned() -> State:
    # a: 8 (pinned) + 40 + 42 = 90 > 85; the 8 alone would clear it but may not move.
    return make_state(
        _one_region([100, 100, 100]),
        [
            {"size": 8, "nodes": ["a"], "replicas": 1, "pinned": ["a"]},
            {"size": 40, "nodes": ["a"], "replicas": 1},
            {"size": 42, "nodes": ["a"], "replicas": 1},
        ],
    )


def _new_nodes() -> State:
    # a and b hold two 10-byte shards each; c and d (identical) are new and empty.
    shards = [{"size": 10, "nodes": ["a"], "replicas": 1} for _ in range(2)]
    shards += [{"size": 10, "nodes": ["b"], "replicas": 1} for _ in range(2)]
    nodes = [
        ("a", "eu", "z1", 100.0, "active"),
        ("b", "eu", "z2", 100.0, "active"),
        ("c", "eu", "z3", 100.0, "active"),
        ("d", "eu", "z3", 100.0, "active"),
    ]
    return make_state(nodes, shards)


def _unreachable() -> State:
    return make_state(
        _one_region([100, 100]),
        [
            {"size": 40, "nodes": ["a"], "replicas": 1},
            {"size": 20, "nodes": ["a"], "replicas": 1},
        ],
    )


def _cost() -> State:
    # The lost replica of s0 must be re-created in eu or us; a live copy is in eu, and
    # the eu-us link costs money: the optimum stays in eu.
    nodes = [
        ("a", "eu", "e1", 100.0, "active"),
        ("b", "eu", "e2", 100.0, "active"),
        ("c", "us", "u1", 100.0, "active"),
        ("d", "eu", "e3", 100.0, "failed"),
    ]
    return make_state(
        nodes,
        [{"size": 10, "nodes": ["a", "d"]}],
        links=[{"a": "eu", "b": "us", "latency_ms": 80, "cost_per_gb": 0.02}],
    )


def _fewer_bytes_than_largest() -> State:
    # Found by comparing the engine with brute force on random tiny states (seeded).
    sizes = [(8, "a"), (25, "b"), (25, "a"), (10, "b"), (10, "a"), (15, "b")]
    return make_state(
        _one_region([100, 100, 100, 100]),
        [{"size": z, "nodes": [n], "replicas": 1} for z, n in sizes],
    )


def _two_moves_at_once() -> State:
    sizes = [(4, "b"), (15, "c"), (15, "d"), (15, "a"), (25, "c"), (25, "b"), (8, "e")]
    return make_state(
        _one_region([100, 100, 100, 100, 100]),
        [{"size": z, "nodes": [n], "replicas": 1} for z, n in sizes],
    )


INSTANCES: list[Instance] = [
    Instance("noop", _noop, REPAIR_ONLY, (0, 0.0), "Already valid: nothing moves."),
    Instance(
        "drain-one",
        _drain,
        REPAIR_ONLY,
        (0, 25.0),
        "d drains: its replicas of s0 (10) and s2 (15) must move; room everywhere.",
    ),
    Instance(
        "failed-restore",
        _failed,
        REPAIR_ONLY,
        (0, 22.0),
        "d failed: re-create s0 (10) and s1 (5); s2 lacks one replica (7).",
    ),
    Instance(
        "capacity-knapsack",
        _knapsack,
        REPAIR_ONLY,
        (0, 6.0),
        "a is 5 over its limit; moving the two 3s (6 bytes) beats the smallest single "
        "replica that clears it (10). (The engine moved 10 until it compared both.)",
    ),
    Instance(
        "spread-fix",
        _spread,
        REPAIR_ONLY,
        (0, 10.0),
        "s0 has both replicas in zone z1: one (10) must go to z2 or z3.",
    ),
    Instance(
        "min-regions",
        _regions,
        REPAIR_ONLY,
        (0, 10.0),
        "s0 spans only eu but min_regions is 2: one replica (10) moves to us; s1 is fine.",
    ),
    Instance(
        "residency",
        _residency,
        REPAIR_ONLY,
        (0, 10.0),
        "s0 may live in eu only; its us replica (10) moves to b.",
    ),
    Instance(
        "pinned-forces-other",
        _pinned,
        REPAIR_ONLY,
        (0, 40.0),
        "a is 5 over; the pinned 8 may not move, so the 40 (smallest other) moves.",
    ),
    Instance(
        "balance-new-nodes",
        _new_nodes,
        {"target_imbalance": 0.02},
        (0, 20.0),
        "Mean 0.1: every node may hold at most 10.2, i.e. one shard; a and b each give "
        "one (20 bytes). c and d are interchangeable (symmetry breaking applies).",
    ),
    Instance(
        "balance-unreachable",
        _unreachable,
        {"target_imbalance": 0.02},
        (3134, 20.0),
        "Mean 0.3; the best split is 40 | 20, peak 0.4 = 1.3333 x mean, 0.31333 over the "
        "target (3134 steps, rounded up); moving the 20 gets there with fewer bytes than "
        "moving the 40.",
    ),
    Instance(
        "transfer-cost-tiebreak",
        _cost,
        {"target_imbalance": 10.0},
        (0, 10.0),
        "The lost replica (10) is re-created on b (eu, free) rather than c (us, paid).",
    ),
    Instance(
        "budget-exact",
        _drain,
        {"target_imbalance": 10.0, "max_moves": 2, "max_moves_per_node": 2},
        (0, 25.0),
        "drain-one with exactly the two moves it needs (d sheds two replicas).",
    ),
    Instance(
        "shed-fewest-bytes",
        _fewer_bytes_than_largest,
        {"target_imbalance": 0.2},
        (0, 43.0),
        "a holds 8+25+10 = 43 and b 25+10+15 = 50 of 93 on four nodes of 100: the goal is "
        "1.2 x 23.25 = 27.9 each. a must shed 15.1 or more: 8+10 = 18 (keep the 25) is "
        "cheaper than the 25; b must shed 22.1 or more: 10+15 = 25. c and d take 18 and "
        "25, 43 bytes in all. The engine sheds the largest replica of each (50 bytes).",
        greedy_bytes=50.0,
    ),
    Instance(
        "two-moves-at-once",
        _two_moves_at_once,
        {"target_imbalance": 0.05},
        (1183, 19.0),
        "Loads a 15, b 4+25, c 15+25, d 15, e 8 (mean 21.4): a 25 must stay somewhere, so "
        "the best peak is 25 (0.1183 over 1.05 x the mean). It needs two moves together: "
        "c's 15 to e (23) and b's 4 to a (19); 19 bytes. The engine moves c's 15 to d, "
        "whose 30 becomes the peak, and no single move from there lowers the peak by half "
        "of its bytes (min_gain), so it stops at 30 with 15 bytes.",
        greedy_bytes=15.0,
    ),
]


def _capacity_short() -> State:
    nodes = [
        ("a", "eu", "e1", 100.0, "active"),
        ("b", "eu", "e2", 100.0, "active"),
        ("c", "us", "u1", 100.0, "active"),
        ("d", "us", "u2", 100.0, "active"),
    ]
    shards = [{"size": 30, "nodes": ["a", "b"], "allowed": ["eu"]} for _ in range(3)]
    return make_state(nodes, shards)


def _spread_impossible() -> State:
    nodes = [
        ("a", "eu", "z1", 100.0, "active"),
        ("b", "eu", "z2", 100.0, "active"),
        ("c", "eu", "z3", 100.0, "draining"),
        ("e", "eu", "z1", 100.0, "active"),
    ]
    return make_state(nodes, [{"size": 10, "nodes": ["a", "b", "c"], "replicas": 3, "id": "s-rf3"}])


def _residency_regions() -> State:
    nodes = [
        ("a", "eu-west", "w1", 100.0, "active"),
        ("b", "eu-west", "w2", 100.0, "active"),
        ("c", "eu-central", "c1", 100.0, "draining"),
        ("d", "us-east", "u1", 100.0, "active"),
    ]
    return make_state(
        nodes,
        [{"size": 10, "nodes": ["a", "c"], "allowed": ["eu-west", "eu-central"], "id": "gdpr"}],
        policy=Policy(spread_level="zone", min_regions=2),
    )


def _pinned_draining() -> State:
    return make_state(
        _one_region([100, 100, 100], ["active", "active", "draining"]),
        [{"size": 10, "nodes": ["a", "c"], "pinned": ["c"], "id": "s-pin"}],
    )


INFEASIBLE: list[Instance] = [
    Instance(
        "capacity-short-region",
        _capacity_short,
        REPAIR_ONLY,
        None,
        "Three eu-only shards of 30 need 180 bytes in eu, which holds 2 x 85 = 170.",
        conflict="capacity",
        conflict_ids=("eu",),
    ),
    Instance(
        "spread-impossible",
        _spread_impossible,
        REPAIR_ONLY,
        None,
        "Three replicas, one per zone, but only z1 and z2 have active nodes (z1 has two): "
        "allowing 2 per zone would fix it.",
        conflict="spread",
        conflict_ids=("s-rf3",),
    ),
    Instance(
        "residency-min-regions",
        _residency_regions,
        REPAIR_ONLY,
        None,
        "gdpr must span 2 regions of eu-west/eu-central, but eu-central's only node drains.",
        conflict="regions",
        conflict_ids=("gdpr", "eu-central"),
    ),
    Instance(
        "pinned-on-draining",
        _pinned_draining,
        REPAIR_ONLY,
        None,
        "s-pin is pinned on c, which is draining.",
        conflict="pinned",
        conflict_ids=("s-pin", "c"),
    ),
    Instance(
        "budget-too-small",
        _drain,
        {"target_imbalance": 10.0, "max_moves": 1},
        None,
        "drain-one needs two moves; the budget allows one.",
        conflict="max_moves",
        conflict_ids=("d",),
    ),
    Instance(
        "node-budget-too-small",
        _drain,
        {"target_imbalance": 10.0, "max_moves_per_node": 1},
        None,
        "d must shed two replicas; at most one move per node is allowed.",
        conflict="max_moves_per_node",
        conflict_ids=("d",),
    ),
]
