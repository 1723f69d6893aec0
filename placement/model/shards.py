"""Shards: demand per resource, replication, residency, clients and groups.

Columnar: shard ``s`` is row ``s`` of every array. Residency is stored by class (most
shards share a handful of allowed-region sets), client demand as a sparse matrix over
regions, so a million shards stay a few dozen megabytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from placement.errors import DuplicateIdError, InvalidValueError, SchemaError, format_ids
from placement.model.cluster import Cluster

__all__ = ["Shards"]


def _readonly(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Shards:
    """The workload: what must be stored, how often, and where it may live.

    Build with :meth:`Shards.build`; the constructor trusts its arrays.

    Attributes
    ----------
    ids : ndarray of str, shape (S,)
    demand : ndarray of float64, shape (S, R)
        Demand of each replica, in the cluster's resource order.
    replicas : ndarray of int32, shape (S,)
        Replication factor.
    min_available : ndarray of int32, shape (S,)
        Fewest live replicas the shard may ever have (default: a majority).
    residency_class : ndarray of int32, shape (S,)
        Row of ``allowed_regions`` that applies to each shard.
    allowed_regions : ndarray of bool, shape (C, n_regions)
        Allowed-region masks; class 0 allows every region.
    clients : scipy.sparse.csr_array, shape (S, n_regions)
        Client demand weight of each shard from each region.
    group : ndarray of int32, shape (S,)
        Index into ``group_names``; -1 for no group.
    group_names : tuple of str

    Examples
    --------
    >>> from placement.model.cluster import Cluster
    >>> c = Cluster.build(node_ids=["a", "b"], resources=["disk_bytes"],
    ...     capacity=[[1e12], [1e12]], levels=["region"], location=[["eu"], ["us"]])
    >>> s = Shards.build(c, demand=[[1e9], [2e9]], replicas=2,
    ...                  allowed_regions=[None, ["eu"]])
    >>> s.n_shards, s.ids.tolist(), s.region_allowed()[1].tolist()
    (2, ['s0', 's1'], [True, False])
    """

    ids: np.ndarray
    demand: np.ndarray
    replicas: np.ndarray
    min_available: np.ndarray
    residency_class: np.ndarray
    allowed_regions: np.ndarray
    clients: sp.csr_array
    group: np.ndarray
    group_names: tuple[str, ...]

    @property
    def n_shards(self) -> int:
        return int(self.ids.shape[0])

    def region_allowed(self) -> np.ndarray:
        """Allowed-region mask per shard, shape (S, n_regions). Materializes S x regions."""
        return self.allowed_regions[self.residency_class]

    def id_index(self) -> dict[str, int]:
        return {str(s): i for i, s in enumerate(self.ids.tolist())}

    @classmethod
    def build(
        cls,
        cluster: Cluster,
        *,
        demand: Any,
        replicas: int | Any = 3,
        ids: Sequence[str] | np.ndarray | None = None,
        min_available: int | Any | None = None,
        allowed_regions: Sequence[Sequence[str] | None] | None = None,
        residency_class: Any = None,
        residency_sets: Sequence[Sequence[str] | None] | None = None,
        clients: Any = None,
        group: Sequence[str | None] | np.ndarray | None = None,
        group_names: Sequence[str] | None = None,
    ) -> Shards:
        """Validate and build shards for *cluster*.

        Parameters
        ----------
        cluster : Cluster
            Gives the resource order and the region names.
        demand : array-like, shape (S, R) or (S,)
            Per-replica demand; a 1-D array is the demand of the size resource only.
        replicas : int or array-like of int, shape (S,)
        ids : sequence of str, optional
            Defaults to ``s0, s1, ...``.
        min_available : int or array-like, optional
            Defaults to a majority, ``replicas // 2 + 1``.
        allowed_regions : sequence of (sequence of str or None), optional
            Per shard; None allows every region. For many shards prefer
            ``residency_class`` with ``residency_sets``.
        residency_class, residency_sets : optional
            Columnar residency: ``residency_sets[residency_class[s]]`` is shard s's allowed
            regions (None for all).
        clients : array-like or sparse, shape (S, n_regions), optional
            Client demand weight per region, in ``cluster.regions`` order.
        group : sequence of str or None, or array of int, optional
            Group (tenant, service) of each shard. With ``group_names``, an integer array
            indexing it (-1 for none), which avoids a pass over a million strings.
        group_names : sequence of str, optional

        Raises
        ------
        SchemaError, InvalidValueError, DuplicateIdError, UnknownIdError
        """
        n_res = cluster.n_resources
        try:
            dem = np.array(demand, dtype=np.float64)
        except (TypeError, ValueError):
            raise SchemaError("demand must be numbers of shape (shards, resources).") from None
        if dem.ndim == 1:
            full = np.zeros((dem.shape[0], n_res))
            full[:, cluster.size_index] = dem
            dem = full
        if dem.ndim != 2 or dem.shape[1] != n_res:
            raise SchemaError(
                f"demand must have shape (shards, {n_res}) for resources "
                f"{list(cluster.resources)}, got {dem.shape}."
            )
        n = dem.shape[0]

        if ids is None:
            id_arr = np.char.add("s", np.arange(n).astype(str)) if n else np.array([], dtype="U1")
        else:
            id_arr = np.asarray(ids, dtype=str)
            if id_arr.shape != (n,):
                raise SchemaError(f"ids must have one entry per shard ({n}), got {id_arr.shape}.")
            uniq, counts = np.unique(id_arr, return_counts=True)
            if (counts > 1).any():
                raise DuplicateIdError(
                    f"Shard ids must be unique; repeated: {format_ids(uniq[counts > 1].tolist())}. "
                    "Give each shard its own id."
                )

        def ids_where(mask: np.ndarray) -> str:
            return format_ids(id_arr[np.flatnonzero(mask)].tolist())

        bad = ~np.isfinite(dem) | (dem < 0)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise InvalidValueError(
                f"Shard demand must be finite and >= 0; bad for shards {ids_where(np.asarray(bad.any(axis=1)))} "
                f"(e.g. {id_arr[rows[0]]}: "
                + ", ".join(
                    f"{cluster.resources[j]}={dem[rows[0], j]}"
                    for j in np.flatnonzero(bad[rows[0]])
                )
                + "). Fix these demands."
            )

        rf = _int_column(replicas, n, "replicas")
        if (rf < 1).any():
            raise InvalidValueError(f"replicas must be >= 1; bad for shards {ids_where(rf < 1)}.")
        if min_available is None:
            mina = rf // 2 + 1
        else:
            mina = _int_column(min_available, n, "min_available")
        bad_min = (mina < 1) | (mina > rf)
        if bad_min.any():
            raise InvalidValueError(
                "min_available must be between 1 and replicas; bad for shards "
                f"{ids_where(bad_min)}. Lower min_available or raise replicas."
            )

        region_index = {r: i for i, r in enumerate(cluster.regions)}
        if allowed_regions is not None:
            if residency_class is not None:
                raise SchemaError("Give allowed_regions or residency_class, not both.")
            if len(allowed_regions) != n:
                raise SchemaError(f"allowed_regions must have one entry per shard ({n}).")
            keys: dict[frozenset[str] | None, int] = {None: 0}
            cls_list = [
                keys.setdefault(None if a is None else frozenset(map(str, a)), len(keys))
                for a in allowed_regions
            ]
            res_cls = np.array(cls_list, dtype=np.int32)
            sets: list[frozenset[str] | None] = list(keys)
        elif residency_class is not None:
            res_cls = _int_column(residency_class, n, "residency_class")
            sets = [
                None if s is None else frozenset(map(str, s)) for s in (residency_sets or [None])
            ]
            if ((res_cls < 0) | (res_cls >= len(sets))).any():
                raise InvalidValueError(
                    f"residency_class must index residency_sets (0..{len(sets) - 1}); bad for shards "
                    f"{ids_where((res_cls < 0) | (res_cls >= len(sets)))}."
                )
        else:
            res_cls = np.zeros(n, dtype=np.int32)
            sets = [None]
        masks = np.ones((len(sets), len(region_index)), dtype=bool)
        for c, regions in enumerate(sets):
            if regions is None:
                continue
            unknown = sorted(r for r in regions if r not in region_index)
            if unknown:
                users = np.flatnonzero(res_cls == c)
                raise _unknown_region(unknown, id_arr[users].tolist(), cluster.regions)
            if not regions:
                users = np.flatnonzero(res_cls == c)
                raise InvalidValueError(
                    f"Shards {format_ids(id_arr[users].tolist())} allow no region at all; list at "
                    "least one region or omit allowed_regions."
                )
            masks[c] = False
            masks[c, [region_index[r] for r in regions]] = True

        client_matrix = _clients(clients, n, len(region_index), id_arr)

        if group is None:
            grp = np.full(n, -1, dtype=np.int32)
            gnames: tuple[str, ...] = ()
        elif group_names is not None:
            gnames = tuple(str(g) for g in group_names)
            grp = _int_column(group, n, "group")
            bad_group = (grp < -1) | (grp >= len(gnames))
            if bad_group.any():
                raise InvalidValueError(
                    f"group codes must index group_names (0..{len(gnames) - 1}) or be -1; bad "
                    f"for shards {ids_where(bad_group)}."
                )
        elif isinstance(group, np.ndarray) and group.dtype.kind in "U" and group.shape == (n,):
            names_arr, inverse = np.unique(group, return_inverse=True)
            grp = inverse.astype(np.int32)
            gnames = tuple(names_arr.tolist())
        else:
            labels = list(group)
            if len(labels) != n:
                raise SchemaError(f"group must have one entry per shard ({n}).")
            names: dict[str, int] = {}
            grp = np.array(
                [-1 if g is None else names.setdefault(str(g), len(names)) for g in labels],
                dtype=np.int32,
            )
            gnames = tuple(names)

        return cls(
            ids=_readonly(id_arr),
            demand=_readonly(dem),
            replicas=_readonly(rf),
            min_available=_readonly(mina.astype(np.int32)),
            residency_class=_readonly(res_cls),
            allowed_regions=_readonly(masks),
            clients=client_matrix,
            group=_readonly(grp),
            group_names=gnames,
        )


def _int_column(value: Any, n: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = np.full(n, arr)
        if arr.shape != (n,):
            raise ValueError
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise SchemaError(f"{name} must be an integer or one integer per shard ({n}).") from None
    if not np.isfinite(as_float).all() or (as_float != np.round(as_float)).any():
        raise InvalidValueError(f"{name} must hold whole numbers.")
    return as_float.astype(np.int32)


def _unknown_region(unknown: list[str], shard_ids: list[str], known: tuple[str, ...]) -> Exception:
    from placement.errors import UnknownIdError

    return UnknownIdError(
        f"Shards {format_ids(shard_ids)} allow region(s) {format_ids(unknown)}, which the cluster "
        f"does not know (known regions: {format_ids(known, limit=12)}). Fix the allowed_regions "
        "lists, or name the region in a node location or a link."
    )


def _clients(clients: Any, n: int, n_regions: int, ids: np.ndarray) -> sp.csr_array:
    if clients is None:
        return sp.csr_array((n, n_regions), dtype=np.float64)
    try:
        matrix = sp.csr_array(clients, dtype=np.float64)
    except (TypeError, ValueError):
        raise SchemaError("clients must be a (shards, regions) matrix of weights.") from None
    if matrix.shape != (n, n_regions):
        raise SchemaError(f"clients must have shape ({n}, {n_regions}), got {matrix.shape}.")
    matrix.sum_duplicates()
    data = matrix.data
    bad = ~np.isfinite(data) | (data < 0)
    if bad.any():
        rows = np.repeat(np.arange(n), np.diff(matrix.indptr))[bad]
        raise InvalidValueError(
            f"Client demand must be finite and >= 0; bad for shards {format_ids(ids[rows].tolist())}."
        )
    matrix.eliminate_zeros()
    return matrix
