"""The JSON Schema in placement/schema agrees with the reader on valid and invalid documents."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import numpy as np
import pytest

from placement.errors import PlacementError
from placement.io.interchange import state_from_document, state_to_document
from placement.model import Cluster, NodeState, Placement, Policy, Shards, State
from placement.schema import state_schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = state_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _minimal() -> dict[str, Any]:
    return {
        "format": "placement.state/1",
        "resources": ["disk_bytes"],
        "levels": ["region"],
        "nodes": [{"id": "a", "location": ["eu"]}],
        "shards": [],
    }


def _spec_example() -> dict[str, Any]:
    """The example of the interchange spec, completed so that every reference resolves."""
    nodes = [
        {
            "id": nid,
            "location": loc,
            "capacity": {"disk_bytes": 4.0e12, "iops": 20000},
            "state": "active",
            "bandwidth_bps": 1.25e9,
        }
        for nid, loc in [
            ("n1", ["eu-west", "eu-west-a", "r1"]),
            ("n7", ["eu-west", "eu-west-b", "r7"]),
            ("n9", ["eu-central", "eu-central-a", "r9"]),
            ("n10", ["us-east", "us-east-a", "r10"]),
        ]
    ]
    return {
        "format": "placement.state/1",
        "resources": ["disk_bytes", "iops"],
        "size_resource": "disk_bytes",
        "levels": ["region", "zone", "rack"],
        "nodes": nodes,
        "links": [
            {
                "a": "eu-west",
                "b": "us-east",
                "latency_ms": 80,
                "cost_per_gb": 0.02,
                "bandwidth_bps": 1.0e10,
            },
            {"a": "eu-west", "b": "eu-central", "latency_ms": 10},
        ],
        "shards": [
            {
                "id": "s1",
                "demand": {"disk_bytes": 1.2e9, "iops": 30},
                "replicas": 3,
                "min_available": 2,
                "nodes": ["n1", "n7", "n9"],
                "allowed_regions": ["eu-west", "eu-central"],
                "clients": {"eu-west": 120.0, "us-east": 5.0},
                "group": "tenant-a",
                "pinned": ["n1"],
            }
        ],
        "policy": {
            "headroom": 0.85,
            "spread_level": "zone",
            "max_per_domain": 1,
            "min_regions": 1,
            "latency_target_ms": 50,
            "latency_max_ms": 100,
            "imbalance_warning": 0.20,
            "imbalance_critical": 0.35,
            "max_concurrent_per_node": 10,
        },
    }


def _every_optional_field() -> dict[str, Any]:
    """Every field the reader accepts, including the library's extensions and "x-" keys."""
    doc = _spec_example()
    doc["regions"] = ["ap-south"]
    doc["x-source"] = {"tool": "inventory", "version": 3}
    doc["nodes"][1]["state"] = "draining"
    doc["nodes"][3]["state"] = "failed"
    doc["nodes"][0]["x-serial"] = "SN-1"
    doc["links"][1].update({"cost_per_gb": None, "bandwidth_bps": None, "x-carrier": "dark fiber"})
    doc["shards"].append(
        {
            "id": "s2",
            "demand": {"disk_bytes": 0},
            "replicas": 1,
            "min_available": None,
            "nodes": [],
            "allowed_regions": None,
            "clients": None,
            "group": None,
            "pinned": None,
            "x-note": "new",
        }
    )
    doc["policy"].update(
        headroom={"default": 0.85, "iops": 0.7},
        imbalance_alert=0.25,
        coverage_target=0.8,
        coverage_alert=0.75,
        cross_region_alert_bytes=1.0e11,
    )
    return doc


def _built_state() -> State:
    cluster = Cluster.build(
        node_ids=["a", "b", "c", "d"],
        resources=["disk_bytes", "iops"],
        capacity=[[4e12, 2e4], [4e12, 2e4], [8e12, 4e4], [8e12, 4e4]],
        levels=["region", "zone"],
        location=[["eu", "z1"], ["eu", "z2"], ["us", "z1"], ["us", "z2"]],
        state=["active", "active", "draining", "active"],
        bandwidth_bps=[1.25e9, None, 1.25e9, 2.5e9],
        links=[{"a": "eu", "b": "us", "latency_ms": 80.0, "cost_per_gb": 0.02}],
    )
    shards = Shards.build(
        cluster,
        ids=["s1", "s2", "s3"],
        demand=[[1e9, 30], [2e9, 0], [5e8, 10]],
        replicas=[3, 2, 1],
        allowed_regions=[None, ["us"], ["eu"]],
        clients=np.array([[10.0, 1.0], [0.0, 0.0], [3.0, 0.0]]),
        group=["t1", None, "t1"],
    )
    placement = Placement.build(
        [[0, 1, 2], [3], []],
        n_nodes=4,
        width=3,
        pinned=[[True, False, False], [False, False, False], [False, False, False]],
    )
    policy = Policy(headroom=0.9, headroom_by_resource={"iops": 0.8}, latency_target_ms=50.0)
    return State(cluster, shards, placement, policy)


_VALID = {
    "minimal": _minimal,
    "spec example": _spec_example,
    "every optional field": _every_optional_field,
    "written by state_to_document": lambda: state_to_document(_built_state()),
}


@pytest.mark.parametrize("make", list(_VALID.values()), ids=list(_VALID))
def test_valid_documents_match_the_schema(
    validator: jsonschema.Draft202012Validator, make: Any
) -> None:
    doc = make()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    state_from_document(doc)  # the reader accepts them too


def test_the_built_state_is_written_with_its_extensions() -> None:
    doc = state_to_document(_built_state())
    assert doc["policy"]["headroom"] == {"default": 0.9, "iops": 0.8}
    assert NodeState.DRAINING.name.lower() in {n["state"] for n in doc["nodes"]}


def _break(path: list[Any], value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    doc = _every_optional_field()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_INVALID = {
    "wrong format tag": _break(["format"], "placement.state/2"),
    "format of a plan": _break(["format"], "placement.plan/1"),
    "missing format": _break(["format"], delete=True),
    "missing resources": _break(["resources"], delete=True),
    "missing levels": _break(["levels"], delete=True),
    "missing nodes": _break(["nodes"], delete=True),
    "missing shards": _break(["shards"], delete=True),
    "missing node location": _break(["nodes", 0, "location"], delete=True),
    "missing shard replicas": _break(["shards", 0, "replicas"], delete=True),
    "missing link latency": _break(["links", 0, "latency_ms"], delete=True),
    "unknown top-level field": _break(["region"], ["eu"]),
    "unknown node field": _break(["nodes", 0, "capacities"], {}),
    "unknown shard field": _break(["shards", 0, "allowed_region"], ["eu-west"]),
    "unknown link field": _break(["links", 0, "latency"], 5),
    "unknown policy field": _break(["policy", "max_per_zone"], 1),
    "bad node state": _break(["nodes", 0, "state"], "dead"),
    "negative capacity": _break(["nodes", 0, "capacity", "iops"], -1),
    "negative demand": _break(["shards", 0, "demand", "iops"], -1),
    "replicas 0": _break(["shards", 0, "replicas"], 0),
    "replicas as text": _break(["shards", 0, "replicas"], "3"),
    "replica listed twice": _break(["shards", 0, "nodes"], ["n1", "n1"]),
    "empty allowed_regions": _break(["shards", 0, "allowed_regions"], []),
    "headroom 0": _break(["policy", "headroom"], 0),
    "headroom 1.5": _break(["policy", "headroom"], 1.5),
    "headroom true": _break(["policy", "headroom"], True),
    "per-resource headroom 1.2": _break(["policy", "headroom", "iops"], 1.2),
    "max_per_domain 0": _break(["policy", "max_per_domain"], 0),
    "coverage_target 80": _break(["policy", "coverage_target"], 80),
    "link bandwidth 0": _break(["links", 0, "bandwidth_bps"], 0),
    "link latency null": _break(["links", 0, "latency_ms"], None),
    "empty resources": _break(["resources"], []),
    "not an object": [],  # type: ignore[dict-item]
}


@pytest.mark.parametrize("doc", list(_INVALID.values()), ids=list(_INVALID))
def test_invalid_documents_are_rejected_by_the_schema(
    validator: jsonschema.Draft202012Validator, doc: Any
) -> None:
    assert not validator.is_valid(doc)


# What the schema rejects the reader must reject too, except where the reader is knowingly
# more lenient (documented in docs/state-format.md) or has a known bug.
_READER_LENIENT: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(reason=_READER_LENIENT[name], strict=True))
        if name in _READER_LENIENT
        else name
        for name in _INVALID
    ],
)
def test_what_the_schema_rejects_the_reader_rejects(name: str) -> None:
    with pytest.raises(PlacementError):
        state_from_document(copy.deepcopy(_INVALID[name]))


def test_extension_keys_are_allowed_everywhere(validator: jsonschema.Draft202012Validator) -> None:
    doc = _every_optional_field()
    doc["policy"]["x-approved-by"] = "oncall"
    assert validator.is_valid(doc)


def test_schema_is_a_fresh_copy_each_call() -> None:
    first = state_schema()
    first["required"].append("nothing")
    assert "nothing" not in state_schema()["required"]
