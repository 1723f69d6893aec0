"""Nodes, resources, the location hierarchy and the region graph.

A :class:`Cluster` is columnar: node ``i`` is row ``i`` of every array, and a failure
domain at level ``k`` is an integer index into ``domain_names[k]``. Ids are only used
when reading input and writing output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import networkx as nx
import numpy as np

from placement.errors import (
    DuplicateIdError,
    InvalidValueError,
    SchemaError,
    TopologyError,
    UnknownIdError,
    format_ids,
)

__all__ = ["Cluster", "NodeState", "RegionGraph"]


class NodeState(IntEnum):
    """Lifecycle state of a node.

    ``DRAINING`` nodes must be emptied but still serve as copy sources; the replicas on
    ``FAILED`` nodes are lost.
    """

    ACTIVE = 0
    DRAINING = 1
    FAILED = 2

    @classmethod
    def parse(cls, text: str, *, node_id: str = "?") -> NodeState:
        try:
            return cls[str(text).upper()]
        except KeyError:
            raise InvalidValueError(
                f"Node {node_id!r} has state {text!r}; expected one of 'active', "
                "'draining', 'failed'."
            ) from None


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _check_unique(kind: str, ids: Sequence[str]) -> None:
    seen: set[str] = set()
    dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dupes:
        raise DuplicateIdError(
            f"{kind} ids must be unique; repeated: {format_ids(dict.fromkeys(dupes))}. "
            f"Give each {kind.lower()} its own id."
        )


@dataclass(frozen=True, eq=False)
class RegionGraph:
    """Latency, transfer cost and bandwidth between regions.

    Parameters
    ----------
    regions : tuple of str
        Region names; index ``r`` of every matrix is ``regions[r]``.
    graph : networkx.Graph
        Undirected graph over region names whose edges carry ``latency_ms`` and optionally
        ``cost_per_gb`` and ``bandwidth_bps``. Empty when the state has no links.

    Attributes
    ----------
    latency_ms : ndarray, shape (R, R)
        Shortest-path latency; 0 on the diagonal, ``inf`` between unconnected regions.
    cost_per_gb : ndarray, shape (R, R)
        Cheapest-path transfer cost per GB (0 where no cost is given).
    bandwidth_bps : ndarray, shape (R, R)
        Bottleneck bandwidth along the lowest-latency path; ``inf`` on the diagonal and
        along paths whose links give no bandwidth, NaN between unconnected regions.
    has_latency_model : bool
        False when no links were given (one region, or latency unknown).

    Examples
    --------
    >>> g = RegionGraph.from_links(["eu", "us", "ap"], [
    ...     {"a": "eu", "b": "us", "latency_ms": 80, "cost_per_gb": 0.02},
    ...     {"a": "us", "b": "ap", "latency_ms": 120, "cost_per_gb": 0.05}])
    >>> float(g.latency_ms[0, 2]), round(float(g.cost_per_gb[0, 2]), 2)
    (200.0, 0.07)
    """

    regions: tuple[str, ...]
    graph: nx.Graph
    latency_ms: np.ndarray = field(init=False)
    cost_per_gb: np.ndarray = field(init=False)
    bandwidth_bps: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.regions)
        latency = np.full((n, n), np.inf)
        cost = np.full((n, n), np.inf)
        bandwidth = np.full((n, n), np.nan)
        np.fill_diagonal(latency, 0.0)
        np.fill_diagonal(cost, 0.0)
        np.fill_diagonal(bandwidth, np.inf)
        index = {r: i for i, r in enumerate(self.regions)}
        g = self.graph
        for source in g.nodes:
            i = index[source]
            lat_len, lat_paths = nx.single_source_dijkstra(g, source, weight="latency_ms")
            cost_len = nx.single_source_dijkstra_path_length(g, source, weight=_cost_weight)
            for target, length in lat_len.items():
                j = index[target]
                latency[i, j] = length
                cost[i, j] = cost_len[target]
                path = lat_paths[target]
                widths = [
                    g.edges[a, b].get("bandwidth_bps", math.inf)
                    for a, b in zip(path, path[1:], strict=False)
                ]
                bandwidth[i, j] = min(widths, default=math.inf)
        # Unknown cost is no cost rather than infinite: cost only ranks moves.
        cost[~np.isfinite(cost)] = 0.0
        for name, value in (
            ("latency_ms", latency),
            ("cost_per_gb", cost),
            ("bandwidth_bps", bandwidth),
        ):
            object.__setattr__(self, name, _readonly(value))

    @property
    def has_latency_model(self) -> bool:
        return self.graph.number_of_edges() > 0 or len(self.regions) <= 1

    @classmethod
    def from_links(
        cls, regions: Sequence[str], links: Iterable[Mapping[str, Any]] | None
    ) -> RegionGraph:
        """Build the graph from link records ``{"a", "b", "latency_ms", "cost_per_gb"?,
        "bandwidth_bps"?}``; regions named only by links are added to *regions*."""
        names = list(dict.fromkeys(regions))
        g = nx.Graph()
        for k, link in enumerate(links or ()):
            if not isinstance(link, Mapping):
                raise SchemaError(f"links[{k}] must be an object with 'a', 'b' and 'latency_ms'.")
            missing = [key for key in ("a", "b", "latency_ms") if link.get(key) is None]
            if missing:
                raise SchemaError(
                    f"links[{k}] lacks {', '.join(missing)}; each link needs 'a', 'b' "
                    "(region names) and 'latency_ms'."
                )
            a, b = str(link["a"]), str(link["b"])
            if not a or not b:
                raise SchemaError(f"links[{k}] needs non-empty region names in 'a' and 'b'.")
            if a == b:
                raise InvalidValueError(f"links[{k}] joins region {a!r} to itself; drop it.")
            attrs = {}
            for key in ("latency_ms", "cost_per_gb", "bandwidth_bps"):
                if key in link and link[key] is not None:
                    attrs[key] = float(_non_negative(link[key], f"links[{k}] ({a}-{b}) {key}"))
            if attrs.get("bandwidth_bps", 1.0) == 0:
                raise InvalidValueError(
                    f"links[{k}] ({a}-{b}) has bandwidth_bps 0; give a positive value or omit it."
                )
            if g.has_edge(a, b):
                raise DuplicateIdError(
                    f"links[{k}] repeats the link {a!r}-{b!r}; give each pair once."
                )
            g.add_edge(a, b, **attrs)
            names.extend(r for r in (a, b) if r not in names)
        g.add_nodes_from(names)
        return cls(tuple(names), g)

    def check_connected(self, used: Iterable[int]) -> None:
        """Raise :class:`TopologyError` if the regions *used* are not all mutually reachable."""
        if self.graph.number_of_edges() == 0:
            return
        used = sorted(set(int(u) for u in used))
        if not used:
            return
        reach = np.isfinite(self.latency_ms[np.ix_(used, used)])
        if reach.all():
            return
        components = [
            sorted(c)
            for c in nx.connected_components(self.graph.subgraph([self.regions[u] for u in used]))
        ]
        raise TopologyError(
            "The region graph does not connect every region in use; separate groups: "
            + "; ".join("{" + ", ".join(c) + "}" for c in components)
            + ". Add links between these groups (latency_ms), or remove `links` altogether "
            "for no latency model."
        )


def _cost_weight(a: str, b: str, attrs: Mapping[str, Any]) -> float:
    """A link without a cost costs nothing (networkx would otherwise count 1 per hop)."""
    del a, b
    return float(attrs.get("cost_per_gb", 0.0))


def _non_negative(value: Any, what: str) -> float:
    try:
        x = float(value)
    except OverflowError:
        raise InvalidValueError(f"{what} is too large, got {value!r:.40}.") from None
    except (TypeError, ValueError):
        raise SchemaError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(x) or x < 0:
        raise InvalidValueError(f"{what} must be a finite number >= 0, got {value!r}.")
    return x


@dataclass(frozen=True, eq=False)
class Cluster:
    """The machines: resources, capacities, locations, states and the region graph.

    Build one with :meth:`Cluster.build`; the constructor trusts its arrays.

    Attributes
    ----------
    node_ids : tuple of str, length N
    resources : tuple of str, length R
    size_resource : str
        The resource whose shard demand is the bytes copied when a replica moves.
    capacity : ndarray of float64, shape (N, R)
    levels : tuple of str, length L
        Location hierarchy, outermost (the region) first.
    domain_of : ndarray of int32, shape (N, L)
        Index of each node's failure domain at each level, into ``domain_names[level]``.
    domain_names : tuple of tuple of str
        Per level, a label for each domain: its own name when unique at that level,
        else its path joined by ``/``. Regions (level 0) are the region graph's regions.
    domain_leaf : tuple of tuple of str
        Per level, each domain's own name as given (not made unique).
    state : ndarray of int8, shape (N,)
        :class:`NodeState` values.
    bandwidth_bps : ndarray of float64, shape (N,)
        NaN where unknown.
    region_graph : RegionGraph

    Examples
    --------
    >>> c = Cluster.build(
    ...     node_ids=["a", "b", "c"], resources=["disk_bytes"],
    ...     capacity=[[4e12], [4e12], [8e12]], levels=["region", "zone"],
    ...     location=[["eu", "eu-1"], ["eu", "eu-2"], ["us", "us-1"]])
    >>> c.n_nodes, c.regions, c.domain_names[1]
    (3, ('eu', 'us'), ('eu-1', 'eu-2', 'us-1'))
    """

    node_ids: tuple[str, ...]
    resources: tuple[str, ...]
    size_resource: str
    capacity: np.ndarray
    levels: tuple[str, ...]
    domain_of: np.ndarray
    domain_names: tuple[tuple[str, ...], ...]
    domain_leaf: tuple[tuple[str, ...], ...]
    state: np.ndarray
    bandwidth_bps: np.ndarray
    region_graph: RegionGraph

    # -- derived views -------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_resources(self) -> int:
        return len(self.resources)

    @property
    def regions(self) -> tuple[str, ...]:
        return self.region_graph.regions

    @property
    def region_of(self) -> np.ndarray:
        """Region index of each node, shape (N,)."""
        return self.domain_of[:, 0]

    @property
    def size_index(self) -> int:
        return self.resources.index(self.size_resource)

    @property
    def active(self) -> np.ndarray:
        return self.state == NodeState.ACTIVE

    @property
    def alive(self) -> np.ndarray:
        """Nodes whose replicas still exist (active or draining)."""
        return self.state != NodeState.FAILED

    def locations(self) -> list[list[str]]:
        """Each node's location as the domain names it was given, one per level."""
        leaf, dom = self.domain_leaf, self.domain_of
        return [[leaf[k][dom[i, k]] for k in range(len(self.levels))] for i in range(self.n_nodes)]

    def link_records(self) -> list[dict[str, Any]]:
        """The region graph's links as records accepted by :meth:`RegionGraph.from_links`."""
        return [{"a": a, "b": b, **d} for a, b, d in self.region_graph.graph.edges(data=True)]

    def node_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.node_ids)}

    def level_index(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError:
            raise UnknownIdError(
                f"Level {level!r} is not in the location hierarchy {list(self.levels)}; "
                "use one of those names."
            ) from None

    def resource_index(self, resource: str) -> int:
        try:
            return self.resources.index(resource)
        except ValueError:
            raise UnknownIdError(
                f"Resource {resource!r} is not a cluster resource {list(self.resources)}."
            ) from None

    # -- construction ----------------------------------------------------------------
    @classmethod
    def build(
        cls,
        *,
        node_ids: Sequence[str],
        resources: Sequence[str],
        capacity: Any,
        levels: Sequence[str],
        location: Sequence[Sequence[str]],
        size_resource: str | None = None,
        state: Sequence[str | int] | np.ndarray | None = None,
        bandwidth_bps: Any = None,
        links: Iterable[Mapping[str, Any]] | None = None,
        regions: Sequence[str] = (),
    ) -> Cluster:
        """Validate and build a cluster from plain sequences or arrays.

        Parameters
        ----------
        node_ids : sequence of str, length N
        resources : sequence of str, length R
        capacity : array-like, shape (N, R)
            Finite, non-negative capacity of each node for each resource.
        levels : sequence of str, length L >= 1
        location : sequence of sequences of str, shape (N, L)
        size_resource : str, optional
            Defaults to ``"disk_bytes"`` when present, else the first resource.
        state : sequence of str or NodeState, optional
            Defaults to all active.
        bandwidth_bps : array-like, shape (N,), optional
            NaN (or None) where unknown.
        links : iterable of link records, optional
            See :meth:`RegionGraph.from_links`.
        regions : sequence of str, optional
            Extra region names known to the cluster without nodes (e.g. residency targets).

        Raises
        ------
        DuplicateIdError, SchemaError, InvalidValueError, UnknownIdError
        """
        node_ids = tuple(str(n) for n in node_ids)
        resources = tuple(str(r) for r in resources)
        levels = tuple(str(level) for level in levels)
        n = len(node_ids)
        _check_unique("Node", node_ids)
        _check_unique("Resource", resources)
        _check_unique("Level", levels)
        if not resources:
            raise SchemaError("The cluster needs at least one resource (e.g. 'disk_bytes').")
        if not levels:
            raise SchemaError("The location hierarchy needs at least one level (the region).")
        if size_resource is None:
            size_resource = "disk_bytes" if "disk_bytes" in resources else resources[0]
        if size_resource not in resources:
            raise UnknownIdError(
                f"size_resource {size_resource!r} is not one of the resources {list(resources)}."
            )

        try:
            cap = np.array(capacity, dtype=np.float64).reshape(n, len(resources))
        except (TypeError, ValueError):
            raise SchemaError(
                f"capacity must be numbers of shape ({n} nodes, {len(resources)} resources)."
            ) from None
        bad = ~np.isfinite(cap) | (cap < 0)
        if bad.any():
            rows, cols = np.nonzero(bad)
            raise InvalidValueError(
                "Capacity must be finite and >= 0; bad values at "
                + format_ids(
                    f"{node_ids[i]}:{resources[j]}={cap[i, j]}"
                    for i, j in zip(rows, cols, strict=True)
                )
                + ". Fix these node capacities."
            )

        domain_of, domain_names, domain_leaf = _domains(node_ids, levels, location)

        if state is None:
            states = np.zeros(n, dtype=np.int8)
        else:
            states = np.array(
                [
                    s
                    if isinstance(s, (int, np.integer))
                    else NodeState.parse(s, node_id=node_ids[i])
                    for i, s in enumerate(state)
                ],
                dtype=np.int8,
            )
            if states.shape != (n,) or ((states < 0) | (states > 2)).any():
                raise InvalidValueError("state must give one of active/draining/failed per node.")

        if bandwidth_bps is None:
            bw = np.full(n, np.nan)
        else:
            bw = np.array([np.nan if b is None else b for b in bandwidth_bps], dtype=np.float64)
            if bw.shape != (n,):
                raise SchemaError(f"bandwidth_bps must have one value per node ({n}).")
            bad_bw = ~np.isnan(bw) & (~np.isfinite(bw) | (bw <= 0))
            if bad_bw.any():
                raise InvalidValueError(
                    "bandwidth_bps must be a finite number > 0; bad for nodes "
                    + format_ids(node_ids[i] for i in np.flatnonzero(bad_bw))
                    + "."
                )

        graph = RegionGraph.from_links(list(domain_names[0]) + [str(r) for r in regions], links)
        return cls(
            node_ids=node_ids,
            resources=resources,
            size_resource=size_resource,
            capacity=_readonly(cap),
            levels=levels,
            domain_of=_readonly(domain_of),
            domain_names=domain_names,
            domain_leaf=domain_leaf,
            state=_readonly(states),
            bandwidth_bps=_readonly(bw),
            region_graph=graph,
        )

    def with_state(self, state: np.ndarray) -> Cluster:
        """A copy with other node states (e.g. to simulate a failure)."""
        from dataclasses import replace

        new = np.array(state, dtype=np.int8)
        if new.shape != (self.n_nodes,):
            raise SchemaError(f"state must have one entry per node ({self.n_nodes}).")
        return replace(self, state=_readonly(new))


def _domains(
    node_ids: tuple[str, ...], levels: tuple[str, ...], location: Sequence[Sequence[str]]
) -> tuple[np.ndarray, tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """Index failure domains per level; a domain is identified by its full path."""
    n, depth = len(node_ids), len(levels)
    rows = list(location)
    if len(rows) != n:
        raise SchemaError(f"location must have one entry per node ({n}), got {len(rows)}.")
    wrong = [node_ids[i] for i, loc in enumerate(rows) if isinstance(loc, str) or len(loc) != depth]
    if wrong:
        raise SchemaError(
            f"Each node's location must list one domain per level {list(levels)}; wrong for "
            f"nodes {format_ids(wrong)}."
        )
    domain_of = np.empty((n, depth), dtype=np.int32)
    names: list[tuple[str, ...]] = []
    leaves: list[tuple[str, ...]] = []
    for k in range(depth):
        paths: dict[tuple[str, ...], int] = {}
        for i, loc in enumerate(rows):
            path = tuple(str(x) for x in loc[: k + 1])
            domain_of[i, k] = paths.setdefault(path, len(paths))
        leaf_count: dict[str, int] = {}
        for path in paths:
            leaf_count[path[-1]] = leaf_count.get(path[-1], 0) + 1
        names.append(tuple(p[-1] if leaf_count[p[-1]] == 1 else "/".join(p) for p in paths))
        leaves.append(tuple(p[-1] for p in paths))
    return domain_of, tuple(names), tuple(leaves)
