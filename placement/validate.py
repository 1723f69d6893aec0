"""Independent safety checks of a plan or a schedule, approval limits and drift.

:func:`validate` replays a plan move by move, wave by wave, in plain Python, and lists
every safety violation with its wave and move. It shares the *meaning* of each rule with
the engine and the scheduler (:mod:`placement.constraints`, and the execution model of
:mod:`placement.schedule`) but none of their code paths: the replay keeps each shard's
replicas in a Python set, each node's load in an array updated one move at a time, and
recounts domains and regions with :class:`collections.Counter`. Only the final placement
goes through :func:`placement.constraints.check`, which *is* the meaning of a valid
placement.

What is checked, for each wave (a plan without waves runs one move per wave, in order):

======================  ==================================================================
kind                    violation
======================  ==================================================================
drift                   the plan was made for another state (``state_sha256``)
source-not-replica      a move's source does not hold the shard when the wave starts
no-free-slot            a created replica (source null) for a fully replicated shard
target-holds-replica    the target already holds the shard
target-not-active       the target is failed or draining
pinned                  a pinned replica is moved
no-live-copy            the shard has no live replica to copy from (data lost)
donor-not-live          the named donor (``copy_from``) holds no live replica
transient-capacity      in flight, a node would exceed its full capacity
below-min               a settled state leaves fewer live replicas than
                        ``min(min_available, before)``
spread, regions,        a settled state creates or worsens a spread excess, a region
residency               deficit or a replica outside the allowed regions
shard-concurrency       a wave moves more than one replica of a shard
node-concurrency        a node takes part in more transfers than allowed in a wave
bytes-in-flight         a wave copies more than the cap (a single larger move may run alone)
budget                  more moves or bytes than the budget
waves                   the waves do not list each move exactly once
final-<kind>            the final placement violates a hard constraint
target-mismatch         the replay does not end at the plan's target placement
======================  ==================================================================

Examples
--------
>>> import placement
>>> from placement.scenarios import plan_drain
>>> from placement.schedule import schedule
>>> st = placement.synthetic_state(30, 600, seed=1)
>>> new, p = plan_drain(st, [st.cluster.node_ids[0]])
>>> validate(new, schedule(new, p)).ok
True
>>> report = validate(new, p, max_moves=1)
>>> report.ok, report.counts()["budget"]
(False, 1)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.constraints import check, node_load
from placement.errors import InvalidValueError, StateDriftError
from placement.model import NodeState, State
from placement.plan import Plan
from placement.schedule import Schedule

__all__ = [
    "Approval",
    "Issue",
    "ValidationReport",
    "approval",
    "ensure_current",
    "validate",
]

_TOL = 1e-9


@dataclass(frozen=True)
class Issue:
    """One safety violation: its kind, where it happens (wave, move) and what it concerns."""

    kind: str
    message: str
    wave: int | None = None
    move: int | None = None
    shard: str | None = None
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def __str__(self) -> str:
        where = []
        if self.wave is not None:
            where.append(f"wave {self.wave}")
        if self.move is not None:
            where.append(f"move {self.move}")
        return f"{', '.join(where) + ': ' if where else ''}{self.kind}: {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    """Every violation found by :func:`validate`; ``ok`` when there is none."""

    issues: tuple[Issue, ...]
    n_moves: int
    n_waves: int

    @property
    def ok(self) -> bool:
        return not self.issues

    def counts(self) -> dict[str, int]:
        """Number of issues of each kind, in order of first appearance."""
        return dict(Counter(i.kind for i in self.issues))

    def to_dict(self, *, limit: int | None = None) -> dict[str, Any]:
        shown = self.issues if limit is None else self.issues[:limit]
        return {
            "ok": self.ok,
            "moves": self.n_moves,
            "waves": self.n_waves,
            "counts": self.counts(),
            "issues": [i.to_dict() for i in shown],
        }

    def to_text(self, *, limit: int | None = 50) -> str:
        if self.ok:
            return f"ok: {self.n_moves} moves in {self.n_waves} waves, no safety violation"
        shown = self.issues if limit is None else self.issues[:limit]
        counts = ", ".join(f"{k} x{n}" for k, n in self.counts().items())
        lines = [f"{len(self.issues)} safety violations ({counts}):"]
        lines += [f"  {issue}" for issue in shown]
        if len(shown) < len(self.issues):
            lines.append(f"  ... and {len(self.issues) - len(shown)} more")
        return "\n".join(lines)


# -- validate -------------------------------------------------------------------------


def validate(
    state: State,
    plan: Plan | Schedule,
    /,
    *,
    donors: Sequence[int] | np.ndarray | None = None,
    max_concurrent_per_node: int | None = None,
    max_bytes_in_flight: float | None = None,
    max_moves_per_shard_per_wave: int = 1,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    check_hash: bool = True,
) -> ValidationReport:
    """Replay a plan or schedule against *state* and list every safety violation.

    Parameters
    ----------
    state : State
        The state the plan starts from.
    plan : Plan or Schedule
        A plan (its ``wave`` field, if set, gives the waves; else one move per wave in
        order) or a schedule (its waves and donors).
    donors : sequence of int, optional
        Node each move copies from (-1 for none), e.g. read from ``copy_from``; default
        the schedule's, else the source when it is live, else any live replica.
    max_concurrent_per_node : int, optional
        Transfers per node and wave; default ``state.policy.max_concurrent_per_node``.
    max_bytes_in_flight : float, optional
        Bytes copied per wave (a single larger move may run alone).
    max_moves_per_shard_per_wave : int
        Replicas of one shard moved in one wave (1: the scheduler's rule).
    max_moves, max_bytes : optional
        Budget of the whole plan.
    check_hash : bool
        Report a plan made for another state as ``drift``.

    Returns
    -------
    ValidationReport
    """
    if isinstance(plan, Schedule):
        if donors is None:
            donors = plan.donor
        plan = plan.plan
    conc = (
        state.policy.max_concurrent_per_node
        if max_concurrent_per_node is None
        else max_concurrent_per_node
    )
    return _Replay(
        state, plan, donors, conc, max_bytes_in_flight, max_moves_per_shard_per_wave
    ).run(max_moves=max_moves, max_bytes=max_bytes, check_hash=check_hash)


class _Replay:
    """The step-by-step simulation (plain Python: independent of the vectorized engine)."""

    def __init__(
        self,
        state: State,
        plan: Plan,
        donors: Sequence[int] | np.ndarray | None,
        conc: int,
        max_flight: float | None,
        per_shard: int,
    ) -> None:
        c, s = state.cluster, state.shards
        self.state, self.plan = state, plan
        self.conc, self.max_flight, self.per_shard = conc, max_flight, per_shard
        self.node_ids, self.shard_ids = c.node_ids, s.ids
        self.node_state = c.state.tolist()
        self.domain = c.domain_of[:, state.spread_level_index].tolist()
        self.region = c.region_of.tolist()
        self.allowed = s.allowed_regions.tolist()
        self.res_class = s.residency_class.tolist()
        self.replicas = s.replicas.tolist()
        self.min_available = s.min_available.tolist()
        self.k = state.policy.max_per_domain
        self.min_regions = state.policy.min_regions
        self.capacity = c.capacity
        self.demand = s.demand
        self.size = s.demand[:, c.size_index]
        self.resources = c.resources
        self.donors = None if donors is None else [int(d) for d in donors]
        nodes = state.placement.nodes
        pin_rows, pin_cols = np.nonzero(state.placement.pinned)
        self.pinned = {(int(r), int(nodes[r, j])) for r, j in zip(pin_rows, pin_cols, strict=True)}
        self.rows: dict[int, set[int]] = {}
        self.issues: list[Issue] = []

    # -- helpers -----------------------------------------------------------------------
    def row(self, s: int) -> set[int]:
        got = self.rows.get(s)
        if got is None:
            got = {int(n) for n in self.state.placement.nodes[s].tolist() if n >= 0}
            self.rows[s] = got
        return got

    def alive(self, n: int) -> bool:
        return self.node_state[n] != NodeState.FAILED

    def status(self, s: int, nodes: set[int]) -> tuple[int, int, int, int]:
        """(live replicas, spread excess, region deficit, replicas outside residency)."""
        live = [n for n in nodes if self.alive(n)]
        per_domain = Counter(self.domain[n] for n in live)
        excess = sum(max(0, v - self.k) for v in per_domain.values())
        regions = {self.region[n] for n in live}
        deficit = max(0, min(self.min_regions, self.replicas[s]) - len(regions))
        allowed = self.allowed[self.res_class[s]]
        outside = sum(1 for n in live if not allowed[self.region[n]])
        return len(live), excess, deficit, outside

    def add(self, kind: str, message: str, **where: Any) -> None:
        self.issues.append(Issue(kind, message, **where))

    def describe(self, k: int) -> str:
        s, a, b = int(self.plan.shard[k]), int(self.plan.source[k]), int(self.plan.target[k])
        src = self.node_ids[a] if a >= 0 else "(new)"
        return f"shard {str(self.shard_ids[s])!r} {src} -> {self.node_ids[b]}"

    def waves(self) -> list[list[int]]:
        p = self.plan
        if p.wave is None:
            return [[k] for k in range(p.n_moves)]
        wave = [int(w) for w in np.asarray(p.wave).tolist()]
        bad = [k for k, w in enumerate(wave) if w < 0]
        if len(wave) != p.n_moves or bad:
            self.add("waves", f"the waves do not place every move (moves {bad[:5]} have none)")
        groups: dict[int, list[int]] = {}
        for k, w in enumerate(wave):
            if w >= 0:
                groups.setdefault(w, []).append(k)
        return [groups[w] for w in sorted(groups)]

    # -- the replay ----------------------------------------------------------------------
    def run(
        self, *, max_moves: int | None, max_bytes: float | None, check_hash: bool
    ) -> ValidationReport:
        p, st = self.plan, self.state
        if check_hash and p.state_sha256 != st.sha256():
            self.add(
                "drift",
                f"the plan was made for state {p.state_sha256[:12]}..., not this one "
                f"({st.sha256()[:12]}...): plan again",
            )
        if self.donors is not None and len(self.donors) != p.n_moves:
            raise InvalidValueError(
                f"donors has {len(self.donors)} entries for {p.n_moves} moves; give one per move."
            )
        if max_moves is not None and p.n_moves > max_moves:
            self.add("budget", f"{p.n_moves} moves, above the budget of {max_moves}")
        total = float(self.size[p.shard].sum()) if p.n_moves else 0.0
        if max_bytes is not None and total > max_bytes * (1 + _TOL):
            self.add(
                "budget",
                f"{total / 1e9:,.1f} GB moved, above the budget of {max_bytes / 1e9:,.1f} GB",
            )
        self.load = node_load(st, st.placement.nodes)
        waves = self.waves()
        for w, moves in enumerate(waves):
            self.wave(w if p.wave is not None else None, moves)
        self.final()
        return ValidationReport(tuple(self.issues), p.n_moves, len(waves))

    def wave(self, w: int | None, moves: list[int]) -> None:
        p = self.plan
        start_load = self.load  # not changed until the moves settle, below
        in_flight: dict[int, np.ndarray] = {}
        transfers: Counter[int] = Counter()
        per_shard: Counter[int] = Counter()
        flight_bytes = 0.0
        applicable: list[int] = []
        for k in moves:
            s, a, b = int(p.shard[k]), int(p.source[k]), int(p.target[k])
            where = {"wave": w, "move": k, "shard": str(self.shard_ids[s])}
            row = self.row(s)
            what = self.describe(k)
            ok = True
            if a >= 0 and a not in row:
                self.add(
                    "source-not-replica",
                    f"{what}: the source holds no replica",
                    **where,
                    node=self.node_ids[a],
                )
                ok = False
            if a < 0 and len(row) >= self.replicas[s]:
                self.add(
                    "no-free-slot", f"{what}: the shard already has {len(row)} replicas", **where
                )
                ok = False
            if b in row:
                self.add(
                    "target-holds-replica",
                    f"{what}: the target already holds it",
                    **where,
                    node=self.node_ids[b],
                )
                ok = False
            if self.node_state[b] != NodeState.ACTIVE:
                state_name = NodeState(self.node_state[b]).name.lower()
                self.add(
                    "target-not-active",
                    f"{what}: the target is {state_name}",
                    **where,
                    node=self.node_ids[b],
                )
            if a >= 0 and (s, a) in self.pinned:
                self.add("pinned", f"{what}: the replica is pinned", **where, node=self.node_ids[a])
            per_shard[s] += 1
            if per_shard[s] == self.per_shard + 1:
                self.add(
                    "shard-concurrency",
                    f"{what}: more than {self.per_shard} move(s) of the shard in one wave",
                    **where,
                )
            donor = self.donor_of(k, s, a, row, where, what)
            if donor >= 0:
                transfers[donor] += 1
                flight_bytes += float(self.size[s])
            transfers[b] += 1
            # In flight: the target holds the copy while every source still holds its own.
            acc = in_flight.get(b)
            acc = self.demand[s].copy() if acc is None else acc + self.demand[s]
            in_flight[b] = acc
            over = (start_load[b] + acc) > self.capacity[b] * (1 + _TOL)
            if over.any():
                r = int(np.flatnonzero(over)[0])
                self.add(
                    "transient-capacity",
                    f"{what}: in flight node {self.node_ids[b]!r} would hold "
                    f"{float(start_load[b, r] + acc[r]):.4g} {self.resources[r]} of its "
                    f"{float(self.capacity[b, r]):.4g} capacity",
                    **where,
                    node=self.node_ids[b],
                )
            for n in {b, donor} - {-1}:
                if transfers[n] == self.conc + 1:
                    self.add(
                        "node-concurrency",
                        f"{what}: node {self.node_ids[n]!r} takes part in more than "
                        f"{self.conc} transfers in this wave",
                        **where,
                        node=self.node_ids[n],
                    )
            if (
                self.max_flight is not None
                and flight_bytes > self.max_flight * (1 + _TOL)
                and len(moves) > 1
                and flight_bytes - float(self.size[s]) <= self.max_flight * (1 + _TOL)
            ):
                self.add(
                    "bytes-in-flight",
                    f"{what}: the wave copies more than {self.max_flight / 1e9:,.1f} GB",
                    **where,
                )
            if ok:
                applicable.append(k)
        # Settled states: the moves complete one by one (copy, then delete the source).
        for k in applicable:
            s, a, b = int(p.shard[k]), int(p.source[k]), int(p.target[k])
            row = self.row(s)
            before = self.status(s, row)
            if a >= 0:
                row.discard(a)
                self.load[a] -= self.demand[s]
            row.add(b)
            self.load[b] += self.demand[s]
            after = self.status(s, row)
            where = {"wave": w, "move": k, "shard": str(self.shard_ids[s])}
            what = self.describe(k)
            if after[0] < min(self.min_available[s], before[0]):
                self.add(
                    "below-min",
                    f"{what}: {after[0]} live replicas left (min_available {self.min_available[s]})",
                    **where,
                )
            for idx, kind, noun in (
                (1, "spread", "replicas above max_per_domain"),
                (2, "regions", "regions missing"),
                (3, "residency", "replicas outside the allowed regions"),
            ):
                if after[idx] > 0 and after[idx] > before[idx]:
                    self.add(kind, f"{what}: {before[idx]} -> {after[idx]} {noun}", **where)

    def donor_of(
        self, k: int, s: int, a: int, row: set[int], where: dict[str, Any], what: str
    ) -> int:
        live = sorted(n for n in row if self.alive(n))
        if self.donors is not None:
            d = self.donors[k]
            if d >= 0 and d not in live:
                self.add(
                    "donor-not-live",
                    f"{what}: donor {self.node_ids[d]!r} holds no live replica",
                    **where,
                    node=self.node_ids[d],
                )
            if d < 0 and live:
                self.add(
                    "donor-not-live", f"{what}: no donor named though live replicas exist", **where
                )
            if d >= 0 or live:
                return d
        elif live:
            return a if a in live else live[0]
        self.add("no-live-copy", f"{what}: the shard has no live replica to copy from", **where)
        return -1

    def final(self) -> None:
        st, p = self.state, self.plan
        nodes = st.placement.nodes.copy()
        for s, row in self.rows.items():
            listed = sorted(row)
            nodes[s] = -1
            nodes[s, : len(listed)] = listed
        v = check(st, nodes)
        for kind, items in v.describe(st, limit=20).items():
            n = v.counts()[kind]
            if n:
                sample = "; ".join(_short(x) for x in items[:5])
                self.add(f"final-{kind}", f"{n} in the final placement (e.g. {sample})")
        a = np.sort(nodes, axis=1)
        b = np.sort(p.target_nodes, axis=1) if p.target_nodes.shape == nodes.shape else None
        if b is None or not np.array_equal(a, b):
            differ = (
                np.flatnonzero((a != b).any(axis=1)) if b is not None else np.arange(nodes.shape[0])
            )
            self.add(
                "target-mismatch",
                f"the replay ends elsewhere than the plan's target placement for "
                f"{differ.size} shards (e.g. {', '.join(repr(str(self.shard_ids[i])) for i in differ[:3])})",
            )


def _short(item: Mapping[str, object]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in item.items()
    )


# -- approval and drift -----------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """Whether a plan needs a human's approval before it runs, and why.

    Attributes
    ----------
    required : bool
    reasons : tuple of str
        One line per limit exceeded.
    bytes_moved, cross_region_bytes : float
    cluster_share : float
        Bytes moved over the bytes stored in the cluster (all listed replicas).
    limits : dict
        The limits applied (None: not checked).
    """

    required: bool
    reasons: tuple[str, ...]
    bytes_moved: float
    cluster_share: float
    cross_region_bytes: float
    limits: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "reasons": list(self.reasons),
            "bytes_moved": self.bytes_moved,
            "cluster_share": self.cluster_share,
            "cross_region_bytes": self.cross_region_bytes,
            "limits": dict(self.limits),
        }


def approval(
    state: State,
    plan: Plan | Schedule,
    /,
    *,
    max_bytes: float | None = None,
    max_cluster_share: float | None = None,
    max_cross_region_bytes: float | None = None,
) -> Approval:
    """Mark a plan as needing approval when it exceeds any configured limit.

    Parameters
    ----------
    state : State
    plan : Plan or Schedule
        With a schedule, cross-region bytes follow its chosen donors; with a plan, a
        move crosses regions when no live replica of its shard is in the target's region.
    max_bytes : float, optional
        Bytes moved above which approval is needed.
    max_cluster_share : float, optional
        Share of the cluster's stored bytes (0..1) above which approval is needed.
    max_cross_region_bytes : float, optional
        Default ``state.policy.cross_region_alert_bytes`` (the runbook's 100 GB).

    Examples
    --------
    >>> import placement
    >>> from placement.scenarios import plan_failure
    >>> st = placement.synthetic_state(30, 600, seed=1)
    >>> new, p = plan_failure(st, [st.cluster.node_ids[0]])
    >>> a = approval(new, p, max_cross_region_bytes=0.0)
    >>> a.required, a.reasons[0].startswith("cross-region")
    (True, True)
    >>> approval(new, p, max_cross_region_bytes=float("inf")).required
    False
    """
    c = state.cluster
    for name, value in (
        ("max_bytes", max_bytes),
        ("max_cluster_share", max_cluster_share),
        ("max_cross_region_bytes", max_cross_region_bytes),
    ):
        if value is not None and not (isinstance(value, (int, float)) and value >= 0):
            raise InvalidValueError(f"{name} must be a number >= 0, got {value!r}.")
    cross_limit = (
        state.policy.cross_region_alert_bytes
        if max_cross_region_bytes is None
        else max_cross_region_bytes
    )
    if isinstance(plan, Schedule):
        donor = plan.donor
        plan = plan.plan
        has = donor >= 0
        cross = has & (c.region_of[np.maximum(donor, 0)] != c.region_of[plan.target])
    else:
        rows = state.placement.nodes[plan.shard]
        present = rows >= 0
        safe = np.where(present, rows, 0)
        live = present & c.alive[safe]
        same = (live & (c.region_of[safe] == c.region_of[plan.target][:, None])).any(axis=1)
        cross = live.any(axis=1) & ~same
    moved = plan.bytes_moved
    cross_bytes = float(plan.size_bytes[cross].sum())
    stored = float(node_load(state, state.placement.nodes)[:, c.size_index].sum())
    share = moved / stored if stored > 0 else (0.0 if moved == 0 else math.inf)
    reasons = []
    if cross_bytes > cross_limit:
        reasons.append(
            f"cross-region bytes {cross_bytes / 1e9:,.1f} GB above {cross_limit / 1e9:,.1f} GB"
        )
    if max_bytes is not None and moved > max_bytes:
        reasons.append(f"bytes moved {moved / 1e9:,.1f} GB above {max_bytes / 1e9:,.1f} GB")
    if max_cluster_share is not None and share > max_cluster_share:
        reasons.append(f"moves {share:.1%} of the cluster's bytes, above {max_cluster_share:.1%}")
    return Approval(
        required=bool(reasons),
        reasons=tuple(reasons),
        bytes_moved=moved,
        cluster_share=share,
        cross_region_bytes=cross_bytes,
        limits={
            "max_bytes": max_bytes,
            "max_cluster_share": max_cluster_share,
            "max_cross_region_bytes": cross_limit,
        },
    )


def ensure_current(plan: Plan | Schedule | Mapping[str, Any], state: State) -> None:
    """Refuse to execute a plan made for another state than the current one.

    An executor calls this with the state it observes just before it starts (and
    between waves): a plan is only safe against the state it was made for.

    Raises
    ------
    StateDriftError
        The plan's ``state_sha256`` is not the hash of *state*.

    Examples
    --------
    >>> import placement
    >>> from placement.planner import plan
    >>> from placement.scenarios import with_node_state
    >>> st = placement.synthetic_state(30, 300, seed=2)
    >>> p = plan(st, max_moves=3)
    >>> ensure_current(p, st)
    >>> ensure_current(p, with_node_state(st, [st.cluster.node_ids[0]], "draining"))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    placement.errors.StateDriftError: The plan was made for state ...
    """
    if isinstance(plan, Schedule):
        digest = plan.plan.state_sha256
    elif isinstance(plan, Plan):
        digest = plan.state_sha256
    else:
        digest = str(plan.get("state_sha256"))
    current = state.sha256()
    if digest != current:
        raise StateDriftError(
            f"The plan was made for state {digest[:12]}..., but the cluster is now in state "
            f"{current[:12]}...: it has drifted since planning. Refusing to execute; plan "
            "(or resume) again from the current state."
        )
