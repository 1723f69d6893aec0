"""A whole cluster state: cluster, shards, their current placement and the policy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from placement.errors import InvalidValueError, SchemaError, TopologyError, format_ids
from placement.model.assignment import Placement, _pad
from placement.model.cluster import Cluster
from placement.model.policy import Policy
from placement.model.shards import Shards

__all__ = ["State"]


@dataclass(frozen=True, eq=False)
class State:
    """Cluster, workload, current placement and policy, checked against each other.

    Creating a ``State`` validates what no part can check alone: placement rows match
    shards, no shard lists more replicas than its replication factor, the spread level
    exists, every shard's replication and ``min_regions`` fit the failure domains of its
    allowed regions, and the region graph connects every region in use.

    Examples
    --------
    >>> from placement.model import Cluster, Placement, Policy, Shards
    >>> c = Cluster.build(node_ids=["a", "b", "c"], resources=["disk_bytes"],
    ...     capacity=[[1e12]] * 3, levels=["region", "zone"],
    ...     location=[["eu", "z1"], ["eu", "z2"], ["eu", "z3"]])
    >>> s = Shards.build(c, demand=[[1e9]], replicas=3)
    >>> st = State(c, s, Placement.build([[0, 1, 2]], n_nodes=3), Policy())
    >>> st.spread_level_index, len(st.sha256())
    (1, 64)
    >>> State(c, Shards.build(c, demand=[[1e9]], replicas=4),
    ...       Placement.build([[0, 1, 2]], n_nodes=3), Policy())
    Traceback (most recent call last):
    ...
    placement.errors.TopologyError: Shards 's0' need 4 replicas but their allowed regions offer only 3 slots at level 'zone' (3 domains, at most 1 replica each). Lower replicas, raise policy.max_per_domain, choose a finer spread_level, or widen allowed_regions.
    """

    cluster: Cluster
    shards: Shards
    placement: Placement
    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        c, s, p = self.cluster, self.shards, self.placement
        if p.n_shards != s.n_shards:
            raise SchemaError(
                f"The placement has {p.n_shards} rows but there are {s.n_shards} shards."
            )
        max_rf = int(s.replicas.max(initial=0))
        if p.width < max_rf:
            object.__setattr__(
                self,
                "placement",
                Placement(
                    nodes=_frozen(_pad(p.nodes, max_rf)),
                    pinned=_frozen(_pad_bool(p.pinned, max_rf)),
                ),
            )
            p = self.placement
        if s.allowed_regions.shape[1] != len(c.regions):
            raise SchemaError("The shards were built for another cluster (region count differs).")
        over = p.count() > s.replicas
        if over.any():
            raise InvalidValueError(
                f"Shards {format_ids(s.ids[over].tolist())} list more nodes than their replication "
                "factor. Raise `replicas` or remove the extra nodes."
            )
        if p.n_shards and (p.nodes.max(initial=-1) >= c.n_nodes):
            raise InvalidValueError("The placement names node indices beyond the cluster's nodes.")
        _ = self.spread_level_index  # raises on an unknown level
        _ = self.headroom
        self._check_topology()
        self._check_region_graph()

    # -- derived ---------------------------------------------------------------------
    @cached_property
    def spread_level_index(self) -> int:
        level = self.policy.spread_level
        if level is None:
            return 1 if len(self.cluster.levels) > 1 else 0
        return self.cluster.level_index(level)

    @cached_property
    def headroom(self) -> np.ndarray:
        """Utilization limit per resource, shape (R,)."""
        out = np.full(self.cluster.n_resources, float(self.policy.headroom))
        for name, value in self.policy.headroom_by_resource.items():
            out[self.cluster.resource_index(name)] = value
        out.setflags(write=False)
        return out

    @property
    def spread_level(self) -> str:
        return self.cluster.levels[self.spread_level_index]

    def with_placement(self, placement: Placement) -> State:
        """The same state with another placement (validated)."""
        return replace(self, placement=placement)

    def with_cluster(self, cluster: Cluster) -> State:
        return replace(self, cluster=cluster)

    def sha256(self) -> str:
        """Content hash of the normalized state (independent of JSON formatting and key order).

        Two states with the same ids, numbers, placement (per shard, regardless of replica
        order) and policy have the same hash, whether loaded from JSON or built from arrays.
        """
        return self._digest

    @cached_property
    def _digest(self) -> str:
        c, s, p = self.cluster, self.shards, self.placement
        h = hashlib.sha256()

        def text(obj: object) -> None:
            h.update(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())

        def arr(a: np.ndarray) -> None:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())

        text([c.node_ids, c.resources, c.size_resource, c.levels, c.domain_names, c.regions])
        text(
            sorted(
                (*sorted((a, b)), sorted(d.items()))
                for a, b, d in c.region_graph.graph.edges(data=True)
            )
        )
        for a in (c.capacity, c.domain_of, c.state, c.bandwidth_bps):
            arr(a)
        # Normalize what depends on how the state was built: string width, group order.
        width = int(np.char.str_len(s.ids).max(initial=1)) if s.n_shards else 1
        arr(s.ids.astype(f"U{width}"))
        for a in (s.demand, s.replicas, s.min_available, s.allowed_regions[s.residency_class]):
            arr(a)
        # Only the groups some shard belongs to: a document names no others, so unused
        # names given to the array builder must not change the hash.
        used = np.unique(s.group[s.group >= 0])
        used_names = [s.group_names[g] for g in used.tolist()]
        rank = np.full(len(s.group_names) + 1, -1, dtype=np.int64)  # index -1: no group
        rank[used[np.argsort(np.array(used_names, dtype=str))]] = np.arange(used.size)
        arr(rank[s.group])
        text(sorted(used_names))
        clients = s.clients.tocsr()
        for a in (clients.indptr, clients.indices, clients.data):
            arr(a)
        order = np.argsort(p.nodes, axis=1)
        arr(np.take_along_axis(p.nodes, order, axis=1).astype(np.int64))
        arr(np.take_along_axis(p.pinned, order, axis=1))
        text(_numbers_as_float(self.policy.to_mapping()))
        return h.hexdigest()

    # -- checks ----------------------------------------------------------------------
    def _check_topology(self) -> None:
        """Replication and min_regions must fit the allowed failure domains of each shard."""
        c, s, pol = self.cluster, self.shards, self.policy
        level = self.spread_level_index
        dom = c.domain_of[:, level]
        n_dom = len(c.domain_names[level])
        nodes_per_domain = np.bincount(dom, minlength=n_dom)
        region_of_domain = np.zeros(n_dom, dtype=np.int64)
        region_of_domain[dom] = c.region_of
        regions_with_nodes = np.bincount(c.region_of, minlength=len(c.regions)) > 0
        slots_per_domain = np.minimum(nodes_per_domain, pol.max_per_domain)

        allowed = s.allowed_regions  # (classes, regions)
        slots = (allowed[:, region_of_domain] * slots_per_domain).sum(axis=1)
        region_count = (allowed & regions_with_nodes).sum(axis=1)
        domain_count = (allowed[:, region_of_domain] & (nodes_per_domain > 0)).sum(axis=1)

        short = s.replicas > slots[s.residency_class]
        if short.any():
            first = int(np.flatnonzero(short)[0])
            cls = s.residency_class[first]
            raise TopologyError(
                f"Shards {format_ids(s.ids[short].tolist())} need {s.replicas[first]} replicas but "
                f"their allowed regions offer only {slots[cls]} slots at level "
                f"{c.levels[level]!r} ({domain_count[cls]} domains, at most {pol.max_per_domain} "
                "replica each). Lower replicas, raise policy.max_per_domain, choose a finer "
                "spread_level, or widen allowed_regions."
            )
        need_regions = np.minimum(pol.min_regions, s.replicas)
        too_few = region_count[s.residency_class] < need_regions
        if too_few.any():
            first = int(np.flatnonzero(too_few)[0])
            raise TopologyError(
                f"Shards {format_ids(s.ids[too_few].tolist())} must span {need_regions[first]} "
                f"regions (policy.min_regions={pol.min_regions}) but only "
                f"{region_count[s.residency_class[first]]} allowed regions have nodes. Lower "
                "min_regions or widen allowed_regions."
            )

    def _check_region_graph(self) -> None:
        c, s = self.cluster, self.shards
        used = set(np.unique(c.region_of).tolist())
        used.update(np.unique(s.clients.indices).tolist())
        c.region_graph.check_connected(used)


def _numbers_as_float(obj: object) -> object:
    """50 and 50.0 are the same policy value; hash them alike."""
    if isinstance(obj, dict):
        return {k: _numbers_as_float(v) for k, v in obj.items()}
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return float(obj)
    return obj


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _pad_bool(a: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((a.shape[0], width), dtype=bool)
    out[:, : a.shape[1]] = a
    return out
