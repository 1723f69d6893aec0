"""The search behind :func:`placement.solvers.reassign.solve_reassignment`.

Private: :class:`_Search` trusts a validated
:class:`~placement.solvers.reassign_problem.ReassignProblem` and a feasible start, which
:func:`~placement.solvers.reassign.solve_reassignment` checks before it builds one.

The search is a heuristic, not an exact method: it starts
from the initial assignment, which must be feasible, and keeps feasibility at every step.
Every candidate is scored in bulk with numpy and every applied change is re-checked
exactly against the incremental state (:meth:`_Search._try`), so scoring shortcuts can
cost quality but never correctness. One *round* runs:

1. **Shift descent**: batches of items are scored against every node at once (exact cost
   change, infeasible targets masked), and the best moves are applied in order of gain,
   sweeping until no shift improves.
2. **Swap descent**: for each node (costliest first) every exchange of one of its items
   with any item elsewhere is scored at once, and each item's best exchange is tried in
   order of gain; one sweep a round, then shift descent again. A node pair unchanged
   since it was last scored is not scored again.
3. **Ejection chains**: item p goes to node b and one item of b leaves for its best node.
   Two sources of p: items returning to an initial node that wastes soft capacity (the
   only way to refill a node whose transient capacity is held by items that left it),
   and the best moves of items on the costliest nodes that b's capacity blocks.
4. **Relocation**: an item of a costly node goes to a node b that would gain if it had
   room and that could hold it once emptied, and items of b are ejected greedily (most
   excess covered for the least cost, each to its best node) until b fits. Transient
   capacity fixes what "once emptied" means: items that leave b still hold theirs, so
   ``b`` can offer at most its capacity less its initial items' transient use.
5. **Large-neighbourhood search** with CP-SAT: 2-4 nodes are chosen, and a bounded set
   of their items (about 100 item-node variables) is re-placed optimally among them,
   every rule and cost term encoded exactly, hinted with the current assignment,
   bounded by deterministic time. Up to 20 neighbourhoods a round, fewer (down to 2)
   while few of them improve. Four ways to choose the nodes, and the number of nodes,
   are drawn by their success so far:

   * *hot*: a node with load cost, with partners that have room where it overflows;
   * *excess*: a node drawn by its *excess*, its share of the cost above the simple
     bound (overflow on a resource the cluster has room for, unused watermark on one it
     is short of, a balance term on the wrong side; the excesses sum to the load and
     balance cost less that bound), with partners that complement it: over its
     watermark where it is under, and the reverse;
   * *home*: a node wasting soft capacity with the nodes holding its departed items;
   * *random*.

   A neighbourhood freed whole that failed is not drawn again until one of its nodes
   changes.
6. **Perturbation** when a round gains (almost) nothing, of one of two kinds drawn by
   how often each led to a new best: *worsen* applies the least-bad worsening shifts
   (below a low quantile of all items' best shifts); *revert* sends a random share of
   the moved items back to their initial nodes (which frees the transient capacity
   they took) and relocates again. The search restarts from the best assignment when
   perturbing has not paid for a few rounds.

The first round starts in two ways and compares them after one shift-swap-shift
descent: plain (whose descent first prices the transient room an item leaves held on
its initial node, then runs on the true cost), and after relocation passes; the
relocated start is kept only if it wins by more than a small share of the cost (it
spends transient capacity, which the cost does not price). Relocating first spends the nodes'
transient capacity on the biggest blocked gains before greedy shifts spend it on small
ones; it wins when a few huge items fit on few nodes, and loses when many mid-sized
items need exchanges that relocation blocks. Only if it wins do *revert*
perturbations relocate.

The best assignment seen is returned. Every random choice comes from
``numpy.random.default_rng(seed)`` and CP-SAT runs on one worker with a deterministic
time limit, so a run that ends on ``max_rounds`` is reproducible bit for bit; a run that
ends on ``time_limit_s`` stops after a machine-dependent number of rounds.

Several searches of one solve (``workers``) share their best through a :class:`_Board`
in shared memory; the processes are started by the façade.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from placement.solvers.reassign_problem import _I64, ReassignProblem, _arrival_room, _usage

# On Linux, fork shares the problem's arrays copy-on-write and never re-imports the caller's
# main module. Elsewhere fork is unsafe (macOS system libraries) or absent, and spawn
# re-imports the caller's script, which needs the usual main guard.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


class _Board:
    """The best assignment found so far by any of the searches of one solve, shared
    between their processes (shared memory, one lock)."""

    def __init__(self, n_items: int) -> None:
        ctx = multiprocessing.get_context(_START_METHOD)
        self.lock = ctx.Lock()
        self.total = ctx.RawValue("q", -1)  # -1: nothing posted yet
        self.assignment = ctx.RawArray("q", n_items)

    def post(self, total: int, assignment: np.ndarray) -> None:
        """Record *assignment* if it beats the board's best."""
        with self.lock:
            if self.total.value < 0 or total < self.total.value:
                np.frombuffer(self.assignment, dtype=np.int64)[:] = assignment
                self.total.value = total

    def better_than(self, total: int) -> tuple[int, np.ndarray] | None:
        """(total, a copy of the assignment) if the board's best beats *total*, else None."""
        with self.lock:
            if 0 <= self.total.value < total:
                return int(self.total.value), np.frombuffer(self.assignment, dtype=np.int64).copy()
        return None


# On Linux, fork shares the problem's arrays copy-on-write and never re-imports the caller's
# main module. Elsewhere fork is unsafe (macOS system libraries) or absent, and spawn
# re-imports the caller's script, which needs the usual main guard.
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


_BIG = np.int64(1) << 62  # score of an infeasible move; far above any real cost change


class _Search:
    """Incremental state of one search. Private: trusts the validated problem."""

    def __init__(self, problem: ReassignProblem, initial: np.ndarray, seed: int) -> None:
        pb = problem
        self.pb = pb
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.N, self.R, self.P, self.G = pb.n_nodes, pb.n_resources, pb.n_items, pb.n_groups
        self.C, self.SC = pb.capacity, pb.soft_capacity
        self.w = pb.soft_capacity_cost
        self.wr = np.flatnonzero(self.w > 0)
        self.T = pb.transient
        self.NT = (~pb.transient).astype(_I64)
        self.has_transient = bool(pb.transient.any())
        self.balances = [
            (int(r1), int(r2), int(t), int(c))
            for (r1, r2), t, c in zip(
                pb.balance_resources, pb.balance_target, pb.balance_cost, strict=True
            )
            if c > 0
        ]
        self.D = pb.demand
        self.init = initial
        self.grp = pb.group
        order = np.argsort(pb.group, kind="stable")
        self.gmem = order
        self.gptr = np.zeros(self.G + 1, dtype=_I64)
        self.gptr[1:] = np.cumsum(np.bincount(pb.group, minlength=self.G))
        self.gsize = np.diff(self.gptr)
        self.loc = pb.spread_domain
        self.L = int(self.loc.max()) + 1 if self.N else 1
        self.dom = pb.dependency_domain
        self.ND = int(self.dom.max()) + 1 if self.N else 1
        self.smin = pb.group_spread_min
        self.has_spread = bool((self.smin > 1).any())
        self.dptr, self.dep = pb.group_dependency_indptr, pb.group_dependency
        owner = np.repeat(np.arange(self.G), np.diff(self.dptr))
        rorder = np.argsort(self.dep, kind="stable")
        self.rdep = owner[rorder]
        self.rptr = np.zeros(self.G + 1, dtype=_I64)
        self.rptr[1:] = np.cumsum(np.bincount(self.dep, minlength=self.G))
        self.has_deps = len(self.dep) > 0 and self.ND > 1
        self.pm = pb.item_move_weight * pb.item_move_cost
        self.mm = pb.move_cost_matrix
        self.mmw = pb.node_move_weight
        self.gw = pb.group_move_weight
        self.glimit = pb.group_move_limit
        self.node_range = np.arange(self.N)
        # Shift scores of at most this many item-node-resource entries are computed in
        # whole blocks, larger ones one resource at a time (less memory traffic).
        self.small_block = 1 << 15

        self._reset(initial)
        self.iorder = np.argsort(initial, kind="stable")
        self.iptr = np.zeros(self.N + 1, dtype=_I64)
        self.iptr[1:] = np.cumsum(np.bincount(initial, minlength=self.N))
        total = pb.demand.sum(axis=0)
        # Most room a node can ever offer an arriving item. Only items that arrived can
        # free transient room.
        self.maxroom = _arrival_room(pb, initial)
        self.short = np.flatnonzero((self.w > 0) & (total > self.SC.sum(axis=0)))
        self.short_mask = np.zeros(self.R, dtype=bool)
        self.short_mask[self.short] = True
        # Sign of each balance term's cluster-wide sum, which no assignment changes (the
        # total usage is fixed): +1 where every node ideally sits above zero.
        self.balance_sign = [
            1
            if t * int(self.C[:, r1].sum() - total[r1]) >= int(self.C[:, r2].sum() - total[r2])
            else -1
            for r1, r2, t, _ in self.balances
        ]
        self.deadline = float("inf")
        # Search knobs, the same for every instance (set once, by experiment on a few).
        self.eject_chains = 1000  # ejection chains evaluated per round
        self.eject_per_home = 8  # departed items tried per wasting node
        self.eject_hot_nodes = 8  # costliest nodes whose blocked moves are tried
        self.relocate_items = 200  # items of the costliest nodes tried for relocation
        self.relocate_hot_nodes = 20  # costliest nodes whose items are relocated
        self.relocate_first_passes = 3  # relocation passes before the first descent
        # Least share of the cost by which the relocate-first start must win to be kept.
        self.relocate_first_margin = 0.005
        # In the plain first descent, a shift that takes an item away from its initial
        # node pays this many times the load-cost weight per unit of each transient
        # resource it leaves held there, and a shift home earns it back (0: off).
        self.transient_price = 1.0
        self.pricing = False  # whether shift scores carry that price now
        # Start with shift descents over growing shares of the items, biggest first,
        # so that the big ones spend the transient room before small ones can.
        self.ranged_start = False
        # The staged start (:meth:`_staged_beam`): this many starts (0: off), each
        # searching only the biggest shares of the items below for a share of the time
        # limit per stage; the best at the end of its stages goes on with every item.
        self.staged_starts = 0
        self.staged_fracs = (0.2, 0.5)
        self.staged_stage_share = 0.04
        self.staged_stage_rounds = 3  # rounds per stage instead, in runs of max_rounds
        # Items the search may move (None: all); the staged start narrows it.
        self.movable: np.ndarray | None = None
        self.relocate_attempts = 1000  # most relocations those passes try
        self.relocating = True  # relocate after perturbing (decided by the first descent)
        self.relocate_max_eject = 6  # most items ejected to make room for one
        self.lns_size = 4  # most nodes per CP-SAT neighbourhood
        self.lns_vars = 100  # item-node variables per neighbourhood
        self.lns_det_time = 0.1  # CP-SAT deterministic seconds per neighbourhood
        self.lns_iters = 20  # neighbourhoods per round
        self.lns_redraws = 5  # draws per step past neighbourhoods known to fail
        self.lns_rate_full = 0.05  # success rate of CP-SAT steps that earns all of them
        self.lns_min_iters = 2  # neighbourhoods per round however rarely they succeed
        self.kick_gate = 1e-4  # a round gaining less than this share of the cost is stuck
        self.kick_quantile = 0.02  # perturbation: this quantile of worsening best shifts
        self.kick_restart = 3  # rounds without a new best before going back to it
        self.board: _Board | None = None  # where parallel searches share their best
        self.share_after = 0.5  # share of the budget searched apart before sharing
        self.kick_kinds = ("revert", "worsen")
        self.kick_wins = dict.fromkeys(self.kick_kinds, 0)
        self.kick_tries = dict.fromkeys(self.kick_kinds, 0)
        self.kick_revert_share = 0.2  # share of the moved items a perturbation sends back
        self.strategies = ("hot", "excess", "home", "random")
        self.wins = dict.fromkeys(self.strategies, 0)
        self.tries = dict.fromkeys(self.strategies, 0)
        # Neighbourhood sizes are drawn the same way, by success rate: pairs, freed
        # whole, win most often where items are many per node (a2_5, 60 s: 12.5% of
        # pairs, 5% of triples, 4% of quadruples improved).
        self.size_wins = np.zeros(self.lns_size + 1, dtype=_I64)
        self.size_tries = np.zeros(self.lns_size + 1, dtype=_I64)
        self.counters = {
            "shifts": 0,
            "swaps": 0,
            "ejections": 0,
            "relocations": 0,
            "lns_improved": 0,
            "lns_tried": 0,
            "lns_skipped": 0,
            "adopted": 0,
        }

    def set_start(self, kind: str) -> None:
        """Choose how the search starts: one of :data:`placement.solvers.reassign.START_KINDS`."""
        self.ranged_start = kind == "ranged"
        self.staged_starts = 3 if kind == "staged" else 0

    def _reset(self, assignment: np.ndarray) -> None:
        """Set every incremental quantity from scratch for a (feasible) assignment."""
        self.node_of = assignment.copy()
        # Change stamps: node n last changed at move stamp[n]; a sweep scanned node n
        # against every other at scanned[n]. Everything counts as changed after a reset.
        self.clock = 1
        self.stamp = np.ones(self.N, dtype=_I64)
        self.scanned = np.zeros(self.N, dtype=_I64)
        # LNS neighbourhoods freed whole that failed: their nodes -> the clock then.
        self.lns_failed: dict[tuple[int, ...], int] = {}
        self.U = _usage(self.pb, self.node_of)
        moved = self.node_of != self.init
        # Effective usage: U plus the transient use items keep on the node they left.
        self.E = self.U.copy()
        if self.has_transient and moved.any():
            np.add.at(self.E, self.init[moved], self.D[moved] * self.T.astype(_I64))
        self.ncost = self._cost_rows(self.U, self.node_range)
        self.loc_cnt = np.zeros((self.G, self.L), dtype=np.int32)
        np.add.at(self.loc_cnt, (self.grp, self.loc[self.node_of]), 1)
        self.loc_distinct = (self.loc_cnt > 0).sum(axis=1).astype(_I64)
        self.dom_cnt = np.zeros((self.G, self.ND), dtype=np.int32)
        np.add.at(self.dom_cnt, (self.grp, self.dom[self.node_of]), 1)
        self.moved_cnt = np.bincount(self.grp[moved], minlength=self.G).astype(_I64)
        size = int(self.gsize.max(initial=0)) + 2
        self.hist = np.bincount(self.moved_cnt, minlength=size).astype(_I64)
        self.max_moved = int(self.moved_cnt.max(initial=0))
        self.cost_nodes = int(self.ncost.sum())
        self.cost_item = int(self.pm[moved].sum())
        self.cost_mm = self.mmw * int(self.mm[self.init, self.node_of].sum(dtype=_I64))

    # -- costs ------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return self.cost_nodes + self.cost_item + self.cost_mm + self.gw * self.max_moved

    def _cost(self, U: np.ndarray, SC: np.ndarray, C: np.ndarray) -> np.ndarray:
        """Soft-capacity plus balance cost; U (..., R) broadcasts with SC and C."""
        if len(self.wr) == self.R:
            cost = np.maximum(U - SC, 0) @ self.w
        elif len(self.wr):
            wr = self.wr
            cost = np.maximum(U[..., wr] - SC[..., wr], 0) @ self.w[wr]
        else:
            cost = np.zeros(U.shape[:-1], dtype=_I64)
        for r1, r2, t, c in self.balances:
            v = t * (C[..., r1] - U[..., r1]) - (C[..., r2] - U[..., r2])
            cost = cost + c * np.maximum(v, 0)
        return cost

    def _cost_rows(self, U: np.ndarray, nodes: np.ndarray | int) -> np.ndarray:
        return self._cost(U, self.SC[nodes], self.C[nodes])

    def _cost_by_resource(
        self, over: Callable[[int], np.ndarray], free: Callable[[int], np.ndarray]
    ) -> Any:
        """The same cost as :meth:`_cost`, built one resource at a time.

        ``over(r)`` is usage minus soft capacity of resource r and ``free(r)`` capacity
        minus usage, of any common shape. One resource at a time keeps temporaries at that
        shape instead of shape x R, several times faster in numpy.
        """
        cost: Any = 0
        for r in self.wr.tolist():
            cost = cost + int(self.w[r]) * np.maximum(over(r), 0)
        for r1, r2, t, c in self.balances:
            cost = cost + c * np.maximum(t * free(r1) - free(r2), 0)
        return cost

    # -- exact moves ------------------------------------------------------------------

    def _move(self, p: int, b: int) -> None:
        """Move item p to node b, updating every incremental quantity (no checks)."""
        a = int(self.node_of[p])
        o = int(self.init[p])
        g = int(self.grp[p])
        d = self.D[p]
        self.U[a] -= d
        self.U[b] += d
        # A transient resource stays in use on the initial node while the item is away,
        # so leaving or re-entering the initial node only changes the other resources.
        self.E[a] -= d if a != o else d * self.NT
        self.E[b] += d if b != o else d * self.NT
        ca = int(self._cost_rows(self.U[a], a))
        cb = int(self._cost_rows(self.U[b], b))
        self.cost_nodes += ca - int(self.ncost[a]) + cb - int(self.ncost[b])
        self.ncost[a] = ca
        self.ncost[b] = cb
        la, lb = self.loc[a], self.loc[b]
        if la != lb:
            self.loc_cnt[g, la] -= 1
            if self.loc_cnt[g, la] == 0:
                self.loc_distinct[g] -= 1
            self.loc_cnt[g, lb] += 1
            if self.loc_cnt[g, lb] == 1:
                self.loc_distinct[g] += 1
        da, db = self.dom[a], self.dom[b]
        if da != db:
            self.dom_cnt[g, da] -= 1
            self.dom_cnt[g, db] += 1
        was, now = a != o, b != o
        if was != now:
            c = int(self.moved_cnt[g])
            c2 = c + 1 if now else c - 1
            self.moved_cnt[g] = c2
            self.hist[c] -= 1
            self.hist[c2] += 1
            if c2 > self.max_moved:
                self.max_moved = c2
            elif c == self.max_moved and self.hist[c] == 0:
                self.max_moved = c2
            self.cost_item += int(self.pm[p]) if now else -int(self.pm[p])
        self.cost_mm += self.mmw * (int(self.mm[o, b]) - int(self.mm[o, a]))
        self.node_of[p] = b

    def _feasible_after(self, moves: Sequence[tuple[int, int]], olds: Sequence[int]) -> bool:
        """Whether the current state (after *moves* from *olds*) breaks no hard rule.

        Exact, given that the state before the moves was feasible: only what the moves
        touched can have become violated.
        """
        touched = list({*olds, *(b for _, b in moves)})
        if not (self.E[touched] <= self.C[touched]).all():
            return False
        node_of = self.node_of
        for (p, b), a in zip(moves, olds, strict=True):
            g = int(self.grp[p])
            if self.gsize[g] > 1:
                mem = self.gmem[self.gptr[g] : self.gptr[g + 1]]
                if int((node_of[mem] == b).sum()) > 1:
                    return False
            if self.loc_distinct[g] < self.smin[g]:
                return False
            if self.glimit is not None and self.moved_cnt[g] > self.glimit:
                return False
            na, nb = self.dom[a], self.dom[b]
            if na != nb and self.has_deps:
                deps = self.dep[self.dptr[g] : self.dptr[g + 1]]
                if len(deps) and not (self.dom_cnt[deps, nb] > 0).all():
                    return False
                if self.dom_cnt[g, na] == 0:
                    rd = self.rdep[self.rptr[g] : self.rptr[g + 1]]
                    if len(rd) and (self.dom_cnt[rd, na] > 0).any():
                        return False
        return True

    def _changed(self, *nodes: Sequence[int]) -> None:
        """Record that *nodes* changed (for the swap sweep's skip of unchanged pairs)."""
        self.clock += 1
        for group in nodes:
            self.stamp[list(group)] = self.clock

    def _try(self, moves: Sequence[tuple[int, int]], threshold: int = 0) -> int | None:
        """Apply *moves* if the result is feasible and the cost change is below threshold.

        Returns the cost change when applied, None (state unchanged) otherwise.
        """
        before = self.total
        olds = [int(self.node_of[p]) for p, _ in moves]
        for p, b in moves:
            self._move(p, b)
        delta = self.total - before
        if delta < threshold and self._feasible_after(moves, olds):
            self._changed(olds, [b for _, b in moves])
            return delta
        for (p, _), a in zip(reversed(moves), reversed(olds), strict=True):
            self._move(p, a)
        return None

    # -- which items may move ---------------------------------------------------------

    def _may_move(self, items: np.ndarray) -> np.ndarray:
        """The members of *items* the search may move now (all, unless a stage narrows it)."""
        return items if self.movable is None else items[self.movable[items]]

    def _shuffled_items(self) -> np.ndarray:
        """Every item the search may move, in random order."""
        if self.movable is None:
            return self.rng.permutation(self.P)
        return self.rng.permutation(np.flatnonzero(self.movable))

    # -- shift neighbourhood ----------------------------------------------------------

    def _shift_scores(self, items: np.ndarray, ignore_capacity: bool = False) -> np.ndarray:
        """Cost change of moving each item to each node, shape (K, N); _BIG if infeasible.

        Exact for every feasible entry taken alone, except the group-move term, which
        is approximated (re-checked exactly when a move is applied).
        """
        K = len(items)
        rows = np.arange(K)
        a = self.node_of[items]
        o = self.init[items]
        g = self.grp[items]
        d = self.D[items]
        dT = d.T
        small = K * self.N * self.R <= self.small_block
        if small:
            # A few items (relocation's ejections): whole (K, N, R) blocks in a handful
            # of numpy calls beat the per-resource loop, whose cost is call overhead.
            target = self._cost(
                self.U[None, :, :] + d[:, None, :], self.SC[None, :, :], self.C[None, :, :]
            )
        else:
            over0 = (self.U - self.SC).T.copy()  # (R, N): contiguous rows per resource
            free0 = (self.C - self.U).T.copy()
            target = self._cost_by_resource(
                lambda r: over0[r][None, :] + dT[r][:, None],
                lambda r: free0[r][None, :] - dT[r][:, None],
            )
        delta = np.broadcast_to(target - self.ncost[None, :], (K, self.N)).copy()
        delta += (self._cost_rows(self.U[a] - d, a) - self.ncost[a])[:, None]
        pm = self.pm[items]
        was = a != o
        home = self.node_range[None, :] == o[:, None]
        if self.pricing:
            # A transient resource stays in use on the initial node when its item
            # leaves: the price makes the first descent spend that room only where
            # the gain is worth it (coming home frees it again).
            held = (d * self.T.astype(_I64) * self.w[None, :]).sum(axis=1)
            held = (self.transient_price * held).astype(_I64)
            delta += np.where(home, -(held * was)[:, None], (held * ~was)[:, None])
        delta += np.where(home, 0, pm[:, None]) - (pm * was)[:, None]
        if self.mmw:
            mrow = self.mm[o]
            delta += self.mmw * (mrow - mrow[rows, a][:, None])
        if ignore_capacity:
            fit = np.ones((K, self.N), dtype=bool)
        elif small:
            # Resources first: numpy reduces along the first axis far faster than
            # along a short last one.
            fit = (dT[:, :, None] <= (self.C - self.E).T[:, None, :]).all(axis=0)
        else:
            fit = np.ones((K, self.N), dtype=bool)
            room = (self.C - self.E).T.copy()
            for r in range(self.R):
                fit &= dT[r][:, None] <= room[r][None, :]
        if self.has_transient and not ignore_capacity:
            # Returning home re-uses the transient capacity still held there.
            fit[rows, o] = (self.E[o] + d * self.NT <= self.C[o]).all(axis=1)
        c = self.moved_cnt[g]
        if self.gw:
            inc = ~was & (c + 1 > self.max_moved)
            delta += (self.gw * inc)[:, None]
            dec = was & (c == self.max_moved) & (self.hist[self.max_moved] == 1)
            delta[rows[dec], o[dec]] -= self.gw
        if self.glimit is not None:
            fit[~was & (c + 1 > self.glimit)] = False
        fit[rows, a] = False
        # Conflict: no node already holding another item of the same group.
        size = self.gsize[g]
        multi = size > 1
        if multi.any():
            km = rows[multi]
            sz = size[multi]
            rr = np.repeat(km, sz)
            base = np.repeat(self.gptr[g[multi]] - np.cumsum(sz) + sz, sz)
            mem = self.gmem[np.arange(len(rr)) + base]
            fit[rr, self.node_of[mem]] = False
        if self.has_spread:
            la = self.loc[a]
            tight = (self.loc_cnt[g, la] == 1) & (self.loc_distinct[g] - 1 < self.smin[g])
            tk = rows[tight]
            if len(tk):
                cnt = self.loc_cnt[g[tk]][:, self.loc]
                fit[tk] &= ~((cnt > 0) & (self.loc[None, :] != la[tk][:, None]))
        if self.has_deps:
            na = self.dom[a]
            ndeps = self.dptr[g + 1] - self.dptr[g]
            hasd = ndeps > 0
            if hasd.any():
                kd = rows[hasd]
                nd = ndeps[hasd]
                rr = np.repeat(np.arange(len(kd)), nd)
                base = np.repeat(self.dptr[g[hasd]] - np.cumsum(nd) + nd, nd)
                needed = self.dep[np.arange(len(rr)) + base]
                absent = (self.dom_cnt[needed] == 0).astype(np.int64)  # (T, ND)
                miss = np.zeros((len(kd), self.ND), dtype=np.int64)
                np.add.at(miss, rr, absent)
                ok = (miss == 0)[:, self.dom] | (self.dom[None, :] == na[kd][:, None])
                fit[kd] &= ok
            last = self.dom_cnt[g, na] == 1
            nr = self.rptr[g + 1] - self.rptr[g]
            lk = rows[last & (nr > 0)]
            for k in lk:
                rd = self.rdep[self.rptr[g[k]] : self.rptr[g[k] + 1]]
                if (self.dom_cnt[rd, na[k]] > 0).any():
                    fit[k] &= self.dom == na[k]
        if self.movable is not None:
            fit[~self.movable[items]] = False
        delta[~fit] = _BIG
        return delta

    def _shift_pass(self, deadline: float, items: np.ndarray | None = None) -> int:
        """One sweep of shift descent over *items* (default all movable, shuffled); moves
        applied."""
        if items is None:
            items = self._shuffled_items()
        batch = max(1, min(512, (1 << 21) // max(1, self.N * self.R)))
        applied = 0
        for start in range(0, len(items), batch):
            if time.perf_counter() > deadline:
                break
            chunk = items[start : start + batch]
            scores = self._shift_scores(chunk)
            best = scores.argmin(axis=1)
            val = scores[np.arange(len(chunk)), best]
            order = np.argsort(val, kind="stable")
            for k in order:
                if val[k] >= 0:
                    break
                if self._try([(int(chunk[k]), int(best[k]))]) is not None:
                    applied += 1
        self.counters["shifts"] += applied
        return applied

    def _kick(self, deadline: float, quantile: float) -> int:
        """Perturb: apply the least-bad best shifts, those below a quantile of them.

        Every item's best shift is scored; the threshold is that quantile of the positive
        (worsening) ones, so the step adapts to the instance's scale. Moves are applied
        (exactly re-checked) from the best down. Returns the moves applied.
        """
        items = self._shuffled_items()
        batch = max(1, min(512, (1 << 21) // max(1, self.N * self.R)))
        best = np.empty(len(items), dtype=_I64)
        val = np.empty(len(items), dtype=_I64)
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            scores = self._shift_scores(chunk)
            best[start : start + batch] = scores.argmin(axis=1)
            val[start : start + batch] = scores[np.arange(len(chunk)), best[start : start + batch]]
        worse = val[(val > 0) & (val < _BIG)]
        if not len(worse):
            return 0
        tau = int(np.quantile(worse, quantile)) + 1
        applied = 0
        for k in np.argsort(val, kind="stable"):
            if val[k] >= tau or time.perf_counter() > deadline:
                break
            if self._try([(int(items[k]), int(best[k]))], threshold=tau) is not None:
                applied += 1
        return applied

    def _revert_kick(self, deadline: float, share: float) -> int:
        """Perturb: send a random *share* of the moved items back to their initial nodes.

        A return needs no transient capacity (the item still holds it there) and frees
        the capacity it took where it went, so this undoes part of the spending of the
        nodes' transient capacity; relocation passes then spend it again, biggest gains
        first. Returns the items sent back.
        """
        moved = self._may_move(np.flatnonzero(self.node_of != self.init))
        if not len(moved):
            return 0
        pick = self.rng.permutation(moved)[: max(1, int(share * len(moved)))]
        back = 0
        for p in pick.tolist():
            if time.perf_counter() > deadline:
                break
            if self._try([(p, int(self.init[p]))], threshold=int(_BIG)) is not None:
                back += 1
        if self.relocating:
            self._relocate_passes(deadline)
        return back

    # -- swap neighbourhood -----------------------------------------------------------

    def _swap_scores_node(
        self, a: int, ib: np.ndarray, occupied: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items of node a, and the cost change of exchanging each with each item of *ib*.

        The partners in *ib* may sit on any nodes other than a, so one call scores every
        exchange involving node a at once. Returns ``(ia, delta)`` with delta of shape
        (len(ia), len(ib)): exact for the feasible pairs but for the group-move term;
        _BIG where capacity or conflict rules it out, conflicts judged on *occupied*
        (items per group and node, shape (G, N), possibly stale). Spread, dependency and
        group-move rules are left to the exact re-check.
        """
        ia = self._may_move(np.flatnonzero(self.node_of == a))
        b = self.node_of[ib]
        daT, dbT = self.D[ia].T, self.D[ib].T
        oi, oj = self.init[ia], self.init[ib]
        home_i = oi[:, None] == b[None, :]  # item i would return to its initial node
        over_a, room_a = self.U[a] - self.SC[a], self.C[a] - self.E[a]
        over_bT = (self.U[b] - self.SC[b]).T
        room_bT = (self.C[b] - self.E[b]).T
        free_a, free_bT = self.C[a] - self.U[a], (self.C[b] - self.U[b]).T
        delta = np.zeros((len(ia), len(ib)), dtype=_I64)
        fit = np.ones(delta.shape, dtype=bool)
        gains: dict[int, np.ndarray] = {}
        bal_r = {r for r1, r2, _, _ in self.balances for r in (r1, r2)}
        for r in range(self.R):
            # What node a gains of resource r; node b gains the opposite.
            g = dbT[r][None, :] - daT[r][:, None]
            if r in bal_r:
                gains[r] = g
            if self.w[r] > 0:
                w = int(self.w[r])
                delta += w * np.maximum(g + over_a[r], 0)
                delta += w * np.maximum(over_bT[r][None, :] - g, 0)
            # Effective usage: a transient resource stays in use on the initial node, so
            # leaving it frees nothing and coming back to it takes nothing.
            if self.T[r]:
                arrive_j = np.where(oj == a, 0, dbT[r])
                leave_j = np.where(oj == b, 0, dbT[r])
                leave_i = np.where(oi == a, 0, daT[r])
                fit &= arrive_j[None, :] - leave_i[:, None] <= room_a[r]
                arrive_i = np.where(home_i, 0, daT[r][:, None])
                fit &= arrive_i - leave_j[None, :] <= room_bT[r][None, :]
            else:
                fit &= g <= room_a[r]
                fit &= -g <= room_bT[r][None, :]
        for r1, r2, t, c in self.balances:
            g1, g2 = gains[r1], gains[r2]
            delta += c * np.maximum(t * (free_a[r1] - g1) - (free_a[r2] - g2), 0)
            delta += c * np.maximum(
                t * (free_bT[r1][None, :] + g1) - (free_bT[r2][None, :] + g2), 0
            )
        delta -= self.ncost[a] + self.ncost[b][None, :]
        pi, pj = self.pm[ia], self.pm[ib]
        delta += pi[:, None] * (~home_i) - (pi * (oi != a))[:, None]
        delta += (pj * ((oj != a).astype(_I64) - (oj != b)))[None, :]
        if self.mmw:
            delta += self.mmw * (self.mm[oi][:, b] - self.mm[oi, a][:, None])
            delta += (self.mmw * (self.mm[oj, a] - self.mm[oj, b]))[None, :]
        gi, gj = self.grp[ia], self.grp[ib]
        same = gi[:, None] == gj[None, :]
        fit &= occupied[gi][:, b] - same == 0
        fit &= occupied[gj, a][None, :] - same == 0
        delta[~fit] = _BIG
        return ia, delta

    def _swap_sweep(self, deadline: float, nodes: np.ndarray | None = None) -> int:
        """Swap descent: every exchange of an item of node a with any item elsewhere.

        For each node a (default all, costly first then the rest shuffled) every exchange
        is scored at once; the best exchange of each of a's items is tried in order of
        gain, each re-checked exactly. Partners are sampled when a node has too many
        pairs for one array. Returns the swaps applied.
        """
        if self.N < 2:
            return 0
        if nodes is None:
            nodes = self.rng.permutation(self.N)
            nodes = nodes[np.argsort(-self.ncost[nodes], kind="stable")]
        occupied = np.zeros((self.G, self.N), dtype=np.int32)
        np.add.at(occupied, (self.grp, self.node_of), 1)
        budget = max(1, (1 << 22) // max(1, self.R))  # item pairs per scoring call
        applied = 0
        for a in nodes.tolist():
            if time.perf_counter() > deadline:
                break
            # An exchange between two nodes unchanged since a's last scan was scored
            # then; only pairs with a changed side are scored again. (An improving
            # exchange that lost to a better one of the same item, which the exact
            # re-check then refused, waits for one of its nodes to change.)
            if self.stamp[a] > self.scanned[a]:
                ib = np.flatnonzero(self.node_of != a)
            else:
                fresh = self.stamp > self.scanned[a]
                ib = np.flatnonzero(fresh[self.node_of])
            ib = self._may_move(ib)
            n_a = len(self._may_move(np.flatnonzero(self.node_of == a)))
            if not n_a or not len(ib):
                self.scanned[a] = self.clock
                continue
            if n_a * len(ib) > budget:
                ib = np.sort(self.rng.choice(ib, size=max(1, budget // n_a), replace=False))
            else:
                self.scanned[a] = self.clock
            ia, delta = self._swap_scores_node(a, ib, occupied)
            best = delta.argmin(axis=1)
            val = delta[np.arange(len(ia)), best]
            used: set[int] = set()
            for k in np.argsort(val, kind="stable").tolist():
                if val[k] >= 0:
                    break
                j = int(ib[best[k]])
                b = int(self.node_of[j])
                if j in used or b == a or int(self.node_of[ia[k]]) != a:
                    continue
                p = int(ia[k])
                if self._try([(p, b), (j, a)]) is not None:
                    applied += 1
                    used.add(j)
                    occupied[self.grp[p], a] -= 1
                    occupied[self.grp[p], b] += 1
                    occupied[self.grp[j], b] -= 1
                    occupied[self.grp[j], a] += 1
        self.counters["swaps"] += applied
        return applied

    # -- ejection chains --------------------------------------------------------------

    def _eject(self, p: int, b: int) -> int | None:
        """Best chain "p goes to b, one item q of b goes to its best node"; applied if it gains.

        p -> b alone may overfill b or cost too much; the items of b are scored as shifts
        with p already on b (so their scores include what leaving b now saves), and only
        those whose departure brings b back within capacity are kept.
        """
        a = int(self.node_of[p])
        if a == b:
            return None
        before = self.total
        self._move(p, b)
        first = self.total - before
        on = np.flatnonzero(self.node_of == b)
        on = on[on != p]
        best: tuple[int, int, int] | None = None
        if len(on):
            d = self.D[on]
            leave = np.where((self.init[on] == b)[:, None], d * self.NT, d)
            ok = (self.E[b] - leave <= self.C[b]).all(axis=1)
            if ok.any():
                cand = on[ok]
                scores = self._shift_scores(cand)
                flat = int(np.argmin(scores))
                k, y = divmod(flat, self.N)
                if scores[k, y] < _BIG and first + int(scores[k, y]) < 0:
                    best = (int(cand[k]), int(y), int(scores[k, y]))
        self._move(p, a)
        if best is None:
            return None
        delta = self._try([(p, b), (best[0], best[1])])
        if delta is not None:
            self.counters["ejections"] += 1
        return delta

    def _eject_pass(self, deadline: float, max_chains: int) -> int:
        """Ejection chains from two sources, at most *max_chains* evaluated.

        * Home returns: items away from a node that wastes soft capacity, sent back (a
          return re-uses the transient capacity it still holds there, the only way to
          fill a node whose transient capacity is spent).
        * Blocked best moves: for items on the costliest nodes, the best target when that
          target's capacity is ignored, if it is not feasible as it stands.
        """
        applied = 0
        tried = 0
        waste = self._waste()
        homes = np.flatnonzero(waste > 0)
        returns = [
            (int(p), int(h))
            for h in homes[np.argsort(-waste[homes], kind="stable")]
            for p in self.rng.permutation(self._may_move(self._away(int(h))))[: self.eject_per_home]
        ]
        for p, h in returns[: max_chains // 2]:
            if time.perf_counter() > deadline:
                break
            tried += 1
            applied += self._eject(p, h) is not None
        hot = np.flatnonzero(self.ncost > 0)
        hot = hot[np.argsort(-self.ncost[hot], kind="stable")][: self.eject_hot_nodes]
        on = self._may_move(np.flatnonzero(np.isin(self.node_of, hot)))
        if len(on):
            on = self.rng.permutation(on)[: max(1, max_chains - tried)]
            scores = self._shift_scores(on, ignore_capacity=True)
            target = scores.argmin(axis=1)
            gain = scores[np.arange(len(on)), target]
            for k in np.argsort(gain, kind="stable"):
                if gain[k] >= 0 or time.perf_counter() > deadline:
                    break
                applied += self._eject(int(on[k]), int(target[k])) is not None
        return applied

    def _relocate(self, p: int, b: int, max_eject: int) -> int | None:
        """Move p to b and make room there: eject items of b until b fits again.

        p is placed on b even though b's capacity (or transient capacity) is exceeded;
        then, greedily, the item of b whose departure to its best feasible node covers
        the most of the excess for the least cost is sent there, up to *max_eject*
        items. Only items that arrived on b free its transient resources. The whole
        chain is applied if it ends feasible and gains, else undone. Returns the cost
        change when applied, None otherwise.
        """
        a = int(self.node_of[p])
        if a == b:
            return None
        before = self.total
        moves = [(p, b)]
        olds = [a]
        self._move(p, b)
        used = {p}
        ok = False
        for _ in range(max_eject + 1):
            excess = self.E[b] - self.C[b]
            if (excess <= 0).all():
                ok = True
                break
            if len(moves) > max_eject:
                break
            on = np.flatnonzero(self.node_of == b)
            on = on[~np.isin(on, list(used))]
            if not len(on):
                break
            d = self.D[on]
            leave = np.where((self.init[on] == b)[:, None], d * self.NT, d)
            need = excess > 0
            cover = (np.minimum(leave[:, need], excess[need]) / excess[need]).sum(axis=1)
            keep = cover > 0
            if not keep.any():
                break
            on, cover = on[keep], cover[keep]
            scores = self._shift_scores(on)
            target = scores.argmin(axis=1)
            val = scores[np.arange(len(on)), target]
            feas = val < _BIG
            if not feas.any():
                break
            v = val.astype(np.float64)
            key = np.where(v > 0, v / cover, v * cover)
            key[~feas] = np.inf
            k = int(np.argmin(key))
            q, y = int(on[k]), int(target[k])
            moves.append((q, y))
            olds.append(b)
            used.add(q)
            self._move(q, y)
        if ok and self.total - before < 0 and self._feasible_after(moves, olds):
            self.counters["relocations"] += 1
            self._changed(olds, [y for _, y in moves])
            return self.total - before
        for (q, _), o in zip(reversed(moves), reversed(olds), strict=True):
            self._move(q, o)
        return None

    def _first_descent(self, deadline: float) -> None:
        """Descent from the start (:meth:`_descend_once`), the better of two ways.

        Plain descent, and descent after relocation passes (biggest blocked gains
        first, while the transient capacity of the nodes is unspent: greedy shifts may
        spend it on small gains and leave the big items nowhere to go). Which one wins
        depends on the instance (a few huge items that fit on few nodes favour
        relocation; many mid-sized ones favour exchanges, which relocation can block),
        so both are run; relocation is kept only if it wins by more than
        ``relocate_first_margin`` of the cost. The choice also decides whether
        perturbations relocate.
        """
        start = self.node_of.copy()
        self._plain_descent(deadline)
        plain, plain_total = self.node_of.copy(), self.total
        self._reset(start)
        self._relocate_passes(deadline)
        self._descend_once(deadline)
        # Relocation spends transient capacity, which the cost does not price: a start
        # that wins by a hair has less room left for later moves (measured on a1_2: a
        # 0.08% win after one descent ended 1.3% worse at 60 s), so it must win clearly.
        self.relocating = self.total < plain_total * (1 - self.relocate_first_margin)
        if not self.relocating:
            self._reset(plain)

    def _plain_descent(self, deadline: float) -> None:
        """The plain start: descent with transient room priced (``transient_price``),
        then descent on the true cost.

        (Greedy shifts spent the room on small gains. At 60 s, seed 0: set B mean gap
        1.28% -> 0.47% (b_1 8.75% -> 3.12%), set A 8.63% -> 7.32% (a2_3 17.7% -> 12.9%,
        a2_1 22.8% -> 15.0%; a1_4 4.5% -> 5.5% and a2_5 25.4% -> 26.5% lost).)
        """
        self.pricing = self.transient_price > 0 and self.has_transient
        if self.ranged_start:
            self._ranged_descent(deadline)
        self._descend_once(deadline)
        if self.pricing:
            self.pricing = False
            self._descend_once(deadline)

    def _by_size(self) -> np.ndarray:
        """Items from the biggest down. Size is an item's demand as a share of the
        cluster's soft capacity, summed over resources."""
        share = (self.D / np.maximum(self.SC.sum(axis=0), 1)).sum(axis=1)
        return np.argsort(-share, kind="stable")

    def _ranged_descent(self, deadline: float) -> None:
        """Shift descents over the biggest 5%, 10%, 20%, 40% and 70% of the items.

        The big items (:meth:`_by_size`) move first and take the nodes' transient room
        before the many small ones can spend it on small gains (the order of ranges of
        the challenge winner's search, Gavranovic, Buljubasic and Demirovic 2012).
        """
        order = self._by_size()
        for frac in (0.05, 0.1, 0.2, 0.4, 0.7):
            top = order[: max(1, int(frac * self.P))]
            while self._shift_pass(deadline, self.rng.permutation(top)):
                if time.perf_counter() > deadline:
                    break

    def _descend_once(self, deadline: float) -> None:
        """Shift descent, one swap sweep, shift descent: the comparison point of starts."""
        while self._shift_pass(deadline) and time.perf_counter() < deadline:
            pass
        if self._swap_sweep(deadline):
            while self._shift_pass(deadline) and time.perf_counter() < deadline:
                pass

    def _relocate_passes(self, deadline: float) -> None:
        """Relocation passes over every item of the costliest nodes, until one fails.

        Bounded by a number of attempts (not by time, so that a run ending on
        ``max_rounds`` stays reproducible): on large instances the exact shift and swap
        descents gain more per second, and relocation is meant for the few big moves.
        """
        budget = [self.relocate_attempts]
        for _ in range(self.relocate_first_passes):
            if (
                time.perf_counter() > deadline
                or budget[0] <= 0
                or not self._relocate_pass(deadline, self.P, per_item=10, budget=budget)
            ):
                break

    def _relocate_pass(
        self,
        deadline: float,
        max_items: int,
        per_item: int = 3,
        budget: list[int] | None = None,
    ) -> int:
        """Blocked improving moves of items on the costliest nodes, made room for.

        For items on the costliest nodes, the targets that would gain if their capacity
        allowed it and that could hold the item once emptied (transient capacity held
        by items that left a node cannot be freed) are tried with :meth:`_relocate`,
        biggest gain first. *budget*, a one-element list, counts attempts down across
        calls; the pass stops when it is spent.
        """
        hot = np.flatnonzero(self.ncost > 0)
        if not len(hot):
            return 0
        hot = hot[np.argsort(-self.ncost[hot], kind="stable")][: self.relocate_hot_nodes]
        on = self._may_move(np.flatnonzero(np.isin(self.node_of, hot)))
        if not len(on):
            return 0
        on = self.rng.permutation(on)[:max_items]
        scores = self._shift_scores(on, ignore_capacity=True)
        feasible = self._shift_scores(on) < _BIG
        fits = np.ones(scores.shape, dtype=bool)
        for r in range(self.R):
            fits &= self.D[on, r][:, None] <= self.maxroom[:, r][None, :]
        scores[feasible | ~fits] = _BIG
        applied = 0
        order = np.argsort(scores.min(axis=1), kind="stable")
        for k in order.tolist():
            row = scores[k]
            if time.perf_counter() > deadline or row.min() >= 0:
                break  # sorted: no later item has a gaining target either
            for b in np.argsort(row, kind="stable")[:per_item].tolist():
                if row[b] >= 0:
                    break
                if budget is not None:
                    if budget[0] <= 0:
                        return applied
                    budget[0] -= 1
                if self._relocate(int(on[k]), int(b), self.relocate_max_eject) is not None:
                    applied += 1
                    break
        return applied

    # -- large-neighbourhood search ---------------------------------------------------

    def _waste(self) -> np.ndarray:
        """Per node: unused soft capacity on resources short overall, at its unit cost.

        When a resource's total demand exceeds the total soft capacity, every unit left
        unused below one node's watermark is paid above another's: cost to recover.
        """
        short = self.short
        if not len(short):
            return np.zeros(self.N, dtype=_I64)
        return np.maximum(self.SC[:, short] - self.U[:, short], 0) @ self.w[short]

    def _excess(self) -> np.ndarray:
        """Per node: its share of the cost above the simple bound, shape (N,).

        The bound prices each resource's total overflow above the total soft capacity
        (and each balance term's cluster-wide sum), which no assignment changes; what a
        node adds on top is its overflow on a resource that is not short overall, its
        unused soft capacity on one that is, and its balance term on the wrong side of
        zero. The sum over nodes is the load and balance cost minus that bound, so these
        are the nodes where an exchange can still gain.
        """
        over = self.U - self.SC
        side = np.where(self.short_mask[None, :], np.maximum(-over, 0), np.maximum(over, 0))
        excess = side @ self.w
        for (r1, r2, t, c), sign in zip(self.balances, self.balance_sign, strict=True):
            v = t * (self.C[:, r1] - self.U[:, r1]) - (self.C[:, r2] - self.U[:, r2])
            excess = excess + c * np.maximum(-sign * v, 0)
        return excess

    def _away(self, h: int) -> np.ndarray:
        """Items whose initial node is h and that are elsewhere now."""
        orig = self.iorder[self.iptr[h] : self.iptr[h + 1]]
        return orig[self.node_of[orig] != h]

    def _partners(self, first: int, count: int, exclude: set[int], complement: bool) -> list[int]:
        """*count* nodes to pair with *first*: mostly those that can take its overflow.

        With *complement*, partners are scored by the cost that transfers between the
        two could recover, both ways: on a resource where one is above its soft
        capacity and the other below, load moved from the first to the second gains,
        whether the resource is short overall or not (at most the smaller of the two
        sides counts). Otherwise by the room they have where *first* overflows.
        """
        keep = np.ones(self.N, dtype=bool)
        keep[list(exclude)] = False
        others = self.node_range[keep]
        if not len(others) or count <= 0:
            return []
        if self.rng.random() < 0.6:
            d = self.U[first] - self.SC[first]
            dd = self.U[others] - self.SC[others]
            if complement:
                give = np.minimum(np.maximum(d, 0)[None, :], np.maximum(-dd, 0))
                take = np.minimum(np.maximum(-d, 0)[None, :], np.maximum(dd, 0))
                score = (give + take) @ self.w + self.rng.random(len(others))
            else:
                room = np.maximum(-dd, 0) * (d > 0)[None, :]
                score = room.sum(axis=1) + self.rng.integers(0, 2, len(others))
            pool = others[np.argsort(-score, kind="stable")[: 3 * count]]
        else:
            pool = others
        return self.rng.choice(pool, size=min(count, len(pool)), replace=False).tolist()

    def _lns_pick(self, strategy: str, size: int) -> tuple[list[int], list[int]]:
        """Nodes of one neighbourhood, and items that should be freed first."""
        prefer: list[int] = []
        if strategy == "home":
            waste = self._waste().astype(np.float64)
            has_away = np.array([len(self._away(h)) > 0 for h in range(self.N)])
            weight = np.where(has_away, waste + 1.0, 0.0)
            if weight.sum() <= 0:
                strategy = "hot"
            else:
                h = int(self.rng.choice(self.N, p=weight / weight.sum()))
                away = self._away(h)
                where = np.unique(self.node_of[away])
                picked = self.rng.choice(where, size=min(size - 1, len(where)), replace=False)
                nodes = [h, *picked.tolist()]
                prefer = away[np.isin(self.node_of[away], nodes)].tolist()
                nodes += self._partners(h, size - len(nodes), set(nodes), False)
                return nodes, prefer
        if strategy == "excess":
            excess = self._excess().astype(np.float64)
            if excess.sum() > 0:
                first = int(self.rng.choice(self.N, p=excess / excess.sum()))
                return [first, *self._partners(first, size - 1, {first}, True)], prefer
            strategy = "hot"
        costly = np.flatnonzero(self.ncost > 0)
        if strategy == "hot" and len(costly):
            first = int(self.rng.choice(costly))
            return [first, *self._partners(first, size - 1, {first}, False)], prefer
        nodes = self.rng.choice(self.N, size=size, replace=False).tolist()
        return nodes, prefer

    def _lns_free(self, nodes: list[int], prefer: list[int], max_items: int) -> np.ndarray:
        """Items to free: all on *nodes* if few, else *prefer* then a random sample (only
        items that may move; the others stay as constants)."""
        on = self._may_move(np.flatnonzero(np.isin(self.node_of, nodes)))
        if len(on) <= max_items:
            return on
        first = self._may_move(np.array(prefer, dtype=_I64))[: max_items // 2]
        rest = np.setdiff1d(on, first)
        extra = self.rng.choice(rest, size=max_items - len(first), replace=False)
        return np.sort(np.concatenate((first, extra)))

    def _lns_step(self, nodes: list[int], items: np.ndarray, det_time: float) -> int | None:
        """Re-place *items* (all on *nodes*) optimally among *nodes* with CP-SAT.

        Everything else stays fixed and enters as constants. Returns the exact cost change
        when an improvement was applied, None otherwise.
        """
        from ortools.sat.python import cp_model

        S = nodes
        k = len(S)
        pos = {n: j for j, n in enumerate(S)}
        n_it = len(items)
        if n_it < 2:
            return None
        self.counters["lns_tried"] += 1
        d = self.D[items]
        o = self.init[items]
        g = self.grp[items]
        cur = self.node_of[items]
        curj = np.array([pos[int(c)] for c in cur])
        oj = np.array([pos.get(int(v), -1) for v in o])
        T, NT = self.T.astype(_I64), self.NT
        # What the fixed items use on S; an item away from its initial node also holds
        # the transient resources there.
        ufix = self.U[S].copy()
        np.subtract.at(ufix, curj, d)
        base = self.E[S].copy()
        np.subtract.at(base, curj, d)
        away_home = (oj >= 0) & (oj != curj)
        np.subtract.at(base, oj[away_home], d[away_home] * T)
        # Whatever happens, a freed item whose initial node is in S holds its transient
        # resources there; only arrivals from elsewhere add the full demand.
        np.add.at(base, oj[oj >= 0], d[oj >= 0] * T)
        free_set = set(items.tolist())
        m = cp_model.CpModel()
        x: dict[tuple[int, int], Any] = {}
        coef = np.where(
            (oj[:, None] == np.arange(k)[None, :])[:, :, None], (d * NT)[:, None], d[:, None]
        )
        fits = (base[None, :, :] + coef <= self.C[S][None, :, :]).all(axis=2)
        fits[np.arange(n_it), curj] = True
        for t in range(n_it):
            gg = int(g[t])
            if self.gsize[gg] > 1:
                mem = self.gmem[self.gptr[gg] : self.gptr[gg + 1]]
                for q in mem:
                    if int(q) not in free_set and int(self.node_of[q]) in pos:
                        fits[t, pos[int(self.node_of[q])]] = False
            opts = []
            for j in range(k):
                if fits[t, j]:
                    v = m.new_bool_var("")
                    x[t, j] = v
                    opts.append(v)
                    m.add_hint(v, j == curj[t])
            m.add_exactly_one(opts)
        terms: list[Any] = []
        coefs: list[int] = []
        C = self.C
        for j, n in enumerate(S):
            idx = [t for t in range(n_it) if (t, j) in x]
            xs = [x[t, j] for t in idx]
            use = []
            for r in range(self.R):
                use.append(cp_model.LinearExpr.weighted_sum(xs, [int(d[t, r]) for t in idx]))
                eff = cp_model.LinearExpr.weighted_sum(xs, [int(coef[t, j, r]) for t in idx])
                m.add(eff + int(base[j, r]) <= int(C[n, r]))
            for r in self.wr.tolist():
                fixed = int(ufix[j, r]) - int(self.SC[n, r])
                ov = m.new_int_var(0, max(0, int(C[n, r]) - int(self.SC[n, r])), "")
                m.add(ov >= use[r] + fixed)
                terms.append(ov)
                coefs.append(int(self.w[r]))
            for r1, r2, tg, c in self.balances:
                const = tg * (int(C[n, r1]) - int(ufix[j, r1])) - (int(C[n, r2]) - int(ufix[j, r2]))
                bv = m.new_int_var(0, max(0, tg * int(C[n, r1])), "")
                m.add(bv >= const - tg * use[r1] + use[r2])
                terms.append(bv)
                coefs.append(c)
            for t in idx:
                i = int(items[t])
                c_move = (int(self.pm[i]) if n != o[t] else 0) + self.mmw * int(self.mm[o[t], n])
                if c_move:
                    terms.append(x[t, j])
                    coefs.append(c_move)
        groups = np.unique(g)
        members = {int(gg): np.flatnonzero(g == gg) for gg in groups}
        for ts in members.values():
            if len(ts) > 1:
                for j in range(k):
                    vs = [x[t, j] for t in ts.tolist() if (t, j) in x]
                    if len(vs) > 1:
                        m.add_at_most_one(vs)
        if self.has_spread:
            for gg, ts in members.items():
                need = int(self.smin[gg])
                if need <= 1:
                    continue
                fixed_loc = self.loc_cnt[gg].astype(_I64)
                np.subtract.at(fixed_loc, self.loc[cur[ts]], 1)
                n_fixed = int((fixed_loc > 0).sum())
                if n_fixed >= need:
                    continue
                ys = []
                for lo in sorted({int(self.loc[n]) for n in S}):
                    if fixed_loc[lo] > 0:
                        continue
                    vs = [
                        x[t, j]
                        for t in ts.tolist()
                        for j in range(k)
                        if (t, j) in x and self.loc[S[j]] == lo
                    ]
                    if vs:
                        y = m.new_bool_var("")
                        m.add_bool_or(vs).only_enforce_if(y)
                        ys.append(y)
                if ys:
                    m.add(sum(ys) >= need - n_fixed)
        doms = sorted({int(self.dom[n]) for n in S})
        if self.has_deps and len(doms) > 1:
            if not self._lns_dependencies(m, x, S, doms, members, cur):
                return None
        if self.gw or self.glimit is not None:
            moved = []
            for gg, ts in members.items():
                const = int(self.moved_cnt[gg]) - int((cur[ts] != o[ts]).sum())
                vs = [
                    x[t, j] for t in ts.tolist() for j in range(k) if (t, j) in x and S[j] != o[t]
                ]
                moved.append(cp_model.LinearExpr.sum(vs) + const)
            if self.glimit is not None:
                for e in moved:
                    m.add(e <= self.glimit)
            if self.gw:
                mask = np.ones(self.G, bool)
                mask[groups] = False
                rest = int(self.moved_cnt[mask].max(initial=0))
                top = m.new_int_var(rest, int(self.gsize.max(initial=0)), "")
                for e in moved:
                    m.add(top >= e)
                terms.append(top)
                coefs.append(self.gw)
        m.minimize(cp_model.LinearExpr.weighted_sum(terms, coefs))
        solver = cp_model.CpSolver()
        prm = solver.parameters
        prm.num_workers = 1
        prm.random_seed = int(self.rng.integers(1 << 30))
        # The deterministic limit is what binds (reproducible); the wall-clock one is a
        # safety net, and keeps the last step inside the caller's time limit.
        prm.max_deterministic_time = det_time
        left = self.deadline - time.perf_counter()
        prm.max_time_in_seconds = max(0.05, min(20 * det_time + 1.0, left))
        status = solver.solve(m)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        moves = []
        for t in range(n_it):
            for j in range(k):
                if (t, j) in x and solver.boolean_value(x[t, j]):
                    if j != curj[t]:
                        moves.append((int(items[t]), S[j]))
                    break
        if not moves:
            return None
        delta = self._try(moves)
        if delta is not None:
            self.counters["lns_improved"] += 1
        return delta

    def _lns_dependencies(
        self,
        m: Any,
        x: dict[tuple[int, int], Any],
        S: list[int],
        doms: list[int],
        members: dict[int, np.ndarray],
        cur: np.ndarray,
    ) -> bool:
        """Encode the dependency rule on the domains of S; False if it cannot hold."""
        k = len(S)
        pres: dict[tuple[int, int], Any] = {}

        def presence(h: int, dd: int) -> Any:
            """True / False when fixed, else a literal true iff h has a freed item in dd."""
            key = (h, dd)
            if key not in pres:
                fixed = int(self.dom_cnt[h, dd])
                vs: list[Any] = []
                if h in members:
                    ts = members[h]
                    fixed -= int((self.dom[cur[ts]] == dd).sum())
                    vs = [
                        x[t, j]
                        for t in ts
                        for j in range(k)
                        if (t, j) in x and self.dom[S[j]] == dd
                    ]
                lit: Any
                if fixed > 0:
                    lit = True
                elif not vs:
                    lit = False
                else:
                    lit = m.new_bool_var("")
                    m.add_bool_or(vs).only_enforce_if(lit)
                    for v in vs:
                        m.add_implication(v, lit)
                pres[key] = lit
            return pres[key]

        for gg in members:
            deps = self.dep[self.dptr[gg] : self.dptr[gg + 1]]
            rd = self.rdep[self.rptr[gg] : self.rptr[gg + 1]]
            for dd in doms:
                here = presence(gg, dd)
                if here is not False:
                    for h in deps:
                        need = presence(int(h), dd)
                        if need is True:
                            continue
                        if need is False:
                            if here is True:
                                return False  # not reachable from a feasible state
                            m.add(here == 0)
                        elif here is True:
                            m.add(need == 1)
                        else:
                            m.add_implication(here, need)
                if here is True:
                    continue
                # Groups kept in place here that depend on this one need it to stay.
                for h in rd:
                    h = int(h)
                    if h not in members and self.dom_cnt[h, dd] > 0:
                        if here is False:
                            return False
                        m.add(here == 1)
                        break
        return True

    # -- driver -----------------------------------------------------------------------

    def _lns_once(self) -> None:
        """One LNS step; the strategy is drawn by its success rate so far."""
        names = self.strategies
        rate = np.array([(self.wins[s] + 1) / (self.tries[s] + 2) for s in names])
        strategy = names[int(self.rng.choice(len(names), p=rate / rate.sum()))]
        sizes = np.arange(2, min(self.lns_size, self.N) + 1)
        srate = (self.size_wins[sizes] + 1) / (self.size_tries[sizes] + 2)
        size = int(self.rng.choice(sizes, p=srate / srate.sum()))
        for _ in range(self.lns_redraws + 1):
            nodes, prefer = self._lns_pick(strategy, size)
            # CP-SAT proves small re-packings quickly but rarely improves big ones within
            # its budget (measured on a2_5: 3 nodes x 40 items won 11 of 12 times, 6 x 50
            # never), so the freed items are capped by a budget of item-node variables.
            items = self._lns_free(nodes, prefer, max(2, self.lns_vars // len(nodes)))
            # A neighbourhood freed whole, re-solved with none of its nodes changed since
            # it last failed, would fail again: draw another.
            key = tuple(sorted(nodes))
            whole = len(items) == int(np.isin(self.node_of, nodes).sum())
            if not whole or self.lns_failed.get(key, -1) < int(self.stamp[nodes].max()):
                break
            self.counters["lns_skipped"] += 1
        else:
            return
        self.tries[strategy] += 1
        self.size_tries[size] += 1
        if self._lns_step(nodes, items, self.lns_det_time) is not None:
            self.wins[strategy] += 1
            self.size_wins[size] += 1
        elif whole:
            self.lns_failed[key] = self.clock

    def _restart(self, best_total: int, best: np.ndarray, share: bool) -> tuple[int, np.ndarray]:
        """Go back to the best assignment: this search's own or, when *share*, the
        board's if that is better. Returns the (total, assignment) now held as best."""
        if share and self.board is not None:
            shared = self.board.better_than(best_total)
            if shared is not None:
                best_total, best = shared
                self.counters["adopted"] += 1
        self._reset(best)
        return best_total, best

    def run(
        self,
        deadline: float,
        max_rounds: int | None,
        lns: bool,
        progress: Callable[[dict[str, Any]], None] | None,
        started: float,
    ) -> dict[str, Any]:
        """Search until *deadline* (perf_counter seconds) or *max_rounds*; stats."""
        history: list[tuple[float, int]] = [(0.0, self.total)]

        def note(phase: str, rnd: int) -> None:
            t = time.perf_counter() - started
            history.append((round(t, 3), self.total))
            if progress is not None:
                progress({"seconds": t, "round": rnd, "phase": phase, "total": self.total})

        self.deadline = deadline
        staged: dict[str, Any] = {}
        if self.staged_starts > 0:
            staged = self._staged_beam(deadline, max_rounds, lns, note, started)
        # Searches run apart for the first part of the time they search every item
        # (varied starts find different basins), then restart from the best of all of
        # them. A staged start's own stages do not count: its best start needs as long
        # as the others to settle before another's best may replace it.
        begun = time.perf_counter() if staged else started
        share_from = begun + self.share_after * (deadline - begun)
        rnd, stop = self._rounds(deadline, max_rounds, lns, note, share_from)
        return {
            "rounds": rnd,
            "stop": stop,
            "history": history,
            **staged,
            **self.counters,
            "lns_wins": dict(self.wins),
            "lns_tries": dict(self.tries),
            "kick_wins": dict(self.kick_wins),
            "kick_tries": dict(self.kick_tries),
        }

    def _staged_beam(
        self,
        deadline: float,
        max_rounds: int | None,
        lns: bool,
        note: Callable[[str, int], None],
        started: float,
    ) -> dict[str, Any]:
        """The staged start: several restricted searches from the start; keep the best.

        Each of ``staged_starts`` starts goes back to the initial assignment and searches
        (all neighbourhoods, perturbations included) only the biggest ``staged_fracs``
        shares of the items, one stage per share, ``staged_stage_share`` of the time
        each (``staged_stage_rounds`` rounds each in runs bounded by *max_rounds*, so
        they stay reproducible). The big items take the nodes' room before the small
        ones, as in the ranged start, but each range is searched in depth. The start
        that ends its stages lowest is kept, and the search then goes on with every
        item. Restricted totals rank the starts (in an emulation on a2_3, one worker,
        300 s, three seeds: 1,313 to 1,326 M with the pick among three, 1,350 M for one
        staged start alone); they cannot be compared with an unrestricted search's
        totals, which is why this is a start of its own and not one arm of a race.

        Returns stats: the total each start ended its stages on, and which was kept.
        """
        order = self._by_size()
        masks = []
        for frac in self.staged_fracs:
            mask = np.zeros(self.P, dtype=bool)
            mask[order[: max(1, int(frac * self.P))]] = True
            masks.append(mask)
        stage_s = self.staged_stage_share * (deadline - started)
        # Runs bounded by rounds bound their stages by rounds alone, so they stay
        # reproducible.
        rounds = None if max_rounds is None else self.staged_stage_rounds
        ends: list[int] = []
        best: tuple[int, np.ndarray] | None = None
        for _ in range(self.staged_starts):
            if time.perf_counter() > deadline:
                break
            self._reset(self.init)
            for mask in masks:
                self.movable = mask
                # The stage's end bounds CP-SAT's wall-clock limit too.
                stage_end = deadline if rounds is not None else time.perf_counter() + stage_s
                self.deadline = min(deadline, stage_end)
                # No sharing inside a stage: restricted totals are not comparable.
                self._rounds(self.deadline, rounds, lns, note, float("inf"))
            self.movable = None
            self.deadline = deadline
            ends.append(self.total)
            if best is None or self.total < best[0]:
                best = (self.total, self.node_of.copy())
        if best is not None:
            self._reset(best[1])
        return {"staged_totals": ends, "staged_kept": int(np.argmin(ends)) if ends else None}

    def _rounds(
        self,
        deadline: float,
        max_rounds: int | None,
        lns: bool,
        note: Callable[[str, int], None],
        share_from: float,
    ) -> tuple[int, str]:
        """Rounds of every neighbourhood, perturbing when stuck; ends on the best found.

        Returns (rounds run, why it stopped).
        """
        rnd = 0
        stop = "converged"
        best_total, best, stale = self.total, self.node_of.copy(), 0
        last_kick: str | None = None
        while True:
            if max_rounds is not None and rnd >= max_rounds:
                stop = "rounds"
                break
            if time.perf_counter() > deadline:
                stop = "time"
                break
            rnd += 1
            before = self.total
            if rnd == 1:
                self._first_descent(deadline)
            else:
                while self._shift_pass(deadline) and time.perf_counter() < deadline:
                    pass
            note("shift", rnd)
            # One sweep a round: on large instances sweeps keep finding a few exchanges
            # each, and the ejection chains below gain more per second.
            if self._swap_sweep(deadline):
                while self._shift_pass(deadline) and time.perf_counter() < deadline:
                    pass
            note("swap", rnd)
            self._eject_pass(deadline, self.eject_chains)
            note("eject", rnd)
            self._relocate_pass(deadline, self.relocate_items)
            note("relocate", rnd)
            if lns and self.N > 1:
                # Fewer CP-SAT steps while they rarely improve (counted, not timed, so
                # that runs ending on max_rounds stay reproducible).
                c = self.counters
                success = (c["lns_improved"] + 1) / (c["lns_tried"] + 2)
                share = min(1.0, success / self.lns_rate_full)
                for _ in range(max(self.lns_min_iters, round(self.lns_iters * share))):
                    if time.perf_counter() > deadline:
                        break
                    self._lns_once()
                note("lns", rnd)
            if self.total < best_total:
                best_total, best, stale = self.total, self.node_of.copy(), 0
                if last_kick is not None:
                    self.kick_wins[last_kick] += 1
                    last_kick = None
                if self.board is not None:
                    self.board.post(best_total, best)
            else:
                stale += 1
            if before - self.total <= self.kick_gate * max(self.total, 1):
                # A local optimum for every neighbourhood: restart from the best one when
                # perturbing has not found a better one for a while, then perturb. The
                # kind of perturbation is drawn by how often it led to a new best.
                if stale >= self.kick_restart:
                    share = time.perf_counter() > share_from
                    best_total, best = self._restart(best_total, best, share)
                    stale = 0
                kinds: tuple[str, ...] = self.kick_kinds
                if not len(self._may_move(np.flatnonzero(self.node_of != self.init))):
                    kinds = ("worsen",)  # nothing to send back
                rate = np.array([(self.kick_wins[k] + 1) / (self.kick_tries[k] + 2) for k in kinds])
                last_kick = kinds[int(self.rng.choice(len(kinds), p=rate / rate.sum()))]
                self.kick_tries[last_kick] += 1
                if last_kick == "revert":
                    self._revert_kick(deadline, self.kick_revert_share)
                else:
                    self._kick(deadline, self.kick_quantile)
                note("kick", rnd)
        if best_total < self.total:
            self._reset(best)
        return rnd, stop
