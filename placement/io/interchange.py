"""The JSON state document of the interchange spec (``placement.state/1``), both ways.

Reading is the library's edge: documents come from other programs and people, so every
field is type-checked and every problem becomes an :class:`~placement.errors.InputError`
naming the offending ids. The reader makes one pass over the shard records into flat
lists, then hands arrays to the model builders.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from placement.errors import (
    InputError,
    InvalidValueError,
    SchemaError,
    UnknownIdError,
    format_ids,
)
from placement.model import Cluster, NodeState, Placement, Policy, Shards, State

__all__ = ["STATE_FORMAT", "dump_state", "load_state", "state_from_document", "state_to_document"]

STATE_FORMAT = "placement.state/1"


def load_state(path: str | os.PathLike[str]) -> State:
    """Read a state document from a JSON file.

    Raises
    ------
    InputError
        The file is missing, not JSON, or not a valid state document.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"State file {os.fspath(path)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read state file {os.fspath(path)!r}: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"State file {os.fspath(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}."
        ) from None
    return state_from_document(doc)


def dump_state(state: State, path: str | os.PathLike[str], *, indent: int | None = None) -> None:
    """Write *state* as a JSON state document."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(state_to_document(state), f, indent=indent)
        f.write("\n")


# -- reading --------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    """A JSON number that fits a float64 (huge integers do not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    if isinstance(x, int) and abs(x) >= 2**1023:
        return False
    return True


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SchemaError(f"{what} must be a list of non-empty strings, got {value!r:.80}.")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"{what} must be an object, got {type(value).__name__}.")
    return value


def _record_id(record: Any, kind: str, k: int) -> str:
    if not isinstance(record, Mapping):
        raise SchemaError(f"{kind}[{k}] must be an object, got {type(record).__name__}.")
    rid = record.get("id")
    if not isinstance(rid, str) or not rid:
        raise SchemaError(f"{kind}[{k}] needs an 'id' that is a non-empty string, got {rid!r}.")
    return rid


def state_from_document(doc: Any) -> State:
    """Build a :class:`~placement.model.State` from a parsed state document.

    Examples
    --------
    >>> doc = {"format": "placement.state/1", "resources": ["disk_bytes"],
    ...   "levels": ["region", "zone"],
    ...   "nodes": [{"id": f"n{i}", "location": ["eu", f"z{i}"],
    ...              "capacity": {"disk_bytes": 1e12}} for i in range(3)],
    ...   "shards": [{"id": "s1", "demand": {"disk_bytes": 1e9}, "replicas": 3,
    ...               "nodes": ["n0", "n1"]}]}
    >>> st = state_from_document(doc)
    >>> st.placement.count().tolist(), st.shards.min_available.tolist()
    ([2], [2])
    >>> state_from_document({**doc, "format": "placement.state/2"})
    Traceback (most recent call last):
    ...
    placement.errors.SchemaError: Expected "format": "placement.state/1", got 'placement.state/2'. Is this a state document of another version?

    Raises
    ------
    SchemaError, DuplicateIdError, UnknownIdError, InvalidValueError, TopologyError
    """
    doc = _object(doc, "The state document")
    fmt = doc.get("format")
    if fmt != STATE_FORMAT:
        raise SchemaError(
            f'Expected "format": "{STATE_FORMAT}", got {fmt!r}. Is this a state document of '
            "another version?"
        )
    _reject_unknown_keys(doc, _TOP_KEYS, "The state document")
    for key in ("resources", "levels", "nodes", "shards"):
        if key not in doc:
            raise SchemaError(f"The state document lacks the required field {key!r}.")
    resources = _str_list(doc["resources"], "resources")
    levels = _str_list(doc["levels"], "levels")
    size_resource = doc.get("size_resource")
    if size_resource is not None and not isinstance(size_resource, str):
        raise SchemaError(f"size_resource must be a string, got {size_resource!r}.")
    cluster = _read_cluster(doc, resources, levels, size_resource)
    policy = Policy.from_mapping(
        _object(doc["policy"], "policy") if doc.get("policy") is not None else None
    )
    shards, placement = _read_shards(doc["shards"], cluster)
    return State(cluster, shards, placement, policy)


def _read_cluster(
    doc: Mapping[str, Any], resources: list[str], levels: list[str], size_resource: str | None
) -> Cluster:
    records = doc["nodes"]
    if not isinstance(records, list):
        raise SchemaError("nodes must be a list of node objects.")
    res_index = {r: j for j, r in enumerate(resources)}
    ids: list[str] = []
    location: list[list[str]] = []
    capacity = np.zeros((len(records), len(resources)))
    states: list[int] = []
    bandwidth: list[float] = []
    for k, rec in enumerate(records):
        nid = _record_id(rec, "nodes", k)
        _reject_unknown_keys(rec, _NODE_KEYS, f"Node {nid!r}")
        ids.append(nid)
        loc = rec.get("location")
        if not isinstance(loc, list) or not all(isinstance(x, str) and x for x in loc):
            raise SchemaError(
                f"Node {nid!r} needs a 'location' list of domain names, one per level {levels}."
            )
        location.append(loc)
        cap = _object(rec.get("capacity", {}), f"Node {nid!r} capacity")
        for name, value in cap.items():
            j = res_index.get(name)
            if j is None:
                raise UnknownIdError(
                    f"Node {nid!r} has capacity for {name!r}, which is not in resources {resources}. "
                    "Add it to `resources` or remove it from the node."
                )
            if not _is_number(value):
                raise SchemaError(
                    f"Node {nid!r} capacity {name!r} must be a number, got {value!r}."
                )
            capacity[k, j] = value
        state = rec.get("state", "active")
        if not isinstance(state, str):
            raise SchemaError(f"Node {nid!r} state must be a string, got {state!r}.")
        states.append(NodeState.parse(state, node_id=nid))
        bw = rec.get("bandwidth_bps")
        if bw is not None and not _is_number(bw):
            raise SchemaError(f"Node {nid!r} bandwidth_bps must be a number, got {bw!r}.")
        if bw is not None and math.isnan(bw):
            raise InvalidValueError(
                f"Node {nid!r} has bandwidth_bps NaN; give a finite number > 0, or omit it when unknown."
            )
        bandwidth.append(math.nan if bw is None else float(bw))
    links = doc.get("links")
    if links is not None and not isinstance(links, list):
        raise SchemaError("links must be a list of link objects.")
    for k, link in enumerate(links or ()):
        if isinstance(link, Mapping):
            _reject_unknown_keys(link, _LINK_KEYS, f"links[{k}]")
            for key in ("a", "b"):
                if not isinstance(link.get(key), str):
                    raise SchemaError(f"links[{k}].{key} must be a region name (string).")
            for key in ("latency_ms", "cost_per_gb", "bandwidth_bps"):
                if key in link and link[key] is not None and not _is_number(link[key]):
                    raise SchemaError(f"links[{k}].{key} must be a number, got {link[key]!r}.")
    regions = _str_list(doc.get("regions", []), "regions")
    return Cluster.build(
        regions=regions,
        node_ids=ids,
        resources=resources,
        capacity=capacity,
        levels=levels,
        location=location,
        size_resource=size_resource,
        state=states,
        bandwidth_bps=bandwidth,
        links=links,
    )


def _read_shards(records: Any, cluster: Cluster) -> tuple[Shards, Placement]:
    if not isinstance(records, list):
        raise SchemaError("shards must be a list of shard objects.")
    n = len(records)
    res_index = {r: j for j, r in enumerate(cluster.resources)}
    node_index = cluster.node_index()
    region_index = {r: j for j, r in enumerate(cluster.regions)}
    ids: list[str] = []
    demand = np.zeros((n, len(res_index)))
    replicas = np.zeros(n, dtype=np.int64)
    min_available = np.zeros(n, dtype=np.int64)
    has_min = np.zeros(n, dtype=bool)
    allowed: list[list[str] | None] = []
    groups: list[str | None] = []
    rows: list[list[int]] = []
    pinned_rows: list[list[bool]] = []
    c_rows: list[int] = []
    c_cols: list[int] = []
    c_vals: list[float] = []
    unknown_nodes: list[str] = []
    unknown_resources: list[str] = []
    unknown_clients: list[str] = []

    for k, rec in enumerate(records):
        sid = _record_id(rec, "shards", k)
        if rec.keys() - _SHARD_KEYS:
            _reject_unknown_keys(rec, _SHARD_KEYS, f"Shard {sid!r}")
        ids.append(sid)
        dem = rec.get("demand")
        if not isinstance(dem, Mapping):
            raise SchemaError(f"Shard {sid!r} needs a 'demand' object (resource -> amount).")
        for name, value in dem.items():
            j = res_index.get(name)
            if j is None:
                unknown_resources.append(f"{sid}:{name}")
                continue
            if not _is_number(value):
                raise SchemaError(f"Shard {sid!r} demand {name!r} must be a number, got {value!r}.")
            demand[k, j] = value
        rf = rec.get("replicas")
        if not isinstance(rf, int) or isinstance(rf, bool):
            raise SchemaError(f"Shard {sid!r} needs 'replicas', a whole number, got {rf!r}.")
        if not 1 <= rf <= 1000:
            raise InvalidValueError(
                f"Shard {sid!r} has replicas={rf!r:.30}; replicas must be >= 1 (and at most 1000)."
            )
        replicas[k] = rf
        mina = rec.get("min_available")
        if mina is not None:
            if not isinstance(mina, int) or isinstance(mina, bool):
                raise SchemaError(
                    f"Shard {sid!r} min_available must be a whole number, got {mina!r}."
                )
            if not 1 <= mina <= rf:
                raise InvalidValueError(
                    f"Shard {sid!r} has min_available={mina!r:.30}; it must be between 1 and replicas ({rf}). "
                    "Lower min_available or raise replicas."
                )
            min_available[k] = mina
            has_min[k] = True
        names = rec.get("nodes", [])
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise SchemaError(f"Shard {sid!r} 'nodes' must be a list of node ids.")
        row = []
        for name in names:
            i = node_index.get(name)
            if i is None:
                unknown_nodes.append(f"{sid}->{name}")
            else:
                row.append(i)
        rows.append(row)
        pins = rec.get("pinned")
        if pins is None:
            pinned_rows.append([])
        else:
            if not isinstance(pins, list) or not all(isinstance(x, str) for x in pins):
                raise SchemaError(f"Shard {sid!r} 'pinned' must be a list of node ids.")
            stray = [x for x in pins if x not in names]
            if stray:
                raise InvalidValueError(
                    f"Shard {sid!r} pins node(s) {format_ids(stray)} that it has no replica on; "
                    "a pin must name one of the shard's 'nodes'."
                )
            pin_set = set(pins)
            pinned_rows.append([name in pin_set for name in names if name in node_index])
        regions = rec.get("allowed_regions")
        if regions is not None:
            regions = _str_list(regions, f"Shard {sid!r} allowed_regions")
        allowed.append(regions)
        group = rec.get("group")
        if group is not None and not isinstance(group, str):
            raise SchemaError(f"Shard {sid!r} group must be a string, got {group!r}.")
        groups.append(group)
        clients = rec.get("clients")
        if clients is not None:
            for region, weight in _object(clients, f"Shard {sid!r} clients").items():
                r = region_index.get(region)
                if r is None:
                    unknown_clients.append(f"{sid}:{region}")
                    continue
                if not _is_number(weight):
                    raise SchemaError(
                        f"Shard {sid!r} client weight for {region!r} must be a number."
                    )
                c_rows.append(k)
                c_cols.append(r)
                c_vals.append(float(weight))

    if unknown_nodes:
        raise UnknownIdError(
            f"Shard replicas name nodes that are not in the cluster: {format_ids(unknown_nodes)} "
            f"(known nodes: {format_ids(cluster.node_ids, limit=3)}). Fix the shard's 'nodes' or "
            "add the node."
        )
    if unknown_resources:
        raise UnknownIdError(
            f"Shards use resources the cluster does not define: {format_ids(unknown_resources)} "
            f"(resources: {list(cluster.resources)}). Add them to `resources` (with node "
            "capacities) or remove them from the demand."
        )
    if unknown_clients:
        raise UnknownIdError(
            f"Shard clients name unknown regions: {format_ids(unknown_clients)} (known regions: "
            f"{format_ids(cluster.regions, limit=12)}). Fix the region names."
        )
    if (replicas < 1).any():
        bad = [ids[i] for i in np.flatnonzero(replicas < 1)]
        raise InvalidValueError(f"replicas must be >= 1; bad for shards {format_ids(bad)}.")
    if (replicas > 1000).any():
        bad = [ids[i] for i in np.flatnonzero(replicas > 1000)]
        raise InvalidValueError(
            f"replicas above 1000 is not a replication factor; shards {format_ids(bad)}."
        )
    min_available = np.where(has_min, min_available, replicas // 2 + 1)
    shards = Shards.build(
        cluster,
        ids=ids,
        demand=demand,
        replicas=replicas,
        min_available=min_available,
        allowed_regions=allowed if any(a is not None for a in allowed) else None,
        clients=sp.csr_array((c_vals, (c_rows, c_cols)), shape=(n, len(region_index))),
        group=groups if any(g is not None for g in groups) else None,
    )
    width = int(max(replicas.max(initial=0), max((len(r) for r in rows), default=0)))
    placement = Placement.build(rows, n_nodes=cluster.n_nodes, width=width, shard_ids=shards.ids)
    if any(pinned_rows):
        pin = np.zeros((n, width), dtype=bool)
        for k, prow in enumerate(pinned_rows):
            pin[k, : len(prow)] = prow
        placement = Placement.build(
            placement.nodes, n_nodes=cluster.n_nodes, pinned=pin, shard_ids=shards.ids
        )
    return shards, placement


# -- writing --------------------------------------------------------------------------


def _num(x: float) -> float | int:
    """Whole floats as ints keep documents readable (4e12 rather than 4000000000000.0)."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def state_to_document(state: State) -> dict[str, Any]:
    """The JSON state document of *state* (inverse of :func:`state_from_document`).

    >>> from placement.datasets import example_state
    >>> doc = state_to_document(example_state())
    >>> state_from_document(doc).sha256() == example_state().sha256()
    True
    """
    c, s, p = state.cluster, state.shards, state.placement
    res = c.resources
    states = [NodeState(int(x)).name.lower() for x in c.state]
    location_names = c.locations()
    nodes = []
    for i, nid in enumerate(c.node_ids):
        rec: dict[str, Any] = {
            "id": nid,
            "location": location_names[i],
            "capacity": {r: _num(c.capacity[i, j]) for j, r in enumerate(res) if c.capacity[i, j]},
            "state": states[i],
        }
        if not math.isnan(c.bandwidth_bps[i]):
            rec["bandwidth_bps"] = _num(c.bandwidth_bps[i])
        nodes.append(rec)
    # Links in a canonical order (ends and list sorted by region order), so that writing
    # a state, reading it and writing it again gives the same document.
    region_pos = {r: i for i, r in enumerate(c.regions)}
    links = sorted(
        (
            {"a": a, "b": b, **{k: _num(v) for k, v in sorted(d.items())}}
            for a, b, d in (
                (*sorted((u, v), key=region_pos.__getitem__), d)
                for u, v, d in c.region_graph.graph.edges(data=True)
            )
        ),
        key=lambda link: (region_pos[link["a"]], region_pos[link["b"]]),
    )
    allowed_lists = [
        None if m.all() else [c.regions[r] for r in np.flatnonzero(m)] for m in s.allowed_regions
    ]
    node_ids = np.asarray(c.node_ids, dtype=object)
    regions = np.asarray(c.regions, dtype=object)
    clients = s.clients.tocsr()
    ids = s.ids.tolist()
    demand = s.demand.tolist()
    rf = s.replicas.tolist()
    mina = s.min_available.tolist()
    shards = []
    for k in range(s.n_shards):
        row = p.nodes[k]
        held = row[row >= 0]
        rec = {
            "id": ids[k],
            "demand": {r: _num(demand[k][j]) for j, r in enumerate(res) if demand[k][j]},
            "replicas": rf[k],
            "min_available": mina[k],
            "nodes": node_ids[held].tolist(),
        }
        allowed = allowed_lists[s.residency_class[k]]
        if allowed is not None:
            rec["allowed_regions"] = allowed
        lo, hi = clients.indptr[k], clients.indptr[k + 1]
        if hi > lo:
            rec["clients"] = dict(
                zip(
                    regions[clients.indices[lo:hi]].tolist(),
                    map(_num, clients.data[lo:hi]),
                    strict=True,
                )
            )
        if s.group[k] >= 0:
            rec["group"] = s.group_names[s.group[k]]
        if p.pinned[k].any():
            rec["pinned"] = node_ids[row[p.pinned[k]]].tolist()
        shards.append(rec)
    doc: dict[str, Any] = {
        "format": STATE_FORMAT,
        "resources": list(res),
        "size_resource": c.size_resource,
        "levels": list(c.levels),
        "nodes": nodes,
    }
    node_regions = set(c.domain_names[0])
    extra_regions = [r for r in c.regions if r not in node_regions]
    if links:
        doc["links"] = links
    if extra_regions:
        doc["regions"] = extra_regions
    doc["shards"] = shards
    doc["policy"] = state.policy.to_mapping()
    return doc


def _reject_unknown_keys(record: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """Unknown keys are most often typos ("allowed_region"); ignoring them would silently
    drop a constraint, so they are errors. Keys starting with "x-" are left for extensions."""
    extra = [k for k in record.keys() - known if not (isinstance(k, str) and k.startswith("x-"))]
    if extra:
        raise SchemaError(
            f"{what} has unknown field(s) {sorted(map(str, extra))}; known fields: {sorted(known)}. "
            'Fix the spelling, or prefix extension fields with "x-".'
        )


_TOP_KEYS = frozenset(
    {
        "format",
        "resources",
        "size_resource",
        "levels",
        "nodes",
        "links",
        "regions",
        "shards",
        "policy",
    }
)
_NODE_KEYS = frozenset({"id", "location", "capacity", "state", "bandwidth_bps"})
_LINK_KEYS = frozenset({"a", "b", "latency_ms", "cost_per_gb", "bandwidth_bps"})
_SHARD_KEYS = frozenset(
    {
        "id",
        "demand",
        "replicas",
        "min_available",
        "nodes",
        "allowed_regions",
        "clients",
        "group",
        "pinned",
    }
)
