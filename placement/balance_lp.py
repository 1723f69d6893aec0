"""An aggregated LP of rebalancing: a bound on the bytes to reach given peaks, and flows.

The per-node bound (:func:`placement.diffing.lower_bound_bytes`) is a fractional
knapsack: the fewest bytes whose removal brings each node under the peak its plan
reached. It cannot see that bytes must also *land* somewhere under the peaks in every
resource at once, nor that with two resources a node under the peak in one may have to
trade (give disk-heavy replicas to take iops-heavy ones). This LP sees both. It serves:

* **a lower bound**, carried by plans that trade on clusters of up to
  :data:`placement.diffing.LP_BOUND_UP_TO` active nodes (nodes grouped, 8 bins: 0.04 s
  at tier S, 0.2 s at M). At tier S add 10% the engine's plan reaches 2.0% imbalance
  with 63.5 TB; the knapsack bound there is 47.8 TB, the LP's 57.1 TB.
* **flows to follow** (``flows=True``, every type at its average amount per byte): the
  engine's trade round (:mod:`placement.solvers.greedy`) moves replicas of each type
  from the nodes the LP says should give to the nodes it says should take.

The model
---------
Replicas are binned into *types*: residency class x bin of their ratio of one non-size
resource to bytes. Nodes are aggregated into *groups* (one node per group on small
clusters; otherwise nodes of one region with similar excess in every resource). The
variables are the bytes of each type a group sends and takes. For group ``G``, type
``t`` and resource ``r`` (``e[n, r] = load - cap``, ``hi``/``lo`` the largest and smallest
amount of ``r`` per byte among the type's replicas)::

    sum_t hi[t, r] * send[t, G]                            >= sum_{n in G} max(e[n, r], 0)
    sum_t hi[t, r] * send[t, G] - lo[t, r] * take[t, G]     >= sum_{n in G} e[n, r]
    sum_t send[t, G]                                       >= sum_{n in G} knapsack[n]
    send[t, G] <= bytes of type t on G;   take[t, G] = 0 where residency forbids it
    sum_G send[t, G] + created[t] = sum_G take[t, G]        (every moved byte lands)

minimizing ``sum send + sum created``. Every plan that ends under the caps gives a
feasible point (its per-group sent and taken bytes; a chain A->B->C counts once in the
plan and at least once here), so the optimum is a lower bound: spread and integrality
are relaxed, the ``hi``/``lo`` per-byte amounts can only overstate what sending frees and
understate what taking adds, and summing node constraints over a group only loosens
them. ``knapsack[n]`` is the per-node bound the planner used before this LP: the fewest
bytes whose removal brings each resource of ``n`` under its cap (a fractional knapsack
over its own replicas; replicas outside their residency must leave as well).

For a bound (``conserve=True``, the default) the binned resource ``b`` is modelled more
closely. Each type's sent and taken bytes are split into a part at ``hi[t, b]`` and a
part at ``lo[t, b]`` per byte; any real mix of the type's replicas is such a split.
The amount of ``b`` is then conserved per type, like the bytes: what leaves some
nodes arrives on others. So senders cannot all free ``hi`` while takers all add
``lo``. And what a group sends of ``b`` is capped by the tangents of its send curve:
its replicas in decreasing ``b`` per byte, which is the most any choice of that many
bytes can carry. At tier S add 10% (8 bins, nodes grouped), against 63.5 TB moved,
these raise the bound from 55.8 to 57.1 TB.

Examples
--------
>>> import numpy as np, placement
>>> st = placement.synthetic_state(40, 2000, seed=3)
>>> caps = 1.02 * fair_loads(st)          # 2% above the mean in every resource
>>> lp = solve_balance_lp(st, caps)
>>> lp.status, lp.bytes_bound > 0
('optimal', True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from placement._arrays import stable_order
from placement.constraints import Violations, check, node_load
from placement.errors import InvalidValueError
from placement.model import State

__all__ = [
    "BalanceLP",
    "KnapsackCurves",
    "fair_loads",
    "knapsack_bytes",
    "must_leave_bytes",
    "solve_balance_lp",
]

#: Up to this many active nodes, every node is its own group (the LP stays under ~0.3 s).
EXACT_GROUPS_UP_TO = 1500
#: Excess bins per resource when nodes are grouped (with regions: at most a few thousand
#: groups, the LP solves in well under a second at 10,000 nodes).
EXCESS_BINS = 10
#: Where the bound's tangent cuts touch each group's send curve, as shares of the bytes
#: it holds (plans send a few percent of a node; more points added nothing measurable).
TANGENT_AT = (0.0, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class BalanceLP:
    """Solution of :func:`solve_balance_lp`.

    Attributes
    ----------
    status : str
        ``"optimal"``, ``"infeasible"`` (no fractional plan reaches the caps),
        ``"time limit"`` or ``"unsupported"`` (a replica of zero bytes carries another resource, so bytes
        cannot bound its moves).
    bytes_bound : float
        The LP optimum in bytes: a lower bound on what any plan reaching the caps moves
        (0 unless optimal).
    seconds : float
        Time to build and solve.
    n_groups, n_types : int
        Size of the aggregation.
    kind : numpy.ndarray or None
        (S,) type of each shard; with *flows* only.
    send_bytes, take_bytes : numpy.ndarray or None
        (types, N) bytes of each type each node sends and takes at the optimum (a
        group's amounts split over its nodes); with *flows* only. The engine follows
        them to trade replicas between nodes (see :mod:`placement.solvers.greedy`).
    """

    status: str
    bytes_bound: float
    seconds: float
    n_groups: int
    n_types: int
    kind: np.ndarray | None = None
    send_bytes: np.ndarray | None = None
    take_bytes: np.ndarray | None = None


def fair_loads(state: State) -> np.ndarray:
    """(N, R) load each active node would carry at the mean utilization (0 elsewhere).

    The mean counts every shard fully replicated on the active nodes.
    """
    c, s = state.cluster, state.shards
    total = (s.demand * s.replicas[:, None]).sum(axis=0)
    act_cap = c.capacity[c.active].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(act_cap > 0, total / act_cap, 0.0)
    return np.where(c.active[:, None], mean[None, :] * c.capacity, 0.0)


def knapsack_bytes(
    node: np.ndarray, amount: np.ndarray, size: np.ndarray, need: np.ndarray, n_nodes: int
) -> np.ndarray:
    """Per node, the fewest bytes whose removal frees *need* of a resource (fractional).

    *node*, *amount* and *size* describe the replicas (their node, their amount of the
    resource, their bytes); replicas are removed in decreasing amount per byte.
    """
    return KnapsackCurves(node, amount, size, n_nodes).bytes_for(need)


def must_leave_bytes(
    node: np.ndarray,
    shard: np.ndarray,
    demand: np.ndarray,
    need: np.ndarray,
    size_index: int,
    base: np.ndarray,
) -> np.ndarray:
    """Per node, the fewest bytes that must leave it whatever else happens.

    The largest of *base* (N,) (bytes that must leave anyway, e.g. outside residency)
    and, per resource r, the bytes whose removal frees ``need[:, r]`` (N, R): the need
    itself for the size resource, the fractional knapsack (:func:`knapsack_bytes`) for
    the others. *node* and *shard* list the replicas that may leave (their node and
    shard row of *demand*).
    """
    size = demand[:, size_index]
    must = base.astype(float, copy=True)
    for r in range(need.shape[1]):
        need_r = need[:, r]
        if not (need_r > 0).any():
            continue
        if r == size_index:
            must = np.maximum(must, need_r)
            continue
        mine = need_r[node] > 0  # only nodes with a need take part in the knapsack
        must = np.maximum(
            must,
            knapsack_bytes(
                node[mine], demand[shard[mine], r], size[shard[mine]], need_r, need.shape[0]
            ),
        )
    return must


def _curve_tangents(
    group: np.ndarray, amount: np.ndarray, size: np.ndarray, n_groups: int, at: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Tangents of each group's most-amount-per-byte curve, at shares *at* of its bytes.

    The curve maps bytes sent to the largest amount they can carry: the group's replicas
    (*group* < 0: none) in decreasing amount per byte, the last one fractional; it is
    concave, so each tangent lies above it everywhere. Returns (intercept, slope), each
    (len(at), n_groups): amount <= intercept + slope * bytes.
    """
    ok = group >= 0
    group, amount, size = group[ok], amount[ok], size[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(size > 0, amount / size, 0.0)
    order = np.lexsort((-ratio, group))
    group, ratio, size = group[order], ratio[order], size[order]
    cum_bytes = np.cumsum(size)
    cum_amount = np.cumsum(ratio * size)
    start = np.searchsorted(group, np.arange(n_groups))
    end = np.searchsorted(group, np.arange(n_groups), side="right")
    held = end > start
    before_bytes = np.where(start > 0, cum_bytes[np.maximum(start - 1, 0)], 0.0)
    before_amount = np.where(start > 0, cum_amount[np.maximum(start - 1, 0)], 0.0)
    total = np.where(held, cum_bytes[np.maximum(end - 1, 0)] - before_bytes, 0.0)
    intercept = np.zeros((len(at), n_groups))
    slope = np.zeros((len(at), n_groups))
    if not held.any():
        return intercept, slope
    for i, share in enumerate(at):
        goal = before_bytes + share * total
        # The replica whose span of the curve holds the point: its ratio is the slope.
        k = np.searchsorted(cum_bytes, goal, side="left")
        k = np.minimum(np.clip(k, start, np.maximum(end - 1, start)), cum_bytes.size - 1)
        at_bytes = share * total
        at_amount = (cum_amount[k] - ratio[k] * size[k] - before_amount) + ratio[k] * (
            goal - (cum_bytes[k] - size[k])
        )
        slope[i] = np.where(held, ratio[k], 0.0)
        intercept[i] = np.where(held, at_amount - ratio[k] * at_bytes, 0.0)
    return intercept, slope


class KnapsackCurves:
    """Each node's cheapest bytes-for-resource curve, sorted once, asked many times.

    For a resource, the replicas of every node in decreasing amount per byte: removing
    a prefix frees the most of the resource per byte. :meth:`bytes_for` answers, for any
    per-node *need*, the bytes of the shortest prefix that frees it (the last replica
    taken fractionally), in one ``searchsorted`` (so a bisection over levels costs one
    sort, not one per step).
    """

    def __init__(self, node: np.ndarray, amount: np.ndarray, size: np.ndarray, n_nodes: int):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(size > 0, amount / size, np.inf)
        # By node, then by decreasing ratio: two passes (a float sort, then a stable
        # radix sort of the node ids) are 5x faster than one lexsort at a million replicas.
        by_ratio = np.argsort(-ratio)
        order = by_ratio[stable_order(node[by_ratio], n_nodes)]
        node = node[order]
        self.size, self.ratio = size[order], ratio[order]
        self.cum_amount = np.concatenate([[0.0], np.cumsum(amount[order])])
        self.cum_bytes = np.concatenate(
            [[0.0], np.cumsum(np.where(np.isfinite(self.ratio), self.size, 0.0))]
        )
        self.start = np.searchsorted(node, np.arange(n_nodes))
        self.end = np.searchsorted(node, np.arange(n_nodes), side="right")

    def bytes_for(self, need: np.ndarray) -> np.ndarray:
        """(N,) fewest bytes per node whose removal frees *need* (N,) of the resource."""
        start, end, cum_amount = self.start, self.end, self.cum_amount
        goal = cum_amount[start] + need
        # First replica (in ratio order) at which the cumulative amount reaches the goal.
        k = np.searchsorted(cum_amount, goal, side="left") - 1
        k = np.clip(k, start, np.maximum(end - 1, start))
        out = np.zeros(need.shape[0])
        has = (need > 0) & (end > start)
        kk = k[has]
        last = np.minimum(kk, len(self.ratio) - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            partial = (goal[has] - cum_amount[kk]) / self.ratio[last]
        partial = np.where(np.isfinite(partial), np.maximum(partial, 0.0), 0.0)
        out[has] = (
            self.cum_bytes[kk] - self.cum_bytes[start[has]] + np.minimum(partial, self.size[last])
        )
        return out


def solve_balance_lp(
    state: State,
    caps: np.ndarray,
    *,
    nodes: np.ndarray | None = None,
    bins: int = 8,
    exact_groups_up_to: int = EXACT_GROUPS_UP_TO,
    flows: bool = False,
    violations: Violations | None = None,
    load: np.ndarray | None = None,
    time_limit_s: float | None = None,
    conserve: bool = True,
) -> BalanceLP:
    """Fewest bytes (fractionally) that bring every active node's load under *caps*.

    Parameters
    ----------
    state : State
        Cluster, shards and policy; its placement is the start unless *nodes* is given.
    caps : numpy.ndarray
        (N, R) load each node may end with; rows of inactive nodes are ignored (they
        end empty).
    nodes : numpy.ndarray, optional
        (S, W) placement to start from.
    bins : int
        Bins of replicas by their ratio of one non-size resource to bytes (more bins:
        tighter bound, larger LP).
    exact_groups_up_to : int
        Up to this many active nodes, each node is its own group.
    flows : bool
        Solve for a plan to follow instead of a bound: every type moves its *average*
        amount per byte, and the per-node flows of each type are returned (``kind``,
        ``send_bytes``, ``take_bytes``). ``bytes_bound`` is then an estimate, not a bound.
    violations, load : optional
        :func:`~placement.constraints.check` and node loads of the start placement,
        when the caller has them.
    time_limit_s : float, optional
        Limit on the LP solve; when reached the status is ``"time limit"`` (no bound:
        only an optimum bounds).
    conserve : bool
        For a bound (not *flows*): conserve the binned resource per type and cut with
        the tangents of each group's send curve (tighter, about 1.5x the time). False
        gives the plain model, every sender at ``hi`` and every taker at ``lo``.

    Returns
    -------
    BalanceLP

    Raises
    ------
    InvalidValueError
        *caps* is not an (N, R) array of numbers.
    """
    # (Imported here: scipy.optimize costs 0.3 s to import, and the plan builder, which
    # imports this module for its knapsack, needs it only for plans that trade.)
    import scipy.optimize
    import scipy.sparse as sp

    t0 = time.perf_counter()
    c, s = state.cluster, state.shards
    nodes = state.placement.nodes if nodes is None else nodes
    n_nodes, n_res = c.n_nodes, c.n_resources
    size_j = c.size_index
    size = s.demand[:, size_j]
    act = c.active

    def result(status: str, value: float = 0.0, g: int = 0, t: int = 0) -> BalanceLP:
        return BalanceLP(status, value, time.perf_counter() - t0, g, t)

    others = [r for r in range(n_res) if r != size_j]
    if ((size <= 0) & (s.demand[:, others] > 0).any(axis=1)).any():
        return result("unsupported")
    caps = np.asarray(caps, dtype=float)
    if caps.shape != (n_nodes, n_res) or np.isnan(caps).any():
        raise InvalidValueError(
            f"caps must be a ({n_nodes}, {n_res}) array of loads (nodes x resources "
            f"{list(c.resources)}) without NaN; got shape {caps.shape}."
        )
    caps = np.where(act[:, None], caps, 0.0)
    v = check(state, nodes) if violations is None else violations
    load = node_load(state, nodes) if load is None else load
    rows, cols = np.nonzero(nodes >= 0)
    where = nodes[rows, cols].astype(np.int64)
    live = c.alive[where]
    # Replicas to create: on failed nodes, or missing altogether.
    missing = np.maximum(s.replicas - (nodes >= 0).sum(axis=1), 0)

    # -- types: residency class x ratio bin ---------------------------------------------
    if others and bins > 1:
        # Bin by the resource whose amount per byte varies most (the one bytes
        # alone describe worst).
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = [
                float(np.std(s.demand[size > 0, r] / size[size > 0]))
                / max(float(np.mean(s.demand[size > 0, r] / size[size > 0])), 1e-300)
                for r in others
            ]
        r_bin = others[int(np.argmax(spread))]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(size > 0, s.demand[:, r_bin] / size, 0.0)
        edges = np.quantile(ratio, np.linspace(0, 1, bins + 1)[1:-1])
        r_of = np.searchsorted(edges, ratio, side="right")
    else:
        bins = 1
        r_bin = -1
        r_of = np.zeros(s.n_shards, dtype=np.int64)
    kind = s.residency_class.astype(np.int64) * bins + r_of
    n_types = s.allowed_regions.shape[0] * bins
    with np.errstate(divide="ignore", invalid="ignore"):
        per_byte = np.where(size[:, None] > 0, s.demand / size[:, None], 0.0)
    hi = np.zeros((n_types, n_res))
    lo = np.full((n_types, n_res), np.inf)
    np.maximum.at(hi, kind, per_byte)
    np.minimum.at(lo, kind, per_byte)
    lo[~np.isfinite(lo)] = 0.0
    if flows:
        # A plan to follow, not a bound: each type moves its average amount per byte
        # (with the extremes, sending looks more effective than any real choice).
        type_bytes = np.bincount(kind, weights=size, minlength=n_types)
        for r in range(n_res):
            amount = np.bincount(kind, weights=s.demand[:, r], minlength=n_types)
            hi[:, r] = lo[:, r] = np.where(
                type_bytes > 0, amount / np.maximum(type_bytes, 1e-300), 0.0
            )
    # Bytes (and amounts of every resource) of the replicas to create, per type.
    created_amount = np.zeros((n_types, n_res))
    for r in range(n_res):
        created_amount[:, r] = np.bincount(
            kind, weights=s.demand[:, r] * missing, minlength=n_types
        ) + np.bincount(kind[rows[~live]], weights=s.demand[rows[~live], r], minlength=n_types)
    created = created_amount[:, size_j]

    # -- groups -------------------------------------------------------------------------
    holds = c.alive & (act | (load > 0).any(axis=1))
    excess = np.where(holds[:, None], load - caps, 0.0)
    if int(act.sum()) <= exact_groups_up_to:
        group = np.where(holds, np.arange(n_nodes), -1)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(caps > 0, excess / caps, np.where(excess > 0, 1.0, 0.0))
        key = c.region_of.astype(np.int64) * 2 + (~act).astype(np.int64)
        for r in range(n_res):
            q = np.clip(rel[:, r], -1.0, 1.0)
            # Finer bins near zero, where nodes trade; one bin each for far below / above.
            b = np.searchsorted(np.linspace(-0.25, 0.25, EXCESS_BINS - 1), q)
            key = key * (EXCESS_BINS + 1) + b
        _, group = np.unique(np.where(holds, key, -1), return_inverse=True)
        group = np.where(holds, group - int((~holds).any()), -1)
    n_groups = int(group.max()) + 1 if (group >= 0).any() else 0
    if n_groups == 0:
        return result("optimal", float(created.sum()), 0, n_types)
    in_g = group >= 0
    g_idx = group[in_g]

    def by_group(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_groups,) + values.shape[1:])
        np.add.at(out, g_idx, values[in_g])
        return out

    ex_plus = by_group(np.maximum(excess, 0.0))  # (G, R)
    ex_sum = by_group(excess)
    # Per-node knapsack: bytes that must leave each node whatever else happens.
    outside = np.zeros(n_nodes)
    if len(v.residency):
        np.add.at(outside, v.residency[:, 1], size[v.residency[:, 0]])
    lr, lw = rows[live], where[live]
    must = must_leave_bytes(lw, lr, s.demand, np.maximum(excess, 0.0), size_j, outside)
    knap = by_group(must[:, None])[:, 0]
    have = np.zeros((n_types, n_groups))
    gl = group[lw]
    ok = gl >= 0
    np.add.at(have, (kind[lr[ok]], gl[ok]), size[lr[ok]])
    g_region = np.zeros(n_groups, dtype=np.int64)
    g_active = np.zeros(n_groups, dtype=bool)
    g_region[g_idx] = c.region_of[in_g]
    g_active[g_idx] = act[in_g]
    may_take = np.repeat(s.allowed_regions[:, g_region], bins, axis=0) & g_active[None, :]

    # -- the LP (bytes in units of an average node's bytes; rows scaled per resource) ---
    unit = max(float(load[:, size_j].sum()) / max(int(holds.sum()), 1), 1.0)
    res_unit = np.maximum(np.abs(load).sum(axis=0) / max(int(holds.sum()), 1), 1e-300)
    send_ok = np.flatnonzero(have.ravel() > 0)
    take_ok = np.flatnonzero(may_take.ravel())
    n_send, n_take = send_ok.size, take_ok.size
    st, sg = np.divmod(send_ok, n_groups)
    tt, tg = np.divmod(take_ok, n_groups)
    # Without *flows*, the binned resource's amount per byte spans [lo, hi] within a
    # type, and a bound must allow any mix. Each type's bytes are split in two parts, one
    # at hi and one at lo per byte (any amount in between is such a mix), on the sending
    # side and on the taking side, and the amount is conserved per type like the bytes
    # (what leaves some nodes arrives on others). Senders at hi and takers at lo at once,
    # which no plan can do, are then excluded: tier S add 10%, 8 bins, 52.1 -> 55.8 TB
    # against 63.5 TB moved. (Amount variables bounded by rows lo*bytes <= x <= hi*bytes
    # gave the same bound 70x slower.)
    split = conserve and not flows and r_bin >= 0
    parts = 2 if split else 1
    n_var = parts * (n_send + n_take)
    send_cols = [p * n_send + np.arange(n_send) for p in range(parts)]
    take_cols = [parts * n_send + p * n_take + np.arange(n_take) for p in range(parts)]
    a_rows: list[np.ndarray] = []
    a_cols: list[np.ndarray] = []
    a_vals: list[np.ndarray] = []
    b_ub: list[np.ndarray] = []
    row = 0
    scale = unit / res_unit

    def rate(r: int, part: int, sending: bool) -> np.ndarray:
        """Amount of *r* per byte of each sent (or taken) variable of one part."""
        types = st if sending else tt
        if split and r == r_bin:
            return (hi if part == 0 else lo)[types, r]
        return (hi if sending else lo)[types, r]  # overstate what leaves, understate what lands

    for r in range(n_res):
        sent = [(send_cols[p], -rate(r, p, True) * scale[r]) for p in range(parts)]
        taken = [(take_cols[p], rate(r, p, False) * scale[r]) for p in range(parts)]
        # (a) sent r covers the nodes' excess: -hi*send <= -ex_plus
        for cols, vals in sent:
            a_rows.append(row + sg)
            a_cols.append(cols)
            a_vals.append(vals)
        b_ub.append(-ex_plus[:, r] / res_unit[r])
        row += n_groups
        # (b) net: -hi*send + lo*take <= -ex_sum
        for cols, vals in sent:
            a_rows.append(row + sg)
            a_cols.append(cols)
            a_vals.append(vals)
        for cols, vals in taken:
            a_rows.append(row + tg)
            a_cols.append(cols)
            a_vals.append(vals)
        b_ub.append(-ex_sum[:, r] / res_unit[r])
        row += n_groups
    # (c) the per-node knapsacks: -send <= -knap
    for cols in send_cols:
        a_rows.append(row + sg)
        a_cols.append(cols)
        a_vals.append(-np.ones(n_send))
    b_ub.append(-knap / unit)
    row += n_groups
    if split and TANGENT_AT:
        # (d) what a group can send of the binned resource: at most its curve, the
        # group's replicas taken in decreasing amount per byte (concave in the bytes
        # sent), so at most every tangent of it. Tier S add 10%, 8 bins: 55.8 -> 57.1 TB.
        amount_at, slope = _curve_tangents(
            group[lw], s.demand[lr, r_bin], size[lr], n_groups, TANGENT_AT
        )
        for k in range(len(TANGENT_AT)):
            # amount - slope * bytes <= amount_at - slope * bytes_at (bytes_at in the
            # intercept already); in the LP's units.
            for p in range(parts):
                a_rows.append(row + sg)
                a_cols.append(send_cols[p])
                a_vals.append((rate(r_bin, p, True) - slope[k, sg]) * scale[r_bin])
            b_ub.append(amount_at[k] / res_unit[r_bin])
            row += n_groups
    if split:
        # A group sends at most the bytes of the type it holds (both parts together).
        for cols in send_cols:
            a_rows.append(row + np.arange(n_send))
            a_cols.append(cols)
            a_vals.append(np.ones(n_send))
        b_ub.append(have.ravel()[send_ok] / unit)
        row += n_send
    a_ub = sp.csr_matrix(
        (np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))),
        shape=(row, n_var),
    )
    # Every moved byte lands (and, split, every moved amount of the binned resource).
    eq_rows: list[np.ndarray] = []
    eq_cols: list[np.ndarray] = []
    eq_vals: list[np.ndarray] = []
    b_eq = [-created / unit]
    for p in range(parts):
        eq_rows += [st, tt]
        eq_cols += [send_cols[p], take_cols[p]]
        eq_vals += [np.ones(n_send), -np.ones(n_take)]
    if split:
        for p in range(parts):
            eq_rows += [n_types + st, n_types + tt]
            eq_cols += [send_cols[p], take_cols[p]]
            eq_vals += [
                rate(r_bin, p, True) * scale[r_bin],
                -rate(r_bin, p, False) * scale[r_bin],
            ]
        b_eq.append(-created_amount[:, r_bin] / res_unit[r_bin])
    a_eq = sp.csr_matrix(
        (np.concatenate(eq_vals), (np.concatenate(eq_rows), np.concatenate(eq_cols))),
        shape=(n_types * (2 if split else 1), n_var),
    )
    bounds = np.zeros((n_var, 2))
    bounds[:, 1] = np.inf
    if not split:
        bounds[:n_send, 1] = have.ravel()[send_ok] / unit
    n_sent_vars = parts * n_send
    res = scipy.optimize.linprog(
        np.r_[np.ones(n_sent_vars), np.zeros(n_var - n_sent_vars)],
        A_ub=a_ub,
        b_ub=np.concatenate(b_ub),
        A_eq=a_eq,
        b_eq=np.concatenate(b_eq),
        bounds=bounds,
        method="highs",
        options={} if time_limit_s is None else {"time_limit": max(float(time_limit_s), 0.01)},
    )
    if res.status == 2:
        return result("infeasible", g=n_groups, t=n_types)
    if res.status == 1:
        return result("time limit", g=n_groups, t=n_types)
    if res.status != 0:
        return result(f"solver: {res.message}", g=n_groups, t=n_types)
    send = np.clip(res.x[:n_sent_vars], 0.0, None) * unit
    # The solver's optimum is feasible within its tolerances; shave it so rounding never
    # turns the bound into an overstatement.
    value = (float(send.sum()) + float(created.sum())) * (1 - 1e-6)
    if not flows:
        return result("optimal", value, n_groups, n_types)
    take = np.clip(res.x[n_send:], 0.0, None) * unit  # (flows: one part, no split)
    g_send = np.zeros((n_types, n_groups))
    g_take = np.zeros((n_types, n_groups))
    np.add.at(g_send, (st, sg), send)
    np.add.at(g_take, (tt, tg), take)
    # Per node: a group's sends in proportion to what each node holds of the type, its
    # takes in proportion to each node's room in bytes.
    node_have = np.zeros((n_types, n_nodes))
    np.add.at(node_have, (kind[lr], lw), size[lr])
    node_have[:, ~in_g] = 0.0
    gi = np.maximum(group, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        have_g = np.zeros((n_groups, n_types))
        np.add.at(have_g, g_idx, node_have[:, in_g].T)
        have_g = have_g.T
        send_n = np.nan_to_num(g_send[:, gi] * node_have / have_g[:, gi])
        room = np.where(in_g & act, np.maximum(caps[:, size_j] - load[:, size_j], 0.0) + 1.0, 0.0)
        room_g = np.bincount(g_idx, weights=room[in_g], minlength=n_groups)
        take_n = np.nan_to_num(g_take[:, gi] * (room / room_g[gi])[None, :])
    send_n[:, ~in_g] = 0.0
    take_n[:, ~in_g] = 0.0
    return BalanceLP(
        "optimal", value, time.perf_counter() - t0, n_groups, n_types, kind, send_n, take_n
    )
