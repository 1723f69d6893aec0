"""The reassignment problem and its exact evaluator: what an assignment must satisfy
and what it costs.

A general problem behind rebalancing with bounded disruption: *items* (shards, replicas,
processes) sit on *nodes*; each item belongs to a *group* (the replicas of one shard, the
processes of one service). A new assignment must respect hard rules and minimises a sum of
cost terms, all in exact int64 arithmetic. The ROADEF/EURO 2012 machine-reassignment
benchmark maps onto it one to one (:mod:`placement.roadef`), but nothing here is specific
to it.

Hard constraints (the names are the violation kinds of :class:`Violation`):

* ``capacity``: the usage ``U[n, r]`` (sum of the demands of the items on ``n``) is at most
  ``capacity[n, r]``.
* ``transient``: for a *transient* resource, an item that moved away still uses it on its
  initial node while it moves (data being copied still occupies the source), so
  ``U[n, r]`` plus the demands of the items that left ``n`` is at most ``capacity[n, r]``.
* ``conflict``: two items of one group never share a node (replicas on distinct nodes).
* ``spread``: the items of group ``g`` use at least ``group_spread_min[g]`` distinct
  *spread domains* (failure domains, e.g. racks).
* ``dependency``: if group ``g`` depends on group ``h``, every *dependency domain* (a
  latency domain, e.g. a zone) holding an item of ``g`` also holds one of ``h``
  (co-location of dependent services).
* ``group_move_limit``: at most ``group_move_limit`` items of any one group move (the
  availability budget of a replica set); None for no limit.

Cost terms (see :data:`TERMS`):

* ``soft_capacity``: ``sum_r soft_capacity_cost[r] * sum_n max(0, U[n, r] - soft_capacity[n, r])``
  (usage above a watermark is allowed but paid for).
* ``balance``: for each balance rule ``(r1, r2, target, cost)``,
  ``cost * sum_n max(0, target * A[n, r1] - A[n, r2])`` with ``A = capacity - U``: keeps the
  free capacity of two resources in proportion, so no node has CPU left but no memory.
* ``item_move``: ``item_move_weight * sum`` of ``item_move_cost`` over the items that moved.
* ``group_move``: ``group_move_weight *`` the largest number of moved items in one group.
* ``node_move``: ``node_move_weight * sum_i move_cost_matrix[initial[i], new[i]]``
  (per-pair transfer cost; the diagonal is normally 0).

:func:`evaluate_reassignment` is the meaning of all of the above. The search
(:mod:`placement.solvers.reassign_search`) keeps incremental copies of the same
quantities, and :func:`placement.solvers.reassign.solve_reassignment` re-checks its final
answer by it; :mod:`placement.solvers.reassign_bound` proves lower bounds for the same
problems. Users import these names from :mod:`placement.solvers.reassign` or
:mod:`placement`.

Examples
--------
Two items of a transient resource swap nodes. Each fits where it goes, but while it
moves its source still holds it, so both nodes overflow:

>>> import numpy as np
>>> problem = ReassignProblem.build(
...     capacity=[[10], [10]], demand=[[6], [5]], transient=[True], item_move_cost=[1, 1])
>>> swapped = evaluate_reassignment(problem, np.array([0, 1]), np.array([1, 0]))
>>> swapped.feasible, swapped.counts()["transient"]
(False, 2)
>>> swapped.violations[0].message
'node 0 needs 11 of transient resource 0 while items move away from it (6 still in use by them), above its capacity 10'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.errors import InvalidValueError, SchemaError

__all__ = [
    "KINDS",
    "TERMS",
    "ReassignEvaluation",
    "ReassignProblem",
    "Violation",
    "evaluate_reassignment",
    "node_costs",
]

#: Cost terms, in report order.
TERMS = ("soft_capacity", "balance", "item_move", "group_move", "node_move")

#: Hard-constraint kinds, in the order they are checked and reported.
KINDS = ("capacity", "transient", "conflict", "spread", "dependency", "group_move_limit")

_I64 = np.int64


def _as_int(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """An int64 copy of *value* with the given shape, or an InvalidValueError."""
    arr = np.asarray(value)
    if arr.size == 0 and arr.ndim <= len(shape):
        arr = arr.reshape(shape) if np.prod(shape) == 0 else arr
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all())
    ):
        raise InvalidValueError(f"{name} must be integers, got dtype {arr.dtype}.")
    out = arr.astype(_I64)
    if np.issubdtype(arr.dtype, np.floating) and not np.array_equal(out, arr):
        raise InvalidValueError(f"{name} must be integers; it holds fractions.")
    if out.shape != shape:
        raise SchemaError(f"{name} must have shape {shape}, got {out.shape}.")
    return out


def _check_nonneg(arr: np.ndarray, name: str) -> None:
    if arr.size and arr.min() < 0:
        at = np.unravel_index(int(np.argmin(arr)), arr.shape)
        raise InvalidValueError(
            f"{name} must be non-negative; entry {tuple(int(i) for i in at)} is {int(arr[at])}."
        )


def _check_index(arr: np.ndarray, high: int, name: str, what: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= high):
        bad = int(np.flatnonzero((arr < 0) | (arr >= high))[0])
        raise InvalidValueError(
            f"{name}[{bad}] is {int(arr.ravel()[bad])}, not a valid {what} index (0..{high - 1})."
        )


@dataclass(frozen=True, eq=False)
class ReassignProblem:
    """A reassignment instance, columnar: N nodes, R resources, P items, G groups, B rules.

    Build it with :meth:`build`, which fills defaults and validates; the constructor
    validates too. Arrays are int64 (``transient`` is bool) and read-only. Dependencies
    are normalised: self-dependencies (always satisfied) and repeats are dropped.

    Attributes
    ----------
    capacity : ndarray, shape (N, R)
        Hard capacity.
    demand : ndarray, shape (P, R)
        What each item uses of each resource.
    soft_capacity : ndarray, shape (N, R)
        Watermark above which ``soft_capacity_cost`` is paid per unit.
    soft_capacity_cost : ndarray, shape (R,)
    transient : ndarray of bool, shape (R,)
        Resources an item keeps using on its initial node while it moves.
    group : ndarray, shape (P,)
        Group of each item (items of one group never share a node).
    group_spread_min : ndarray, shape (G,)
        Least number of distinct spread domains per group.
    spread_domain : ndarray, shape (N,)
        Spread (failure) domain of each node.
    dependency_domain : ndarray, shape (N,)
        Dependency (co-location) domain of each node.
    group_dependency_indptr, group_dependency : ndarray, shapes (G + 1,) and (deps,)
        CSR: group ``g`` depends on ``group_dependency[indptr[g]:indptr[g + 1]]``.
    item_move_cost : ndarray, shape (P,)
        Cost paid when an item leaves its initial node.
    move_cost_matrix : ndarray, shape (N, N)
        Cost of an item whose initial node is ``i`` ending on node ``j``.
    balance_resources : ndarray, shape (B, 2)
    balance_target, balance_cost : ndarray, shape (B,)
    item_move_weight, group_move_weight, node_move_weight : int
        Weights of the three move terms.
    group_move_limit : int or None
        Most items of one group that may move; None for no limit.
    """

    capacity: np.ndarray
    demand: np.ndarray
    soft_capacity: np.ndarray
    soft_capacity_cost: np.ndarray
    transient: np.ndarray
    group: np.ndarray
    group_spread_min: np.ndarray
    spread_domain: np.ndarray
    dependency_domain: np.ndarray
    group_dependency_indptr: np.ndarray
    group_dependency: np.ndarray
    item_move_cost: np.ndarray
    move_cost_matrix: np.ndarray
    balance_resources: np.ndarray
    balance_target: np.ndarray
    balance_cost: np.ndarray
    item_move_weight: int = 1
    group_move_weight: int = 0
    node_move_weight: int = 1
    group_move_limit: int | None = None

    @classmethod
    def build(
        cls,
        capacity: Any,
        demand: Any,
        *,
        soft_capacity: Any = None,
        soft_capacity_cost: Any = None,
        transient: Any = None,
        group: Any = None,
        group_spread_min: Any = None,
        spread_domain: Any = None,
        dependency_domain: Any = None,
        group_dependencies: Sequence[Sequence[int]] | None = None,
        item_move_cost: Any = None,
        move_cost_matrix: Any = None,
        balance: Sequence[tuple[int, int, int, int]] = (),
        item_move_weight: int = 1,
        group_move_weight: int = 0,
        node_move_weight: int = 1,
        group_move_limit: int | None = None,
    ) -> ReassignProblem:
        """Build a problem; every option defaults to "no such rule" (zero cost, no limit).

        Parameters
        ----------
        capacity : array_like, shape (N, R)
        demand : array_like, shape (P, R)
        soft_capacity : array_like, shape (N, R), optional
            Defaults to ``capacity`` (no soft cost below the hard limit).
        soft_capacity_cost : array_like, shape (R,), optional
            Defaults to zeros.
        transient : array_like of bool, shape (R,), optional
        group : array_like, shape (P,), optional
            Defaults to one group per item.
        group_spread_min : array_like, shape (G,), optional
        spread_domain, dependency_domain : array_like, shape (N,), optional
            Default: one domain holding every node.
        group_dependencies : sequence of sequences, length G, optional
            The groups each group depends on.
        item_move_cost : array_like, shape (P,), optional
        move_cost_matrix : array_like, shape (N, N), optional
        balance : sequence of (r1, r2, target, cost)
        item_move_weight, group_move_weight, node_move_weight : int
        group_move_limit : int, optional

        Raises
        ------
        InvalidValueError, SchemaError
            An array has the wrong shape, a negative value or an index out of range.
        """
        cap = np.asarray(capacity)
        dem = np.asarray(demand)
        if cap.ndim != 2 or dem.ndim != 2:
            raise SchemaError(
                f"capacity must be (nodes, resources) and demand (items, resources); got "
                f"shapes {cap.shape} and {dem.shape}."
            )
        n, r = cap.shape
        p = dem.shape[0]
        grp = np.arange(p) if group is None else np.asarray(group)
        n_groups = int(grp.max()) + 1 if grp.size else 0
        if group_spread_min is not None:
            n_groups = max(n_groups, len(np.asarray(group_spread_min)))
        if group_dependencies is not None:
            n_groups = max(n_groups, len(group_dependencies))
        deps = list(group_dependencies) if group_dependencies is not None else []
        deps += [[] for _ in range(n_groups - len(deps))]
        indptr = np.zeros(n_groups + 1, dtype=_I64)
        indptr[1:] = np.cumsum([len(d) for d in deps])
        flat = [int(h) for d in deps for h in d]
        bal = np.asarray(balance, dtype=_I64).reshape(-1, 4)
        return cls(
            capacity=cap,
            demand=dem,
            soft_capacity=cap if soft_capacity is None else soft_capacity,
            soft_capacity_cost=np.zeros(r) if soft_capacity_cost is None else soft_capacity_cost,
            transient=np.zeros(r, bool) if transient is None else np.asarray(transient, bool),
            group=grp,
            group_spread_min=(np.zeros(n_groups) if group_spread_min is None else group_spread_min),
            spread_domain=np.zeros(n) if spread_domain is None else spread_domain,
            dependency_domain=np.zeros(n) if dependency_domain is None else dependency_domain,
            group_dependency_indptr=indptr,
            group_dependency=np.asarray(flat, dtype=_I64),
            item_move_cost=np.zeros(p) if item_move_cost is None else item_move_cost,
            move_cost_matrix=np.zeros((n, n)) if move_cost_matrix is None else move_cost_matrix,
            balance_resources=bal[:, :2],
            balance_target=bal[:, 2],
            balance_cost=bal[:, 3],
            item_move_weight=item_move_weight,
            group_move_weight=group_move_weight,
            node_move_weight=node_move_weight,
            group_move_limit=group_move_limit,
        )

    def __post_init__(self) -> None:
        cap = np.asarray(self.capacity)
        if cap.ndim != 2:
            raise SchemaError(f"capacity must have shape (nodes, resources), got {cap.shape}.")
        n, r = cap.shape
        dem = np.asarray(self.demand)
        p = dem.shape[0] if dem.ndim == 2 else -1
        gd = np.asarray(self.group_dependency_indptr)
        g = len(gd) - 1
        b = len(np.asarray(self.balance_target))
        shapes = {
            "capacity": (n, r),
            "demand": (p, r),
            "soft_capacity": (n, r),
            "soft_capacity_cost": (r,),
            "group": (p,),
            "group_spread_min": (g,),
            "spread_domain": (n,),
            "dependency_domain": (n,),
            "group_dependency_indptr": (g + 1,),
            "group_dependency": (len(np.asarray(self.group_dependency)),),
            "item_move_cost": (p,),
            "move_cost_matrix": (n, n),
            "balance_resources": (b, 2),
            "balance_target": (b,),
            "balance_cost": (b,),
        }
        for name, shape in shapes.items():
            arr = _as_int(getattr(self, name), shape, name)
            if name not in ("balance_resources",):
                _check_nonneg(arr, name)
            object.__setattr__(self, name, arr)
        tr = np.asarray(self.transient)
        if tr.shape != (r,):
            raise SchemaError(f"transient must have shape ({r},), got {tr.shape}.")
        object.__setattr__(self, "transient", tr.astype(bool))
        _check_index(self.group, g, "group", "group")
        _check_index(self.balance_resources.ravel(), r, "balance_resources", "resource")
        _check_index(self.group_dependency, g, "group_dependency", "group")
        indptr = self.group_dependency_indptr
        if (
            indptr[0] != 0
            or (np.diff(indptr) < 0).any()
            or indptr[-1] != len(self.group_dependency)
        ):
            raise SchemaError(
                "group_dependency_indptr must start at 0, never decrease and end at "
                "len(group_dependency)."
            )
        for name in ("item_move_weight", "group_move_weight", "node_move_weight"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise InvalidValueError(f"{name} must be a non-negative integer, got {value!r}.")
            object.__setattr__(self, name, int(value))
        if self.group_move_limit is not None and self.group_move_limit < 0:
            raise InvalidValueError(
                f"group_move_limit must be non-negative or None, got {self.group_move_limit}."
            )
        # Normalise dependencies: a group trivially satisfies its own dependency, and a
        # repeated pair adds nothing; dropping both keeps the search's checks simple.
        owner = np.repeat(np.arange(g), np.diff(indptr))
        dep = self.group_dependency
        keep = owner != dep
        if len(dep):
            key = owner * max(g, 1) + dep
            _, first = np.unique(key, return_index=True)
            uniq = np.zeros(len(dep), bool)
            uniq[first] = True
            keep &= uniq
        if not keep.all():
            owner, dep = owner[keep], dep[keep]
            object.__setattr__(self, "group_dependency", dep)
            new_ptr = np.zeros(g + 1, dtype=_I64)
            new_ptr[1:] = np.cumsum(np.bincount(owner, minlength=g))
            object.__setattr__(self, "group_dependency_indptr", new_ptr)
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def n_nodes(self) -> int:
        return int(self.capacity.shape[0])

    @property
    def n_resources(self) -> int:
        return int(self.capacity.shape[1])

    @property
    def n_items(self) -> int:
        return int(self.demand.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.group_spread_min.shape[0])

    def check_assignment(self, assignment: Any, name: str = "assignment") -> np.ndarray:
        """An int64 copy of *assignment* (node of each item), validated.

        Raises
        ------
        InvalidValueError
            Wrong length, not integers, or a node index out of range.
        """
        arr = np.asarray(assignment)
        if arr.shape != (self.n_items,) or not (
            np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool
        ):
            raise InvalidValueError(
                f"{name} must be {self.n_items} integer node indices, got shape {arr.shape} "
                f"of {arr.dtype}."
            )
        out = arr.astype(_I64)
        _check_index(out, self.n_nodes, name, "node")
        return out


# -- evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One violated hard constraint.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    message : str
        Human-readable, naming the node, resource, group or domain.
    where : tuple of int
        The indices involved: ``(node, resource)`` for capacity and transient,
        ``(group, node)`` for conflict, ``(group,)`` for spread and group_move_limit,
        ``(group, depends_on, domain)`` for dependency.
    """

    kind: str
    message: str
    where: tuple[int, ...]


@dataclass(frozen=True)
class ReassignEvaluation:
    """Cost terms and hard-constraint violations of one assignment.

    Attributes
    ----------
    costs : dict of str to int
        The :data:`TERMS`, exact integers.
    violations : tuple of Violation
        Every violation, in :data:`KINDS` order.
    """

    costs: dict[str, int]
    violations: tuple[Violation, ...]

    @property
    def total(self) -> int:
        return sum(self.costs.values())

    @property
    def feasible(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        """Number of violations of each kind."""
        return {k: sum(v.kind == k for v in self.violations) for k in KINDS}


def _usage(problem: ReassignProblem, where: np.ndarray, items: np.ndarray | None = None) -> Any:
    """Per-node sum of demands (exact int64) of *items* (default all) placed at *where*."""
    out = np.zeros((problem.n_nodes, problem.n_resources), dtype=_I64)
    if items is None:
        np.add.at(out, where, problem.demand)
    else:
        np.add.at(out, where[items], problem.demand[items])
    return out


def _arrival_room(problem: ReassignProblem, initial: np.ndarray) -> np.ndarray:
    """(N, R): the most an item arriving at each node can use of each resource, whatever
    leaves: the capacity, less (for a transient resource) what the node's initial items
    use, since they hold it even after leaving."""
    return problem.capacity - _usage(problem, initial) * problem.transient.astype(_I64)


def node_costs(problem: ReassignProblem, usage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft-capacity and balance cost of every node for a usage matrix, shape (N,) each."""
    over = np.maximum(usage - problem.soft_capacity, 0)
    soft = over @ problem.soft_capacity_cost
    remaining = problem.capacity - usage
    bal = np.zeros(problem.n_nodes, dtype=_I64)
    for (r1, r2), target, cost in zip(
        problem.balance_resources, problem.balance_target, problem.balance_cost, strict=True
    ):
        bal += cost * np.maximum(target * remaining[:, r1] - remaining[:, r2], 0)
    return soft, bal


def evaluate_reassignment(
    problem: ReassignProblem, initial: Any, solution: Any, *, limit: int | None = 50
) -> ReassignEvaluation:
    """Exact cost terms and every hard-constraint violation of *solution*.

    Parameters
    ----------
    problem : ReassignProblem
    initial, solution : array_like of int, shape (P,)
        Node of each item before and after.
    limit : int or None
        Most violations listed per kind (None for all); costs are always complete.

    Returns
    -------
    ReassignEvaluation

    Raises
    ------
    InvalidValueError
        An assignment has the wrong length or names a node that does not exist.

    Examples
    --------
    >>> p = ReassignProblem.build([[5], [5]], [[3], [3]], group=[0, 0])
    >>> ev = evaluate_reassignment(p, [0, 1], [1, 1])
    >>> [v.kind for v in ev.violations], ev.feasible
    (['capacity', 'conflict'], False)
    """
    init = problem.check_assignment(initial, "initial")
    sol = problem.check_assignment(solution, "solution")
    usage = _usage(problem, sol)
    soft, bal = node_costs(problem, usage)
    moved = sol != init
    grp = problem.group
    moved_per_group = np.bincount(grp[moved], minlength=problem.n_groups)
    costs = {
        "soft_capacity": int(soft.sum()),
        "balance": int(bal.sum()),
        "item_move": problem.item_move_weight * int(problem.item_move_cost[moved].sum()),
        "group_move": problem.group_move_weight * int(moved_per_group.max(initial=0)),
        "node_move": problem.node_move_weight
        * int(problem.move_cost_matrix[init, sol].sum(dtype=_I64)),
    }
    out: list[Violation] = []
    cut = (lambda a: a) if limit is None else (lambda a: a[:limit])
    cap = problem.capacity

    for n, r in cut(np.argwhere(usage > cap)):
        out.append(
            Violation(
                "capacity",
                f"node {n} uses {usage[n, r]} of resource {r}, above its capacity {cap[n, r]}",
                (int(n), int(r)),
            )
        )
    if problem.transient.any():
        left = _usage(problem, init, np.flatnonzero(moved))
        during = usage + left
        bad = (during > cap) & (usage <= cap) & problem.transient[None, :]
        for n, r in cut(np.argwhere(bad)):
            out.append(
                Violation(
                    "transient",
                    f"node {n} needs {during[n, r]} of transient resource {r} while items "
                    f"move away from it ({left[n, r]} still in use by them), above its "
                    f"capacity {cap[n, r]}",
                    (int(n), int(r)),
                )
            )

    n_nodes = problem.n_nodes
    key = grp * n_nodes + sol
    uniq, count = np.unique(key, return_counts=True)
    for k in cut(uniq[count > 1]):
        g, n = divmod(int(k), n_nodes)
        out.append(
            Violation(
                "conflict",
                f"group {g} has {int(count[uniq == k][0])} items on node {n}; at most one",
                (g, n),
            )
        )

    dom = problem.spread_domain
    n_dom = int(dom.max()) + 1 if n_nodes else 1
    pairs = np.unique(grp * n_dom + dom[sol])
    distinct = np.bincount(pairs // n_dom, minlength=problem.n_groups)
    for g in cut(np.flatnonzero(distinct < problem.group_spread_min)):
        out.append(
            Violation(
                "spread",
                f"group {g} spans {distinct[g]} spread domains, fewer than its minimum "
                f"{problem.group_spread_min[g]}",
                (int(g),),
            )
        )

    ddom = problem.dependency_domain
    n_ddom = int(ddom.max()) + 1 if n_nodes else 1
    present = np.unique(grp * n_ddom + ddom[sol])
    owner, where = present // n_ddom, present % n_ddom
    indptr, deps = problem.group_dependency_indptr, problem.group_dependency
    per = np.diff(indptr)[owner]
    if per.sum():
        rows = np.repeat(np.arange(len(present)), per)
        starts = np.repeat(indptr[owner] - np.cumsum(per) + per, per)
        needed = deps[np.arange(len(rows)) + starts]
        missing = ~np.isin(needed * n_ddom + where[rows], present)
        for k in cut(np.flatnonzero(missing)):
            g, h, d = int(owner[rows[k]]), int(needed[k]), int(where[rows[k]])
            out.append(
                Violation(
                    "dependency",
                    f"group {g} has an item in dependency domain {d}, which holds no item "
                    f"of group {h} that it depends on",
                    (g, h, d),
                )
            )

    if problem.group_move_limit is not None:
        for g in cut(np.flatnonzero(moved_per_group > problem.group_move_limit)):
            out.append(
                Violation(
                    "group_move_limit",
                    f"group {g} moves {moved_per_group[g]} items, more than the limit "
                    f"{problem.group_move_limit}",
                    (int(g),),
                )
            )
    return ReassignEvaluation(costs=costs, violations=tuple(out))
