"""Every bad state document raises the right error class with a message that helps.

Each test breaks one thing in an otherwise valid document and checks three promises of
`placement.errors`: the exception class, that it is also a ``ValueError``, and that the
message names the offending ids and says how to fix the input.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

import pytest

from placement.errors import (
    DuplicateIdError,
    InputError,
    InvalidValueError,
    PlacementError,
    SchemaError,
    TopologyError,
    UnknownIdError,
)
from placement.io.interchange import load_state, state_from_document

# -- a small valid document ---------------------------------------------------------------


def _nodes(zones_per_region: int = 3) -> list[dict[str, Any]]:
    """Six nodes: regions eu and us, three nodes each, spread over *zones_per_region* zones."""
    return [
        {
            "id": f"{region}{k}",
            "location": [region, f"{region}-{1 + (k - 1) % zones_per_region}", f"rack{k}"],
            "capacity": {"disk_bytes": 4.0e12, "iops": 20000},
        }
        for region in ("eu", "us")
        for k in (1, 2, 3)
    ]


def _doc(**overrides: Any) -> dict[str, Any]:
    """A fresh valid state document; keyword arguments replace top-level fields."""
    doc: dict[str, Any] = {
        "format": "placement.state/1",
        "resources": ["disk_bytes", "iops"],
        "size_resource": "disk_bytes",
        "levels": ["region", "zone", "rack"],
        "nodes": _nodes(),
        "links": [{"a": "eu", "b": "us", "latency_ms": 80, "cost_per_gb": 0.02}],
        "shards": [
            {
                "id": "s1",
                "demand": {"disk_bytes": 1.0e9, "iops": 30},
                "replicas": 3,
                "nodes": ["eu1", "eu2", "us1"],
            },
            {"id": "s2", "demand": {"disk_bytes": 2.0e9}, "replicas": 3, "nodes": ["eu3", "us2"]},
            {
                "id": "s3",
                "demand": {"disk_bytes": 5.0e8},
                "replicas": 2,
                "nodes": ["us3"],
                "allowed_regions": ["us"],
            },
        ],
        "policy": {"headroom": 0.85, "spread_level": "zone", "max_per_domain": 1, "min_regions": 1},
    }
    doc.update(copy.deepcopy(overrides))
    return doc


def _node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == node_id)


def _shard(doc: dict[str, Any], shard_id: str) -> dict[str, Any]:
    return next(s for s in doc["shards"] if s["id"] == shard_id)


def _fails(doc: Any, cls: type[InputError], *names: str, fix: str) -> str:
    """Load *doc*; check the class, the ValueError base, the named ids and the fix hint.

    *fix* is a regular expression (case-insensitive) for the part of the message that tells
    the user what to do.
    """
    with pytest.raises(cls) as info:
        state_from_document(doc)
    return _check(info.value, cls, *names, fix=fix)


def _check(exc: BaseException, cls: type[InputError], *names: str, fix: str) -> str:
    assert type(exc) is cls, f"expected {cls.__name__}, got {type(exc).__name__}: {exc}"
    assert isinstance(exc, ValueError) and isinstance(exc, PlacementError)
    message = str(exc)
    for name in names:
        assert name in message, f"message does not name {name!r}: {message}"
    assert re.search(fix, message, flags=re.IGNORECASE), (
        f"message gives no fix ({fix!r}): {message}"
    )
    return message


#: The class the reader raises for an unknown field. errors.py describes field-shape problems as
#: SchemaError; see test_unknown_field_is_a_schema_error (xfail) before changing it.
_UNKNOWN_FIELD_ERROR: type[InputError] = SchemaError


def test_the_helper_document_is_valid() -> None:
    st = state_from_document(_doc())
    assert st.cluster.n_nodes == 6 and st.shards.n_shards == 3
    assert st.cluster.regions == ("eu", "us")


# -- the document as a whole ----------------------------------------------------------------


@pytest.mark.parametrize("doc", [None, [], "placement.state/1", 3, 2.5, True])
def test_not_an_object(doc: Any) -> None:
    _fails(doc, SchemaError, type(doc).__name__, fix=r"must be an object")


@pytest.mark.parametrize("tag", ["placement.state/2", "placement.plan/1", None, 1])
def test_wrong_format_tag(tag: Any) -> None:
    _fails(_doc(format=tag), SchemaError, repr(tag), fix=r'"format": "placement\.state/1"')


def test_missing_format_tag() -> None:
    doc = _doc()
    del doc["format"]
    _fails(doc, SchemaError, "None", fix=r'"format": "placement\.state/1"')


@pytest.mark.parametrize("field", ["resources", "levels", "nodes", "shards"])
def test_missing_required_field(field: str) -> None:
    doc = _doc()
    del doc[field]
    _fails(doc, SchemaError, repr(field), fix=r"required")


def test_unknown_top_level_field() -> None:
    msg = _fails(_doc(region=["eu"]), _UNKNOWN_FIELD_ERROR, "'region'", fix=r"fix the spelling")
    assert "regions" in msg and "x-" in msg


def test_unknown_field_is_a_schema_error() -> None:
    doc = _doc()
    _shard(doc, "s3")["allowed_region"] = ["us"]
    _fails(doc, SchemaError, "'s3'", "'allowed_region'", fix=r"fix the spelling")


def test_extension_fields_are_accepted_outside_the_policy() -> None:
    doc = _doc(**{"x-origin": "inventory"})
    _node(doc, "eu1")["x-serial"] = "A1"
    _shard(doc, "s1")["x-owner"] = {"team": "storage"}
    doc["links"][0]["x-carrier"] = "fiber"
    state_from_document(doc)


def test_extension_fields_are_accepted_in_the_policy() -> None:
    doc = _doc()
    doc["policy"]["x-approved-by"] = "oncall"
    state_from_document(doc)


# -- nodes ----------------------------------------------------------------------------------


def test_duplicate_node_id() -> None:
    doc = _doc()
    doc["nodes"].append({**copy.deepcopy(_node(doc, "eu2")), "location": ["us", "us-9", "r9"]})
    _fails(doc, DuplicateIdError, "'eu2'", fix=r"give each node its own id")


def test_node_with_unknown_field() -> None:
    doc = _doc()
    _node(doc, "us1")["capacities"] = {"disk_bytes": 1}
    _fails(doc, _UNKNOWN_FIELD_ERROR, "'us1'", "'capacities'", fix=r"fix the spelling")


@pytest.mark.parametrize("value", [-1.0, -5, math.nan, math.inf, -math.inf])
def test_bad_capacity(value: float) -> None:
    doc = _doc()
    _node(doc, "eu2")["capacity"]["iops"] = value
    _fails(doc, InvalidValueError, "eu2:iops", fix=r"finite and >= 0.*fix these node capacities")


def test_capacity_for_unknown_resource() -> None:
    doc = _doc()
    _node(doc, "us3")["capacity"]["cpu_cores"] = 16
    _fails(doc, UnknownIdError, "'us3'", "'cpu_cores'", fix=r"add it to `resources` or remove it")


def test_capacity_not_a_number() -> None:
    doc = _doc()
    _node(doc, "us3")["capacity"]["iops"] = "20000"
    _fails(doc, SchemaError, "'us3'", "'iops'", fix=r"must be a number")


@pytest.mark.parametrize("state", ["dead", "up", ""])
def test_bad_node_state(state: str) -> None:
    doc = _doc()
    _node(doc, "eu1")["state"] = state
    _fails(
        doc,
        InvalidValueError,
        "'eu1'",
        repr(state),
        fix=r"expected one of 'active', 'draining', 'failed'",
    )


def test_node_state_not_a_string() -> None:
    doc = _doc()
    _node(doc, "eu1")["state"] = 2
    _fails(doc, SchemaError, "'eu1'", fix=r"must be a string")


def test_location_with_wrong_depth() -> None:
    doc = _doc()
    _node(doc, "us2")["location"] = ["us", "us-2"]
    _fails(doc, SchemaError, "'us2'", "'rack'", fix=r"one domain per level")


@pytest.mark.parametrize("value", [0, -1.0e9, math.inf])
def test_bad_node_bandwidth(value: float) -> None:
    doc = _doc()
    _node(doc, "us2")["bandwidth_bps"] = value
    _fails(doc, InvalidValueError, "'us2'", fix=r"finite number > 0")


def test_nan_node_bandwidth() -> None:
    doc = _doc()
    _node(doc, "us2")["bandwidth_bps"] = math.nan
    _fails(doc, InvalidValueError, "'us2'", fix=r"finite number > 0")


# -- resources and levels -------------------------------------------------------------------


def test_duplicate_resource() -> None:
    _fails(
        _doc(resources=["disk_bytes", "iops", "iops"]),
        DuplicateIdError,
        "'iops'",
        fix=r"its own id",
    )


def test_unknown_size_resource() -> None:
    _fails(
        _doc(size_resource="bytes"),
        UnknownIdError,
        "'bytes'",
        "disk_bytes",
        fix=r"one of the resources",
    )


def test_unknown_spread_level() -> None:
    doc = _doc()
    doc["policy"]["spread_level"] = "datacenter"
    _fails(doc, UnknownIdError, "'datacenter'", "'zone'", fix=r"use one of those names")


# -- shards ---------------------------------------------------------------------------------


def test_duplicate_shard_id() -> None:
    doc = _doc()
    doc["shards"].append({"id": "s2", "demand": {"disk_bytes": 1}, "replicas": 1})
    _fails(doc, DuplicateIdError, "'s2'", fix=r"give each shard its own id")


def test_unknown_node_in_shard() -> None:
    doc = _doc()
    _shard(doc, "s1")["nodes"] = ["eu1", "eu2", "eu9"]
    _fails(doc, UnknownIdError, "s1", "eu9", fix=r"fix the shard's 'nodes' or add the node")


def test_replica_listed_twice_on_one_node() -> None:
    doc = _doc()
    _shard(doc, "s1")["nodes"] = ["eu1", "us1", "eu1"]
    _fails(doc, InvalidValueError, "'s1'", fix=r"remove the repeated node")


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf])
def test_bad_demand(value: float) -> None:
    doc = _doc()
    _shard(doc, "s2")["demand"]["iops"] = value
    _fails(doc, InvalidValueError, "'s2'", "iops", fix=r"finite and >= 0.*fix these demands")


def test_demand_for_unknown_resource() -> None:
    doc = _doc()
    _shard(doc, "s2")["demand"]["network_bps"] = 1.0e6
    _fails(doc, UnknownIdError, "s2:network_bps", fix=r"add them to `resources`.*or remove them")


def test_more_listed_nodes_than_replicas() -> None:
    doc = _doc()
    _shard(doc, "s3")["nodes"] = ["us1", "us2", "us3"]
    _fails(doc, InvalidValueError, "'s3'", fix=r"raise `replicas` or remove the extra nodes")


def test_min_available_above_replicas() -> None:
    doc = _doc()
    _shard(doc, "s3")["min_available"] = 3
    _fails(doc, InvalidValueError, "'s3'", fix=r"lower min_available or raise replicas")


@pytest.mark.parametrize("replicas", [0, -3])
def test_replicas_below_one(replicas: int) -> None:
    doc = _doc()
    _shard(doc, "s2")["replicas"] = replicas
    _fails(doc, InvalidValueError, "'s2'", fix=r"must be >= 1")


@pytest.mark.parametrize("replicas", [3.0, "3", None, True])
def test_replicas_not_a_whole_number(replicas: Any) -> None:
    doc = _doc()
    _shard(doc, "s2")["replicas"] = replicas
    _fails(doc, SchemaError, "'s2'", fix=r"whole number")


def test_pinned_node_not_among_the_shards_nodes() -> None:
    doc = _doc()
    _shard(doc, "s2")["pinned"] = ["eu3", "eu1"]
    _fails(
        doc, InvalidValueError, "'s2'", "'eu1'", fix=r"a pin must name one of the shard's 'nodes'"
    )


def test_unknown_region_in_allowed_regions() -> None:
    doc = _doc()
    _shard(doc, "s3")["allowed_regions"] = ["us", "ap-south"]
    _fails(doc, UnknownIdError, "'s3'", "'ap-south'", fix=r"fix the allowed_regions")


def test_empty_allowed_regions() -> None:
    doc = _doc()
    _shard(doc, "s3")["allowed_regions"] = []
    _fails(doc, InvalidValueError, "'s3'", fix=r"list at least one region or omit allowed_regions")


def test_unknown_region_in_clients() -> None:
    doc = _doc()
    _shard(doc, "s1")["clients"] = {"eu": 10.0, "mars": 1.0}
    _fails(doc, UnknownIdError, "s1:mars", fix=r"fix the region names")


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf])
def test_bad_client_weight(weight: float) -> None:
    doc = _doc()
    _shard(doc, "s1")["clients"] = {"eu": weight}
    _fails(doc, InvalidValueError, "'s1'", fix=r"finite and >= 0")


def test_shard_with_typo_field() -> None:
    doc = _doc()
    _shard(doc, "s3")["allowed_region"] = ["us"]
    msg = _fails(doc, _UNKNOWN_FIELD_ERROR, "'s3'", "'allowed_region'", fix=r"fix the spelling")
    assert "allowed_regions" in msg


# -- topology -------------------------------------------------------------------------------


def test_replication_above_the_failure_domains() -> None:
    # Two zones per region, three replicas, at most one per zone: cannot be placed in eu.
    doc = _doc(nodes=_nodes(zones_per_region=2))
    _shard(doc, "s1").update(allowed_regions=["eu"], nodes=["eu1", "eu2"])
    msg = _fails(
        doc, TopologyError, "'s1'", "'zone'", fix=r"lower replicas, raise policy\.max_per_domain"
    )
    assert "3 replicas" in msg and "2 slots" in msg


def test_replication_above_the_failure_domains_of_the_whole_cluster() -> None:
    doc = _doc(nodes=_nodes(zones_per_region=1))
    _fails(doc, TopologyError, "'s1'", "'s2'", fix=r"choose a finer spread_level")


def test_min_regions_above_the_allowed_regions() -> None:
    doc = _doc()
    doc["policy"]["min_regions"] = 2
    msg = _fails(doc, TopologyError, "'s3'", fix=r"lower min_regions or widen allowed_regions")
    assert "s1" not in msg and "s2" not in msg


def test_min_regions_above_the_regions_with_nodes() -> None:
    doc = _doc()
    doc["policy"]["min_regions"] = 3
    _fails(doc, TopologyError, "'s1'", "'s2'", fix=r"lower min_regions")


def test_region_graph_leaves_a_region_with_nodes_disconnected() -> None:
    doc = _doc(links=[{"a": "eu", "b": "ap", "latency_ms": 150}])
    _fails(doc, TopologyError, "{eu}", "{us}", fix=r"add links between these groups")


def test_region_graph_disconnects_a_client_region() -> None:
    doc = _doc(regions=["ap"])
    _shard(doc, "s1")["clients"] = {"ap": 5.0}
    _fails(doc, TopologyError, "{ap}", fix=r"add links between these groups")


def test_link_from_a_region_to_itself() -> None:
    doc = _doc()
    doc["links"].append({"a": "us", "b": "us", "latency_ms": 1})
    _fails(doc, InvalidValueError, "links[1]", "'us'", fix=r"drop it")


def test_duplicate_link() -> None:
    doc = _doc()
    doc["links"].append({"a": "us", "b": "eu", "latency_ms": 70})
    _fails(doc, DuplicateIdError, "links[1]", "'us'-'eu'", fix=r"give each pair once")


def test_link_without_latency() -> None:
    doc = _doc()
    del doc["links"][0]["latency_ms"]
    _fails(doc, SchemaError, "links[0]", "latency_ms", fix=r"each link needs")


def test_link_with_null_latency() -> None:
    doc = _doc()
    doc["links"][0]["latency_ms"] = None
    _fails(doc, SchemaError, "links[0]", "latency_ms", fix=r"each link needs")


@pytest.mark.parametrize("value", [-1, math.nan, math.inf])
def test_bad_link_latency(value: float) -> None:
    doc = _doc()
    doc["links"][0]["latency_ms"] = value
    _fails(doc, InvalidValueError, "links[0]", "latency_ms", fix=r"finite number >= 0")


# -- policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headroom", [0, 1.5, -0.2, math.nan])
def test_bad_headroom(headroom: float) -> None:
    doc = _doc()
    doc["policy"]["headroom"] = headroom
    _fails(doc, InvalidValueError, "policy.headroom", fix=r"must be in \(0, 1\]")


def test_bad_per_resource_headroom() -> None:
    doc = _doc()
    doc["policy"]["headroom"] = {"default": 0.8, "iops": 1.2}
    _fails(doc, InvalidValueError, "policy.headroom['iops']", fix=r"must be in \(0, 1\]")


def test_per_resource_headroom_for_unknown_resource() -> None:
    doc = _doc()
    doc["policy"]["headroom"] = {"default": 0.8, "cpu": 0.5}
    _fails(doc, UnknownIdError, "'cpu'", "disk_bytes", fix=r"not a cluster resource")


def test_boolean_headroom() -> None:
    doc = _doc()
    doc["policy"]["headroom"] = True
    _fails(doc, InvalidValueError, "policy.headroom", fix=r"must be in \(0, 1\]")


def test_critical_below_warning() -> None:
    doc = _doc()
    doc["policy"].update(imbalance_warning=0.3, imbalance_critical=0.2)
    _fails(
        doc,
        InvalidValueError,
        "imbalance_critical",
        "imbalance_warning",
        fix=r"critical must be the higher",
    )


def test_latency_max_below_target() -> None:
    doc = _doc()
    doc["policy"].update(latency_target_ms=50, latency_max_ms=20)
    _fails(
        doc,
        InvalidValueError,
        "latency_max_ms",
        "latency_target_ms",
        fix=r"maximum must be the larger",
    )


@pytest.mark.parametrize("field", ["max_per_domain", "min_regions", "max_concurrent_per_node"])
@pytest.mark.parametrize("value", [0, 1.5, "2"])
def test_bad_policy_count(field: str, value: Any) -> None:
    doc = _doc()
    doc["policy"][field] = value
    _fails(doc, InvalidValueError, f"policy.{field}", fix=r"whole number >= 1")


@pytest.mark.parametrize(
    "field", ["imbalance_alert", "cross_region_alert_bytes", "latency_target_ms"]
)
def test_negative_policy_threshold(field: str) -> None:
    doc = _doc()
    doc["policy"][field] = -1
    _fails(doc, InvalidValueError, f"policy.{field}", fix=r"finite number >= 0")


def test_coverage_above_one() -> None:
    doc = _doc()
    doc["policy"]["coverage_target"] = 80
    _fails(doc, InvalidValueError, "coverage_target", fix=r"shares in \[0, 1\]")


def test_policy_with_typo_field() -> None:
    doc = _doc()
    doc["policy"]["max_per_zone"] = 1
    msg = _fails(doc, _UNKNOWN_FIELD_ERROR, "'max_per_zone'", fix=r"known fields")
    assert "max_per_domain" in msg


@pytest.mark.parametrize("value", [5, "ab"])
def test_policy_headroom_by_resource_is_not_a_document_field(value: Any) -> None:
    doc = _doc()
    doc["policy"]["headroom_by_resource"] = value
    _fails(doc, _UNKNOWN_FIELD_ERROR, "'headroom_by_resource'", fix=r"known fields")


# -- oversized numbers (valid JSON, beyond float64 / int64) ------------------------------------

_HUGE = 10**400  # json.loads("1" + "0" * 400) gives this int


def _bigint_cases() -> list[Any]:
    def cap(d: dict[str, Any]) -> None:
        _node(d, "eu1")["capacity"]["iops"] = _HUGE

    def bandwidth(d: dict[str, Any]) -> None:
        _node(d, "eu1")["bandwidth_bps"] = _HUGE

    def demand(d: dict[str, Any]) -> None:
        _shard(d, "s1")["demand"]["iops"] = _HUGE

    def replicas(d: dict[str, Any]) -> None:
        _shard(d, "s1")["replicas"] = 2**63

    def min_available(d: dict[str, Any]) -> None:
        _shard(d, "s1")["min_available"] = 2**63

    def clients(d: dict[str, Any]) -> None:
        _shard(d, "s1")["clients"] = {"eu": _HUGE}

    def latency(d: dict[str, Any]) -> None:
        d["links"][0]["latency_ms"] = _HUGE

    def policy_threshold(d: dict[str, Any]) -> None:
        d["policy"]["imbalance_warning"] = _HUGE

    def policy_count(d: dict[str, Any]) -> None:
        d["policy"]["max_per_domain"] = 2**64

    cases = {
        "capacity 1e400 -> OverflowError (np array assignment)": cap,
        "node bandwidth_bps 1e400 -> OverflowError (float())": bandwidth,
        "demand 1e400 -> OverflowError (np array assignment)": demand,
        "replicas 2**63 -> OverflowError (int64 array assignment)": replicas,
        "min_available 2**63 -> OverflowError (int64 array assignment)": min_available,
        "client weight 1e400 -> ValueError from scipy.sparse (object dtype)": clients,
        "link latency_ms 1e400 -> OverflowError (in _non_negative)": latency,
        "policy imbalance_warning 1e400 -> OverflowError (math.isfinite)": policy_threshold,
        "policy max_per_domain 2**64 -> OverflowError (np.minimum)": policy_count,
    }
    return [pytest.param(f, id=name.split(" ->")[0]) for name, f in cases.items()]


@pytest.mark.parametrize("mutate", _bigint_cases())
def test_oversized_integer(mutate: Any) -> None:
    doc = _doc()
    mutate(doc)
    try:
        state_from_document(doc)
    except InputError as exc:
        assert isinstance(exc, (InvalidValueError, SchemaError)), exc
        return
    pytest.fail("an oversized number was accepted")


# -- files ----------------------------------------------------------------------------------


def test_load_state_reads_a_valid_file(tmp_path: Any) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_doc()), encoding="utf-8")
    assert load_state(path).shards.n_shards == 3


def test_load_state_invalid_json(tmp_path: Any) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"format": "placement.state/1",\n "nodes": [,]}', encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load_state(path)
    _check(info.value, SchemaError, str(path), "line 2", fix=r"not valid JSON")


def test_load_state_missing_file(tmp_path: Any) -> None:
    path = tmp_path / "nowhere" / "state.json"
    with pytest.raises(InputError) as info:
        load_state(path)
    _check(info.value, InputError, str(path), fix=r"does not exist")


def test_load_state_not_utf8(tmp_path: Any) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"format": "placement.state/1", "x-site": "Z\xfcrich"}')
    with pytest.raises(InputError) as info:
        load_state(path)
    _check(info.value, InputError, str(path), fix=r"cannot read")


def test_load_state_reports_document_errors(tmp_path: Any) -> None:
    doc = _doc()
    _shard(doc, "s1")["nodes"] = ["eu1", "ghost"]
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(UnknownIdError, match="ghost"):
        load_state(path)
