"""Where replicas are: a padded (shard x slot) matrix of node indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.errors import InvalidValueError, SchemaError, format_ids

__all__ = ["EMPTY", "Placement"]

#: Slot value meaning "no replica here".
EMPTY = -1


@dataclass(frozen=True, eq=False)
class Placement:
    """Replica locations, one row per shard.

    Attributes
    ----------
    nodes : ndarray of int32, shape (S, W)
        Node index of each replica; :data:`EMPTY` (-1) for an unused slot. ``W`` is at
        least the largest replication factor, so a missing replica has a free slot.
    pinned : ndarray of bool, shape (S, W)
        True where the replica must not move.

    Examples
    --------
    >>> p = Placement.build([[0, 1], [2]], n_nodes=3, width=2)
    >>> p.nodes.tolist(), p.count().tolist()
    ([[0, 1], [2, -1]], [2, 1])
    """

    nodes: np.ndarray
    pinned: np.ndarray

    @property
    def n_shards(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def width(self) -> int:
        return int(self.nodes.shape[1])

    def count(self) -> np.ndarray:
        """Replicas listed per shard, shape (S,)."""
        return (self.nodes >= 0).sum(axis=1)

    def replica_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, node index) of every listed replica, in row-major order."""
        rows, cols = np.nonzero(self.nodes >= 0)
        return rows, self.nodes[rows, cols]

    def equals(self, other: Placement) -> bool:
        """Same replica sets per shard, regardless of slot order."""
        if self.nodes.shape[0] != other.nodes.shape[0]:
            return False
        w = max(self.width, other.width)
        a = np.sort(_pad(self.nodes, w), axis=1)
        b = np.sort(_pad(other.nodes, w), axis=1)
        return bool(np.array_equal(a, b))

    @classmethod
    def build(
        cls,
        nodes: Any,
        *,
        n_nodes: int,
        width: int | None = None,
        pinned: Any = None,
        shard_ids: Any = None,
    ) -> Placement:
        """Validate replica locations.

        Parameters
        ----------
        nodes : array-like of int, shape (S, W), or a sequence of sequences
            Node indices per shard; -1 (or a shorter row) for a missing replica.
        n_nodes : int
            Number of nodes in the cluster; indices must be below it.
        width : int, optional
            Slot count; at least the longest row.
        pinned : array-like of bool, shape (S, W), optional
        shard_ids : array of str, optional
            Used in error messages only.

        Raises
        ------
        SchemaError, InvalidValueError
        """
        if isinstance(nodes, np.ndarray) and nodes.ndim == 2:
            arr = nodes.astype(np.int32, copy=True)
        else:
            rows = list(nodes)
            longest = max((len(r) for r in rows), default=0)
            arr = np.full((len(rows), max(longest, width or 0)), EMPTY, dtype=np.int32)
            for i, r in enumerate(rows):
                arr[i, : len(r)] = r
        if width is not None and arr.shape[1] < width:
            arr = _pad(arr, width)
        ids = (
            shard_ids
            if shard_ids is not None
            else np.char.add("s", np.arange(arr.shape[0]).astype(str))
        )

        out_of_range = (arr < EMPTY) | (arr >= n_nodes)
        if out_of_range.any():
            bad_rows = np.flatnonzero(out_of_range.any(axis=1))
            raise InvalidValueError(
                f"Replica node indices must be in 0..{n_nodes - 1} (or -1 for none); bad for "
                f"shards {format_ids(np.asarray(ids)[bad_rows].tolist())}."
            )
        s = np.sort(arr, axis=1)
        dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        if dup.any():
            bad_rows = np.flatnonzero(dup.any(axis=1))
            raise InvalidValueError(
                f"A shard may have at most one replica per node; shards "
                f"{format_ids(np.asarray(ids)[bad_rows].tolist())} list a node twice. Remove the "
                "repeated node."
            )
        # Keep listed replicas first so that free slots are at the end of each row.
        order = np.argsort(arr < 0, axis=1, kind="stable")
        arr = np.take_along_axis(arr, order, axis=1)
        if pinned is None:
            pin = np.zeros(arr.shape, dtype=bool)
        else:
            pin = np.zeros(arr.shape, dtype=bool)
            given = np.asarray(pinned, dtype=bool)
            if given.ndim != 2 or given.shape[0] != arr.shape[0] or given.shape[1] > arr.shape[1]:
                raise SchemaError(f"pinned must have shape {arr.shape}.")
            pin[:, : given.shape[1]] = given
            pin = np.take_along_axis(pin, order, axis=1)
            if (pin & (arr < 0)).any():
                raise SchemaError("pinned marks a slot that holds no replica.")
        arr.setflags(write=False)
        pin.setflags(write=False)
        return cls(nodes=arr, pinned=pin)


def _pad(arr: np.ndarray, width: int) -> np.ndarray:
    if arr.shape[1] >= width:
        return arr
    out = np.full((arr.shape[0], width), EMPTY, dtype=arr.dtype)
    out[:, : arr.shape[1]] = arr
    return out
