"""Large-neighbourhood search: CP-SAT re-solves small groups of nodes of a finished plan.

The fast engine ends where its moves and trades stop paying; on small clusters that is
up to 9% more bytes than exact mode finds (20 nodes x 2,000 shards, rebalance to 2%).
:func:`improve` takes the engine's target placement and, neighbourhood by neighbourhood,
lets :func:`~placement.solvers.exact.solve_subproblem` re-place every replica that sits
on a few nodes over those same nodes, everything else fixed. The objective is the exact
model's, in its order (balance excess, then bytes moved, then transfer cost), counted
for the whole plan against the start placement, budgets included; a neighbourhood's
answer replaces the working rows only when it is strictly better, so the result is
never worse than its start and satisfies every hard rule the model encodes.

Which neighbourhoods
--------------------
*Balance first*, while the plan is over the goal: the k most pressured nodes with the
least pressured ones (k = 1 .. size-1), and with nodes drawn from the less pressured
half, in neighbourhoods of 2 to 6 nodes, smallest first, back to 2 after every drop of
the peak. The peak falls only if every node above the new peak gives load at once; in a
cluster squeezed just over the goal in two resources (15 nodes x 500 shards, 2%: every
node between 1.020 and 1.024) a neighbourhood with one of the top nodes cannot lower it.

*Then bytes*, pairs of nodes first. A pair holds about 2/N of the replicas, so CP-SAT
proves most pairs optimal in a tenth of a second (measured at 20 x 2,000: 0.07-0.2 s,
against 1 s that did not suffice for four nodes), and a pair is where a trade lives:
one node gives a large replica back and takes a smaller one, or gives the iops-heavy
one of two.

* Pairs whose nodes exchanged bytes in the plan come first, the most bytes first; then
  every other pair with a node that the plan touched (a source or a target) or that sits
  above the goal, in an order drawn from the seed. Two untouched nodes under the goal
  can only add bytes, so they are never paired.
* A neighbourhood is solved again only when one of its nodes changed since its last
  solve (a version per node): a pass after an improvement costs what changed, not all
  pairs again.
* When a whole pass of pairs improves nothing, triples are tried (each touched node
  with two others, drawn from the seed); an improvement there sends the search back to
  pairs. A pass of triples without improvement ends the search: no pair or drawn triple
  can improve the plan (``stopped == "converged"``).

Each neighbourhood is one :func:`~placement.solvers.exact.solve_subproblem` call with
its three stages; the transfer-cost stage, a tie-break, gets a fifth of the step's work
(at tier S it used to run out its whole limit in 15 of 25 pairs).

Determinism
-----------
Each neighbourhood runs one CP-SAT worker with a deterministic-time limit
(``step_work_s``), so with ``max_steps`` (or a search that converges) the same seed
gives the same rows on any machine. A wall-clock ``time_limit_s`` that cuts the search
short makes the result depend on the machine's speed, as with every anytime solver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.constraints import node_load
from placement.model import State
from placement.solvers.exact import PRESSURE_STEPS, objective_of, solve_subproblem

__all__ = ["LnsResult", "improve"]

#: CP-SAT deterministic seconds per neighbourhood; pairs at 20 x 2,000 need 0.02-0.3.
#: More, shorter steps won in 60 s (20 x 2,000 rebalance: 6,378 GB at 0.5, 6,309 at 0.25,
#: 6,291 at 0.1, 6,334 at 0.05; tier S add 10%: 61.33, 61.03 and 60.79 TB at 0.5, 0.1
#: and 0.05).
STEP_WORK_S = 0.1
#: Share of a step's deterministic time the transfer-cost stage (a tie-break) may use. At
#: tier S (add 10%) it ran out its whole limit in 15 of 25 pairs, as long as the bytes
#: stage that matters.
COST_WORK_SHARE = 0.2
#: Largest neighbourhood tried (nodes); four-node neighbourhoods rarely finish in a second.
MAX_NODES = 3
#: Balance phase: largest neighbourhood, and drawn neighbourhoods per size and number
#: of top nodes.
MAX_BALANCE_NODES = 6
BALANCE_DRAWS = 4
#: First, on clusters of up to BALANCE_ALL_NODES_UP_TO active nodes, neighbourhoods of
#: every node and BALANCE_SHARDS shards of the top third, until BALANCE_SHARD_TRIES in a
#: row do not lower the peak.
BALANCE_ALL_NODES_UP_TO = 50
BALANCE_SHARDS = 60
BALANCE_SHARD_TRIES = 5
#: Those neighbourhoods hold every node: they get this many steps' work.
BALANCE_SHARD_WORK = 10.0
#: Pairs and triples per pass are capped at this many per candidate node, so that a pass
#: over a large cluster ends (a pair costs about 0.1 s at 300 replicas per node).
PER_NODE = 20


@dataclass(frozen=True)
class LnsResult:
    """What :func:`improve` did.

    Attributes
    ----------
    rows : ndarray of int32, shape (S, W)
        The improved placement (the input rows when nothing better was found).
    objective_before, objective : dict
        The exact model's terms (``excess_pressure``, ``bytes_moved``, ``transfer_cost``)
        of the input rows and of *rows*.
    steps : int
        Neighbourhoods solved.
    improved : int
        Neighbourhoods whose answer was kept.
    stopped : str
        ``"converged"`` (no pair and no drawn triple improves), ``"steps"``
        (*max_steps* reached), ``"time"`` or ``"progress"`` (the callback said stop).
    time_s : float
        Wall-clock seconds.
    """

    rows: np.ndarray
    objective_before: dict[str, float]
    objective: dict[str, float]
    steps: int
    improved: int
    stopped: str
    time_s: float


def _key(objective: dict[str, float]) -> tuple[int, float, float]:
    # Balance in the model's own steps, so that float noise below one step does not
    # rank two placements the model calls equally balanced.
    return (
        int(round(objective["excess_pressure"] * PRESSURE_STEPS)),
        objective["bytes_moved"],
        objective["transfer_cost"],
    )


def _better(new: dict[str, float], old: dict[str, float]) -> bool:
    a, b = _key(new), _key(old)
    if a[0] != b[0]:
        return a[0] < b[0]
    # Bytes and cost are float sums of the same values in another order: demand a change
    # above their rounding noise.
    if abs(a[1] - b[1]) > 1e-9 * max(abs(b[1]), 1.0):
        return a[1] < b[1]
    return a[2] < b[2] - 1e-9 * max(abs(b[2]), 1.0)


def _moves(start: np.ndarray, rows: np.ndarray) -> int:
    """Replicas in *rows* that are not in the start row of their shard."""
    changed = np.flatnonzero((rows != start).any(axis=1))
    a, b = rows[changed], start[changed]
    return int(((a[:, :, None] != b[:, None, :]).all(axis=2) & (a >= 0)).sum())


def _candidates(
    state: State, start: np.ndarray, rows: np.ndarray, weights: np.ndarray, target: float
) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """Touched or peak active nodes, and the bytes each pair of nodes exchanged.

    Per changed shard, the k-th node it left (in node order) is paired with the k-th
    node it reached, as the plan's diff pairs them."""
    c, s = state.cluster, state.shards
    n = c.n_nodes
    changed = np.flatnonzero((rows != start).any(axis=1))
    a, b = start[changed], rows[changed]
    gone = (a >= 0) & ~(a[:, :, None] == b[:, None, :]).any(axis=2)
    came = (b >= 0) & ~(b[:, :, None] == a[:, None, :]).any(axis=2)
    touched = np.zeros(n, dtype=bool)
    touched[a[gone]] = True
    touched[b[came]] = True
    left = np.sort(np.where(gone, a, n), axis=1)  # n sorts last: "no node"
    reached = np.sort(np.where(came, b, n), axis=1)
    pair = (left < n) & (reached < n)
    lo = np.minimum(left, reached)[pair].astype(np.int64)
    hi = np.maximum(left, reached)[pair].astype(np.int64)
    size = np.broadcast_to(s.demand[changed, c.size_index][:, None], left.shape)[pair]
    keep = c.active[lo] & c.active[hi]
    keys, inv = np.unique(lo[keep] * n + hi[keep], return_inverse=True)
    sums = np.bincount(inv, weights=size[keep], minlength=keys.size)
    pair_bytes = {
        (int(k) // n, int(k) % n): float(v)
        for k, v in zip(keys.tolist(), sums.tolist(), strict=True)
    }
    # Nodes over the goal matter while the balance goal is not reached.
    peak = c.active & (_pressure(state, rows, weights) > 1 + target + 1 / PRESSURE_STEPS)
    cand = np.flatnonzero(c.active & (touched | peak))
    return cand, pair_bytes


def _pressure(state: State, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per node, the largest weighted utilization over the cluster mean (the balance
    measure of the engine and of the exact model)."""
    c, s = state.cluster, state.shards
    load = node_load(state, rows)
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    act_cap = c.capacity[c.active].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(act_cap > 0, total / act_cap, 0.0)
        pressure = np.where(
            (c.capacity > 0) & (mean > 0)[None, :],
            weights[None, :] * load / (c.capacity * mean[None, :]),
            0.0,
        )
    return pressure.max(axis=1)


def _by_pressure(state: State, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Active nodes, most pressured first."""
    pressure = _pressure(state, rows, weights)
    act = np.flatnonzero(state.cluster.active)
    return act[np.argsort(-pressure[act], kind="stable")]


def _balance_neighbourhoods(
    size: int, ranked: np.ndarray, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """The k most pressured nodes with the size-k least pressured, for k = 1..size-1,
    then the k most pressured with nodes drawn from the less pressured half.

    The peak falls only if every node above the new peak gives load at once: when the
    top nodes sit within a few hundredths of a point of each other (a cluster squeezed
    just over the goal in two resources), a neighbourhood with one of them cannot lower
    the maximum however it re-places its replicas."""
    out: dict[tuple[int, ...], None] = {}
    if ranked.size < size:
        return []
    half = ranked[ranked.size // 2 :]
    for k in range(1, size):
        top = ranked[:k].tolist()
        out.setdefault(tuple(sorted([*top, *ranked[ranked.size - (size - k) :].tolist()])), None)
        pool = half[~np.isin(half, ranked[:k])]
        for _ in range(BALANCE_DRAWS):
            if pool.size < size - k:
                break
            pick = rng.choice(pool, size=size - k, replace=False).tolist()
            out.setdefault(tuple(sorted([*top, *pick])), None)
    return list(out)


def _neighbourhoods(
    size: int, cand: np.ndarray, active: np.ndarray, pair_bytes: dict, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """Neighbourhoods of *size* nodes for one pass, in the order they are tried."""
    others = np.flatnonzero(active)
    cap = PER_NODE * max(cand.size, 1)
    if size == 2:
        first = sorted(pair_bytes, key=lambda k: (-pair_bytes[k], k))
        rest: list[tuple[int, ...]] = []
        if cand.size * others.size <= 4 * cap:
            for a in cand.tolist():
                rest.extend((min(a, b), max(a, b)) for b in others.tolist() if b != a)
        else:  # large clusters: each candidate with PER_NODE drawn partners
            partner = others[rng.integers(others.size, size=(cand.size, PER_NODE))]
            mine = np.broadcast_to(cand[:, None], partner.shape)
            ok = partner != mine
            lo, hi = np.minimum(mine, partner)[ok], np.maximum(mine, partner)[ok]
            rest = list(zip(lo.tolist(), hi.tolist(), strict=True))
        rest = sorted(set(rest) - set(first))
        order = rng.permutation(len(rest))
        out = first + [rest[i] for i in order]
        return out[: max(cap, len(first))]
    drawn: dict[tuple[int, ...], None] = {}  # insertion-ordered set: the drawn order
    for _ in range(cap):
        a = int(cand[rng.integers(cand.size)])
        pool = others[others != a]
        if pool.size < size - 1:
            break
        nb = tuple(sorted([a, *rng.choice(pool, size=size - 1, replace=False).tolist()]))
        drawn.setdefault(nb, None)
    return list(drawn)


def improve(
    state: State,
    rows: np.ndarray,
    *,
    weights: np.ndarray,
    target_imbalance: float = 0.02,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    time_limit_s: float = 10.0,
    seed: int = 0,
    max_steps: int | None = None,
    step_work_s: float = STEP_WORK_S,
    progress: Callable[[dict[str, Any]], bool | None] | None = None,
) -> LnsResult:
    """Improve a valid placement by CP-SAT over neighbourhoods of two or three nodes.

    Parameters
    ----------
    state : State
        The problem; ``state.placement`` is where the plan starts (bytes and budgets
        count from there).
    rows : ndarray of int, shape (S, W)
        A placement that satisfies every hard rule, slot-aligned with the start (for
        example ``plan(state).target_nodes``).
    weights : ndarray, shape (R,)
        Balance weight per resource, as :func:`~placement.solvers.options.check_options`
        returns it.
    target_imbalance, max_moves, max_bytes, max_moves_per_node, max_moves_per_group
        As in :func:`placement.planner.plan`.
    time_limit_s : float
        Wall-clock limit of the whole search.
    seed : int
        Orders the neighbourhoods and seeds CP-SAT.
    max_steps : int, optional
        Most neighbourhoods to solve; with it the result is reproducible.
    step_work_s : float
        CP-SAT deterministic seconds per neighbourhood.
    progress : callable, optional
        Called after every neighbourhood with ``phase="lns"``, ``done``, ``total``,
        ``moves``, ``bytes_moved`` and ``excess_pressure``; returning False stops the
        search.

    Returns
    -------
    LnsResult

    Examples
    --------
    >>> import numpy as np, placement
    >>> from placement.planner import plan
    >>> st = placement.synthetic_state(15, 300, seed=2)
    >>> fast = plan(st)
    >>> res = improve(st, fast.target_nodes, weights=np.ones(2), max_steps=30)
    >>> before, after = res.objective_before, res.objective
    >>> after["excess_pressure"] < before["excess_pressure"]  # balance comes first
    True
    >>> res.steps, res.stopped
    (30, 'steps')
    """
    search = _Search(
        state,
        rows,
        weights=weights,
        target=float(target_imbalance),
        budget=dict(
            max_moves=max_moves,
            max_bytes=max_bytes,
            max_moves_per_node=max_moves_per_node,
            max_moves_per_group=max_moves_per_group,
        ),
        time_limit_s=time_limit_s,
        seed=seed,
        max_steps=max_steps,
        step_work_s=step_work_s,
        progress=progress,
    )
    try:
        search.balance()
        search.bytes()
        search.stopped = "converged"
    except _Stop as stop:
        search.stopped = str(stop)
    return LnsResult(
        rows=search.cur,
        objective_before=search.before,
        objective=search.obj,
        steps=search.steps,
        improved=search.improved,
        stopped=search.stopped,
        time_s=time.perf_counter() - search.t0,
    )


class _Stop(Exception):
    """The time, the step limit or the progress callback ends the search."""


class _Search:
    """The working placement, its objective and the bookkeeping of solved neighbourhoods."""

    def __init__(
        self,
        state: State,
        rows: np.ndarray,
        *,
        weights: np.ndarray,
        target: float,
        budget: dict[str, Any],
        time_limit_s: float,
        seed: int,
        max_steps: int | None,
        step_work_s: float,
        progress: Callable[[dict[str, Any]], bool | None] | None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.state, self.weights, self.target, self.budget = state, weights, target, budget
        self.weight_map = dict(zip(state.cluster.resources, weights.tolist(), strict=True))
        self.time_limit_s, self.seed, self.max_steps = time_limit_s, seed, max_steps
        self.step_work_s, self.progress = step_work_s, progress
        self.start = state.placement.nodes
        self.cur = np.array(rows, dtype=np.int32, copy=True)
        self.before = objective_of(state, self.cur, target_imbalance=target, weights=weights)
        self.obj = self.before
        self.rng = np.random.default_rng(seed)
        self.version = np.zeros(state.cluster.n_nodes, dtype=np.int64)
        self.solved: dict[tuple[int, ...], tuple[int, ...]] = {}  # nodes -> versions then
        self.steps = self.improved = 0
        self.stopped = "converged"

    def step(
        self, nb: tuple[int, ...], shards: np.ndarray | None = None, work: float = 1.0
    ) -> bool:
        """Solve one neighbourhood (every replica on the nodes *nb*, or only those of
        *shards*) with *work* steps' deterministic time; True when its answer replaced
        the working rows."""
        nodes = np.asarray(nb, dtype=np.int64)
        if shards is None and self.solved.get(nb) == tuple(self.version[nodes].tolist()):
            return False  # nothing in it changed since it was solved
        left = self.time_limit_s - (time.perf_counter() - self.t0)
        if left <= 0.05:
            raise _Stop("time")
        if self.max_steps is not None and self.steps >= self.max_steps:
            raise _Stop("steps")
        if shards is None:
            shards = np.flatnonzero(np.isin(self.cur, nodes).any(axis=1))
        new_rows, res = solve_subproblem(
            self.state,
            self.cur,
            shards,
            nodes,
            **self.budget,
            target_imbalance=self.target,
            weights=self.weight_map,
            time_limit_s=left,
            seed=self.seed + self.steps,
            workers=1,
            deterministic_time=work * self.step_work_s,
            cost_work_share=COST_WORK_SHARE,
        )
        self.steps += 1
        gained = (
            res.nodes is not None
            and "bytes_moved" in res.objective
            and _better(res.objective, self.obj)
        )
        if gained:
            self.cur[shards] = new_rows
            self.obj = res.objective
            self.version[nodes] += 1
            self.improved += 1
        self.solved[nb] = tuple(self.version[nodes].tolist())
        if self.progress is not None:
            info = {
                "phase": "lns",
                "done": self.steps,
                "total": self.max_steps,
                "moves": _moves(self.start, self.cur),
                "bytes_moved": self.obj["bytes_moved"],
                "excess_pressure": self.obj["excess_pressure"],
            }
            if self.progress(info) is False:
                raise _Stop("progress")
        return gained

    def balance(self) -> None:
        """While the goal is not reached, neighbourhoods that can lower the peak.

        On clusters of up to BALANCE_ALL_NODES_UP_TO active nodes: every node at once,
        over BALANCE_SHARDS shards of the most pressured third, until BALANCE_SHARD_TRIES
        in a row do not lower the peak. (15 x 500 at 2%: 0.37 points over the goal, with
        every node between 1.020 and 1.024; two such steps reach the goal, where 60 s of
        growing node neighbourhoods lowered it by 0.02 points. The pair passes then take
        the bytes they added back: 6,562 GB after 60 s, against 6,653 for exact mode.
        Node neighbourhoods first, then these: 6,733 GB.)

        Then, or on larger clusters: the k most pressured nodes with the least pressured,
        in neighbourhoods of 2 to MAX_BALANCE_NODES nodes, back to 2 after every drop of
        the peak, until none of the largest size lowers it.
        """
        tries = 0
        while self.obj["excess_pressure"] > 0 and tries < BALANCE_SHARD_TRIES:
            ranked = _by_pressure(self.state, self.cur, self.weights)
            if ranked.size > BALANCE_ALL_NODES_UP_TO:
                break
            top = ranked[: max(2, ranked.size // 3)]
            pool = np.flatnonzero(np.isin(self.cur, top).any(axis=1))
            pick = self.rng.choice(pool, size=min(BALANCE_SHARDS, pool.size), replace=False)
            excess = _key(self.obj)[0]
            self.step(tuple(sorted(ranked.tolist())), np.sort(pick), BALANCE_SHARD_WORK)
            tries = 0 if _key(self.obj)[0] < excess else tries + 1
        size = 2
        while self.obj["excess_pressure"] > 0 and size <= MAX_BALANCE_NODES:
            ranked = _by_pressure(self.state, self.cur, self.weights)
            excess = _key(self.obj)[0]
            for nb in _balance_neighbourhoods(size, ranked, self.rng):
                if self.step(nb) and _key(self.obj)[0] < excess:
                    size = 2
                    break
            else:
                size += 1

    def bytes(self) -> None:
        """Passes of pairs, then triples, until neither improves (see the module notes)."""
        size = 2
        while True:
            cand, pair_bytes = _candidates(
                self.state, self.start, self.cur, self.weights, self.target
            )
            if cand.size == 0:
                return
            gained = False
            for nb in _neighbourhoods(size, cand, self.state.cluster.active, pair_bytes, self.rng):
                gained |= self.step(nb)
            # The pass ran to its end: pairs again after a gain, else larger neighbourhoods.
            if gained:
                size = 2
            elif size < MAX_NODES:
                size += 1
            else:
                return
