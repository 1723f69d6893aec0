"""A move plan: columnar moves from a state's placement to a target placement.

A move puts a replica of ``shard`` on ``target``, copied from a live replica, then removes
the replica on ``source`` (``-1``: a missing replica is created). Applying the moves in order
to the state's placement gives the plan's target placement.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.errors import InvalidValueError, SchemaError, UnknownIdError, format_ids
from placement.model import EMPTY, State

__all__ = ["PLAN_FORMAT", "REASONS", "Plan", "apply_moves", "load_plan", "plan_from_document"]

PLAN_FORMAT = "placement.plan/1"

#: Why a move is in the plan: the constraint or objective term it serves.
REASONS: tuple[str, ...] = (
    "restore-replication",  # a missing replica is created (from null)
    "failed-node",  # the replica's node failed; it is re-created elsewhere
    "drain",  # the node is draining
    "residency",  # the replica is outside its allowed regions
    "spread",  # too many replicas in one failure domain
    "min-regions",  # the shard spans too few regions
    "capacity",  # the node is above headroom
    "balance",  # objective: even utilization
    "latency",  # objective: replicas near their clients (placement.scenarios.plan_geo)
)


def apply_moves(
    nodes: np.ndarray, shard: np.ndarray, source: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Apply moves in order to a (S, W) node matrix; returns a new matrix.

    Raises
    ------
    InvalidValueError
        A move's source is not a replica of its shard, its target already holds one, or
        a shard has no free slot for a created replica.
    """
    out = nodes.copy()
    for k, (s, a, b) in enumerate(
        zip(shard.tolist(), source.tolist(), target.tolist(), strict=True)
    ):
        row = out[s]
        if b in row:
            raise InvalidValueError(
                f"Move {k}: the target node already holds a replica of shard index {s}."
            )
        slots = np.flatnonzero(row == (a if a >= 0 else EMPTY))
        if slots.size == 0:
            what = (
                "no free slot (already fully replicated)"
                if a < 0
                else "no replica on the source node"
            )
            raise InvalidValueError(f"Move {k}: shard index {s} has {what}.")
        row[slots[0]] = b
    return out


@dataclass(frozen=True, eq=False)
class Plan:
    """The moves that take a state to a target placement, with the evidence.

    Attributes
    ----------
    state_sha256 : str
        Hash of the state the plan was made for (:meth:`State.sha256`).
    shard, source, target : ndarray of int, shape (M,)
        Shard index, source node (-1 for a created replica), target node of each move.
    size_bytes : ndarray of float64, shape (M,)
        Bytes copied (the shard's ``size_resource`` demand).
    cost : ndarray of float64, shape (M,)
        Transfer cost: GB x cost per GB from the cheapest live copy's region to the target's.
    reason : ndarray of int8, shape (M,)
        Index into :data:`REASONS`.
    target_nodes : ndarray of int32, shape (S, W)
        The placement after all moves.
    lower_bound_bytes : float
        Bytes that any plan reaching this plan's worst utilization must move.
    before, after : dict
        Metrics of the state and of the target placement (imbalance, violations).
    stats : dict
        Solver statistics (phases, times, stop reason).
    wave : ndarray of int, shape (M,), optional
        Wave of each move once scheduled (:func:`placement.schedule.schedule`): waves run
        one after another, in increasing order. None for an unscheduled plan.
    """

    state_sha256: str
    shard: np.ndarray
    source: np.ndarray
    target: np.ndarray
    size_bytes: np.ndarray
    cost: np.ndarray
    reason: np.ndarray
    target_nodes: np.ndarray
    lower_bound_bytes: float = 0.0
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    wave: np.ndarray | None = None

    @property
    def n_moves(self) -> int:
        return int(self.shard.shape[0])

    @property
    def n_waves(self) -> int:
        """Number of waves (0 for an unscheduled or empty plan)."""
        return 0 if self.wave is None or self.wave.size == 0 else int(self.wave.max()) + 1

    def waves(self) -> list[np.ndarray]:
        """Move indices of each wave, in execution order (empty for an unscheduled plan)."""
        if self.n_waves == 0 or self.wave is None:
            return []
        order = np.argsort(self.wave, kind="stable")
        return np.split(order, np.searchsorted(self.wave[order], np.arange(1, self.n_waves)))

    @property
    def bytes_moved(self) -> float:
        return float(self.size_bytes.sum())

    @property
    def bound_ratio(self) -> float | None:
        """Bytes moved over the lower bound (1.0 is optimal); None when the bound is 0."""
        if self.lower_bound_bytes <= 0:
            return None if self.bytes_moved > 0 else 1.0
        return self.bytes_moved / self.lower_bound_bytes

    @property
    def gap(self) -> float | None:
        """Share of the bytes moved that the bound does not prove necessary:
        ``(bytes - bound) / bytes`` (0 is proven optimal; None for an empty plan)."""
        if self.bytes_moved <= 0:
            return None
        return max(self.bytes_moved - self.lower_bound_bytes, 0.0) / self.bytes_moved

    def reason_names(self) -> list[str]:
        return [REASONS[r] for r in self.reason.tolist()]

    def summary(self) -> dict[str, Any]:
        counts = (
            np.bincount(self.reason, minlength=len(REASONS))
            if self.n_moves
            else np.zeros(len(REASONS), int)
        )
        return {
            "moves": self.n_moves,
            "bytes_moved": self.bytes_moved,
            "transfer_cost": float(self.cost.sum()),
            "lower_bound_bytes": self.lower_bound_bytes,
            "bytes_over_bound": self.bound_ratio,
            "gap": self.gap,
            "moves_by_reason": {REASONS[i]: int(c) for i, c in enumerate(counts) if c},
            "before": self.before,
            "after": self.after,
            "solver": self.stats,
        }

    def to_document(self, state: State) -> dict[str, Any]:
        """The interchange plan document (``placement.plan/1``)."""
        node_ids = state.cluster.node_ids
        ids = state.shards.ids
        moves = [
            {
                "shard": str(ids[s]),
                "from": node_ids[a] if a >= 0 else None,
                "to": node_ids[b],
                "bytes": float(size),
                "reason": REASONS[r],
            }
            for s, a, b, size, r in zip(
                self.shard.tolist(),
                self.source.tolist(),
                self.target.tolist(),
                self.size_bytes.tolist(),
                self.reason.tolist(),
                strict=True,
            )
        ]
        doc: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "state_sha256": self.state_sha256,
            "moves": moves,
        }
        if self.wave is not None:
            doc["waves"] = [w.tolist() for w in self.waves()]
        doc["summary"] = _jsonable(self.summary())
        return doc

    def dump(self, state: State, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_document(state), f, indent=1)
            f.write("\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if np.isfinite(v) else None
    return obj


def transfer_cost(
    state: State, nodes: np.ndarray, shard: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Cost of each move: GB times the cheapest cost per GB from a live replica to the target.

    *nodes* is the placement the moves start from (sources are read from it).
    """
    c = state.cluster
    if shard.size == 0:
        return np.zeros(0)
    rows = nodes[shard]
    present = rows >= 0
    safe = np.where(present, rows, 0)
    live = present & c.alive[safe]
    per_gb = c.region_graph.cost_per_gb[c.region_of[safe], c.region_of[target][:, None]]
    cheapest = np.where(live, per_gb, np.inf).min(axis=1)
    cheapest[~np.isfinite(cheapest)] = 0.0  # no live copy (data lost): nothing to transfer
    return state.shards.demand[shard, c.size_index] / 1e9 * cheapest


def plan_from_document(doc: Any, state: State, *, check_hash: bool = True) -> Plan:
    """Read a plan document made for *state*.

    Raises
    ------
    SchemaError, UnknownIdError, InvalidValueError
        Wrong shape, unknown ids, a state hash that does not match (when *check_hash*),
        or moves that do not apply to the state's placement.
    """
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SchemaError(f'Expected a plan document with "format": "{PLAN_FORMAT}", got {got!r}.')
    digest = doc.get("state_sha256")
    if check_hash and digest != state.sha256():
        raise InvalidValueError(
            f"The plan was made for state {str(digest)[:12]}..., not this state ({state.sha256()[:12]}...). "
            "The cluster has drifted: plan again."
        )
    moves = doc.get("moves")
    if not isinstance(moves, list):
        raise SchemaError("A plan document needs a 'moves' list.")
    node_index = state.cluster.node_index()
    shard_index = state.shards.id_index()
    reason_index = {r: i for i, r in enumerate(REASONS)}
    n = len(moves)
    shard = np.empty(n, dtype=np.int64)
    source = np.empty(n, dtype=np.int64)
    target = np.empty(n, dtype=np.int64)
    reason = np.empty(n, dtype=np.int8)
    unknown: list[str] = []
    for k, m in enumerate(moves):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("shard"), str)
            or not isinstance(m.get("to"), str)
        ):
            raise SchemaError(
                f"moves[{k}] needs 'shard' and 'to' (ids) and 'from' (an id or null)."
            )
        s = shard_index.get(m["shard"])
        b = node_index.get(m["to"])
        a_id = m.get("from")
        a = -1 if a_id is None else node_index.get(a_id) if isinstance(a_id, str) else None
        if s is None or b is None or a is None:
            unknown.append(f"moves[{k}]")
            continue
        shard[k], source[k], target[k] = s, a, b
        reason[k] = reason_index.get(str(m.get("reason")), reason_index["balance"])
    if unknown:
        raise UnknownIdError(
            f"Plan moves name shards or nodes not in the state: {format_ids(unknown)}."
        )
    nodes = apply_moves(state.placement.nodes, shard, source, target)
    size = state.shards.demand[shard, state.cluster.size_index]
    wave = _waves_from_document(doc.get("waves"), n)
    return Plan(
        state_sha256=str(digest),
        shard=shard,
        source=source,
        target=target,
        size_bytes=size,
        cost=transfer_cost(state, state.placement.nodes, shard, target),
        reason=reason,
        target_nodes=nodes,
        lower_bound_bytes=float((doc.get("summary") or {}).get("lower_bound_bytes") or 0.0),
        wave=wave,
    )


def _waves_from_document(waves: Any, n_moves: int) -> np.ndarray | None:
    """The wave of each move from a document's ``waves`` (lists of move indices), checked:
    every move in exactly one wave. Empty waves are dropped."""
    if waves is None:
        return None
    if not isinstance(waves, list) or not all(isinstance(w, list) for w in waves):
        raise SchemaError("A plan's 'waves' must be a list of lists of move indices.")
    wave = np.full(n_moves, -1, dtype=np.int64)
    repeated: list[int] = []
    bad: list[object] = []
    k = 0
    for members in waves:
        if not members:
            continue
        for i in members:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_moves:
                bad.append(i)
            elif wave[i] >= 0:
                repeated.append(i)
            else:
                wave[i] = k
        k += 1
    if bad:
        raise InvalidValueError(
            f"waves name moves that do not exist: {format_ids(bad)} (moves are 0..{n_moves - 1})."
        )
    if repeated:
        raise InvalidValueError(
            f"waves list moves {format_ids(repeated)} more than once; each move belongs to "
            "exactly one wave."
        )
    missing = np.flatnonzero(wave < 0)
    if missing.size:
        raise InvalidValueError(
            f"waves leave out moves {format_ids(missing.tolist())}; list every move in "
            "exactly one wave, or omit 'waves'."
        )
    return wave


def load_plan(path: str | os.PathLike[str], state: State, *, check_hash: bool = True) -> Plan:
    """Read a plan document from a JSON file (see :func:`plan_from_document`)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise SchemaError(f"Plan file {os.fspath(path)!r} does not exist.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"Cannot read plan file {os.fspath(path)!r}: {exc}.") from None
    return plan_from_document(doc, state, check_hash=check_hash)
