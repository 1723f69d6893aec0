"""Properties of the state reader under arbitrary damage, and of the write/read round trip.

The reader is the library's edge: whatever a document holds, loading it either gives a
State or raises a PlacementError, and never modifies the caller's document. A valid state
written with state_to_document and read back is the same state (same sha256).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from placement.errors import PlacementError
from placement.io.interchange import state_from_document, state_to_document

# -- valid documents ----------------------------------------------------------------------------


def _minimal_doc() -> dict[str, Any]:
    return {
        "format": "placement.state/1",
        "resources": ["disk_bytes"],
        "levels": ["region"],
        "nodes": [{"id": "a", "location": ["eu"], "capacity": {"disk_bytes": 1.0e12}}],
        "shards": [{"id": "s", "demand": {"disk_bytes": 1.0e9}, "replicas": 1, "nodes": ["a"]}],
    }


def _full_doc() -> dict[str, Any]:
    """Two regions with three zones each, an extra region, every optional field."""
    nodes = [
        {
            "id": f"{region}{k}",
            "location": [region, f"z{k}", f"r{k}"],  # zone names repeat across regions
            "capacity": {"disk_bytes": 4.0e12, "iops": 20000, "net_bps": 1.0e10},
            "state": ["active", "draining", "failed"][k % 3],
            "bandwidth_bps": 1.25e9,
            "x-serial": f"SN{k}",
        }
        for region in ("eu", "us")
        for k in range(3)
    ]
    return {
        "format": "placement.state/1",
        "resources": ["disk_bytes", "iops", "net_bps"],
        "size_resource": "disk_bytes",
        "levels": ["region", "zone", "rack"],
        "regions": ["sa"],
        "nodes": nodes,
        "links": [
            {"a": "eu", "b": "us", "latency_ms": 80, "cost_per_gb": 0.02, "bandwidth_bps": 1.0e10},
            {"a": "us", "b": "ap", "latency_ms": 120, "x-carrier": "sea"},
            {"a": "sa", "b": "us", "latency_ms": 110, "cost_per_gb": 0.05},
        ],
        "shards": [
            {
                "id": "s1",
                "demand": {"disk_bytes": 1.2e9, "iops": 30},
                "replicas": 3,
                "min_available": 2,
                "nodes": ["eu0", "eu1", "us0"],
                "allowed_regions": ["eu", "us"],
                "clients": {"eu": 120.0, "ap": 5.0},
                "group": "tenant-a",
                "pinned": ["eu0"],
                "x-owner": "team-1",
            },
            {
                "id": "s2",
                "demand": {"disk_bytes": 3.0e8},
                "replicas": 2,
                "nodes": ["us2"],
                "group": "tenant-b",
                "clients": {"sa": 1},
            },
            {"id": "s3", "demand": {}, "replicas": 1, "allowed_regions": ["us"]},
        ],
        "policy": {
            "headroom": {"default": 0.85, "iops": 0.7},
            "spread_level": "zone",
            "max_per_domain": 1,
            "min_regions": 1,
            "latency_target_ms": 50,
            "latency_max_ms": 100,
            "imbalance_warning": 0.2,
            "imbalance_critical": 0.35,
            "imbalance_alert": 0.25,
            "coverage_target": 0.8,
            "coverage_alert": 0.75,
            "max_concurrent_per_node": 10,
            "cross_region_alert_bytes": 1.0e11,
        },
        "x-generated-by": "test_io_fuzz",
    }


_BASES: list[Callable[[], dict[str, Any]]] = [_minimal_doc, _full_doc]


def test_base_documents_are_valid() -> None:
    for make in _BASES:
        state_from_document(make())


# -- random JSON values -------------------------------------------------------------------------

_NAMES = [
    *"eu us ap sa eu0 us1 s1 s2 a s disk_bytes iops zone rack region active failed".split(),
    "",
    "x-note",
]
_FIELDS = """
id nodes replicas demand capacity location state links
regions headroom allowed_region allowed_regions min_available spread_level pinned clients
group latency_ms cost_per_gb bandwidth_bps a b format x-extension
headroom_by_resource
""".split()

_SMALL_INTS = st.integers(min_value=-(2**31), max_value=2**31)
#: Valid JSON that float64 / int64 cannot hold (see test_io_errors.test_oversized_integer).
_OVERSIZED_INTS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 10**400, -(10**400)])
_SPECIAL_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1.0e308, -1.0e308, 5e-324, -0.0])


def _json_values(*, oversized: bool) -> st.SearchStrategy[Any]:
    ints = (
        st.one_of(_SMALL_INTS, st.integers(-3, 1001), _OVERSIZED_INTS)
        if oversized
        else st.one_of(_SMALL_INTS, st.integers(-3, 1001))
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(allow_nan=True, allow_infinity=True),
        _SPECIAL_FLOATS,
        st.sampled_from(_NAMES),
        st.text(max_size=6),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(_FIELDS + _NAMES) | st.text(max_size=4), inner, max_size=3
            ),
        ),
        max_leaves=6,
    )


# -- mutations ----------------------------------------------------------------------------------


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair of the document, at any depth, outermost first."""
    out: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        container = stack.pop(0)
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            out.append((container, key))
            if isinstance(container[key], (dict, list)):
                stack.append(container[key])
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _bad_numbers(*, oversized: bool) -> st.SearchStrategy[Any]:
    """Replacements for a number: out of range, not finite, of another type, or oversized."""
    choices = st.one_of(
        st.sampled_from([-1, 0, -0.5, 0.5, 1.5, 2, 3.0, 999, 1000, 1001, True, False, None, "1"]),
        _SPECIAL_FLOATS,
        _SMALL_INTS,
    )
    return st.one_of(choices, _OVERSIZED_INTS) if oversized else choices


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Mutation kinds, repeated to weight them: shape-keeping damage reaches the deeper checks.
_KINDS = ["number"] * 2 + ["rename"] * 2 + ["delete"] * 2 + ["duplicate", "add_key"]
_KINDS += ["replace"] * 2 + ["root"]


@st.composite
def _mutated_documents(draw: st.DrawFn, *, oversized: bool) -> Any:
    """A base document damaged by one to three mutations at any depth."""
    doc: Any = draw(st.sampled_from(_BASES))()
    values = _json_values(oversized=oversized)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not isinstance(doc, (dict, list)):
            break
        slots = _slots(doc)
        kind = draw(st.sampled_from(_KINDS))
        if kind == "number":
            # Keep the shape, break the value: reaches the range checks behind the type checks.
            numbers = [(c, k) for c, k in slots if _is_number(c[k])]
            if numbers:
                container, key = draw(st.sampled_from(numbers))
                container[key] = draw(_bad_numbers(oversized=oversized))
        elif kind == "rename":
            # Point a reference (or an id) elsewhere: another name of the document, or nothing.
            strings = [(c, k) for c, k in slots if isinstance(c[k], str)]
            if strings:
                container, key = draw(st.sampled_from(strings))
                container[key] = draw(
                    st.sampled_from(sorted(set(_strings(doc)))) | st.text(max_size=4)
                )
        elif kind == "delete" and slots:
            container, key = draw(st.sampled_from(slots))
            del container[key]
        elif kind == "duplicate":
            lists = [c[k] for c, k in slots if isinstance(c[k], list) and c[k]]
            if lists:
                target = draw(st.sampled_from(lists))
                item = copy.deepcopy(draw(st.sampled_from(target)))
                target.insert(draw(st.integers(0, len(target))), item)
        elif kind == "add_key":
            objects = [doc] if isinstance(doc, dict) else []
            objects += [c[k] for c, k in slots if isinstance(c[k], dict)]
            if objects:
                target = draw(st.sampled_from(objects))
                target[draw(st.sampled_from(_FIELDS) | st.text(max_size=6))] = draw(values)
        elif kind == "replace" and slots:
            container, key = draw(st.sampled_from(slots))
            container[key] = draw(values)
        elif kind == "root":
            doc = draw(values)
    return doc


def _dump(value: Any) -> str:
    """Exact text of a document (NaN-safe, unlike ==, since NaN != NaN)."""
    return json.dumps(value, allow_nan=True)


def _load_checking_the_contract(doc: Any) -> None:
    before = _dump(doc)
    try:
        state_from_document(doc)
    except PlacementError:
        pass
    assert _dump(doc) == before, "state_from_document modified its input document"


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(doc=_mutated_documents(oversized=False))
def test_damaged_document_gives_state_or_placement_error(doc: Any) -> None:
    _load_checking_the_contract(doc)


@settings(_FUZZ, derandomize=True)
@given(doc=_mutated_documents(oversized=True))
@example(
    doc={
        **_minimal_doc(),
        "nodes": [{"id": "a", "location": ["eu"], "capacity": {"disk_bytes": 10**400}}],
    }
)
def test_damaged_document_with_oversized_numbers_gives_state_or_placement_error(doc: Any) -> None:
    _load_checking_the_contract(doc)


@pytest.mark.parametrize("make", _BASES)
def test_loading_does_not_modify_a_valid_document(make: Callable[[], dict[str, Any]]) -> None:
    doc = make()
    before = copy.deepcopy(doc)
    state_from_document(doc)
    assert doc == before


# -- round trip ---------------------------------------------------------------------------------


@st.composite
def _valid_documents(draw: st.DrawFn, *, extra_regions: bool = True) -> dict[str, Any]:
    """A random valid document: replication never exceeds the zones of the allowed regions,
    links (when present) connect every region, pins name listed replicas."""
    resources = draw(st.sampled_from([["disk_bytes"], ["disk_bytes", "iops"], ["iops", "bytes"]]))
    n_regions = draw(st.integers(1, 3))
    regions = [f"r{k}" for k in range(n_regions)]
    zones = {r: draw(st.integers(1, 3)) for r in regions}
    levels = draw(st.sampled_from([["region", "zone"], ["region", "zone", "rack"]]))
    nodes: list[dict[str, Any]] = []
    for r in regions:
        for z in range(zones[r]):
            for k in range(draw(st.integers(1, 2))):
                zone = draw(st.sampled_from([f"z{z}", f"{r}-z{z}"]))  # repeated leaf names too
                location = [r, zone] + ([f"rack{k}"] if len(levels) == 3 else [])
                node: dict[str, Any] = {
                    "id": f"n{len(nodes)}",
                    "location": location,
                    "capacity": {res: draw(st.floats(0, 1e13)) for res in resources},
                }
                if draw(st.booleans()):
                    node["state"] = draw(st.sampled_from(["active", "draining", "failed"]))
                if draw(st.booleans()):
                    node["bandwidth_bps"] = draw(st.floats(1.0, 1e11))
                nodes.append(node)
    # Distinct zone labels per region decide how many replicas fit (max_per_domain 1).
    zones_of = {
        r: len({tuple(n["location"][:2]) for n in nodes if n["location"][0] == r}) for r in regions
    }
    others = [f"x{k}" for k in range(draw(st.integers(0, 2)))] if extra_regions else []
    doc: dict[str, Any] = {
        "format": "placement.state/1",
        "resources": resources,
        "levels": levels,
        "nodes": nodes,
    }
    if draw(st.booleans()):
        doc["size_resource"] = draw(st.sampled_from(resources))
    all_regions = regions + others
    with_links = len(all_regions) > 1 and draw(st.booleans())
    if with_links:
        order = draw(st.permutations(all_regions))
        links = []
        for a, b in zip(order, order[1:], strict=False):
            link: dict[str, Any] = {"a": a, "b": b, "latency_ms": draw(st.floats(0, 300))}
            if draw(st.booleans()):
                link["cost_per_gb"] = draw(st.floats(0, 1))
            if draw(st.booleans()):
                link["bandwidth_bps"] = draw(st.floats(1.0, 1e11))
            links.append(link)
        doc["links"] = draw(st.permutations(links))
        listed = draw(st.lists(st.sampled_from(others), unique=True)) if others else []
    else:
        listed = others
    if listed:
        doc["regions"] = listed
    node_ids_by_region = {r: [n["id"] for n in nodes if n["location"][0] == r] for r in regions}
    shards = []
    for k in range(draw(st.integers(0, 5))):
        allowed = draw(st.none() | st.lists(st.sampled_from(regions), min_size=1, unique=True))
        usable = allowed if allowed is not None else regions
        room = sum(zones_of[r] for r in usable)
        replicas = draw(st.integers(1, min(room, 4)))
        candidates = [i for r in usable for i in node_ids_by_region[r]]
        held = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=replicas))
        shard: dict[str, Any] = {
            "id": f"s{k}",
            "demand": {
                res: draw(st.floats(0, 1e10))
                for res in draw(st.lists(st.sampled_from(resources), unique=True))
            },
            "replicas": replicas,
            "nodes": held,
        }
        if allowed is not None:
            shard["allowed_regions"] = allowed
        if draw(st.booleans()):
            shard["min_available"] = draw(st.integers(1, replicas))
        client_regions = regions + (others if with_links else [])
        if draw(st.booleans()):
            shard["clients"] = draw(
                st.dictionaries(st.sampled_from(client_regions), st.floats(0, 1e3), max_size=3)
            )
        if draw(st.booleans()):
            shard["group"] = draw(st.sampled_from(["g1", "g2"]))
        if len(held) > 0 and draw(st.booleans()):
            shard["pinned"] = draw(st.lists(st.sampled_from(held), unique=True, min_size=1))
        shards.append(shard)
    doc["shards"] = shards
    policy: dict[str, Any] = {}
    if draw(st.booleans()):
        policy["headroom"] = draw(
            st.floats(0.05, 1.0)
            | st.fixed_dictionaries(
                {"default": st.floats(0.05, 1.0), resources[0]: st.floats(0.05, 1.0)}
            )
        )
    if draw(st.booleans()):
        policy["spread_level"] = "zone"
    if draw(st.booleans()):
        policy["latency_target_ms"] = draw(st.floats(1, 100))
        policy["latency_max_ms"] = policy["latency_target_ms"] + draw(st.floats(0, 100))
    if draw(st.booleans()):
        policy["imbalance_warning"] = draw(st.floats(0, 0.3))
        policy["imbalance_critical"] = policy["imbalance_warning"] + draw(st.floats(0, 0.3))
    if draw(st.booleans()):
        policy["max_concurrent_per_node"] = draw(st.integers(1, 50))
    if len(policy) > 0 or draw(st.booleans()):
        doc["policy"] = policy
    return doc


def _round_trip(doc: dict[str, Any]) -> None:
    st_ = state_from_document(doc)
    written = state_to_document(st_)
    json.dumps(written, allow_nan=False)  # the writer emits strict JSON
    again = state_from_document(json.loads(json.dumps(written)))
    assert again.sha256() == st_.sha256()
    assert state_to_document(again) == written


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_valid_documents(extra_regions=False))
def test_round_trip_keeps_the_state(doc: dict[str, Any]) -> None:
    _round_trip(doc)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(doc=_valid_documents(extra_regions=True))
@example(
    doc={
        **_minimal_doc(),
        "regions": ["sa", "ap"],
        "links": [{"a": "eu", "b": "ap", "latency_ms": 5}, {"a": "ap", "b": "sa", "latency_ms": 7}],
    }
)
def test_round_trip_keeps_the_state_with_extra_regions(doc: dict[str, Any]) -> None:
    _round_trip(doc)


def test_round_trip_of_the_full_document() -> None:
    doc = _full_doc()
    del doc["regions"]  # see test_round_trip_keeps_the_state_with_extra_regions
    doc["links"] = [link for link in doc["links"] if "sa" not in (link["a"], link["b"])]
    del doc["shards"][1]["clients"]
    _round_trip(doc)


def test_sha256_ignores_how_policy_numbers_are_spelled() -> None:
    as_int = {**_minimal_doc(), "policy": {"latency_target_ms": 50, "headroom": 1}}
    as_float = {**_minimal_doc(), "policy": {"latency_target_ms": 50.0, "headroom": 1.0}}
    assert state_from_document(as_int).sha256() == state_from_document(as_float).sha256()


def test_sha256_ignores_how_amounts_are_spelled() -> None:
    as_float = _minimal_doc()
    as_int = _minimal_doc()
    as_int["nodes"][0]["capacity"]["disk_bytes"] = 10**12
    as_int["shards"][0]["demand"]["disk_bytes"] = 10**9
    assert state_from_document(as_int).sha256() == state_from_document(as_float).sha256()
