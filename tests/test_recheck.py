"""``constraints.recheck``: checking only the changed rows gives exactly ``check``."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import placement
from placement import NodeState, check
from placement.constraints import KINDS, recheck

_STATE = placement.synthetic_state(30, 400, seed=4, eu_tenant_share=0.3)


def _same(a: placement.Violations, b: placement.Violations) -> None:
    assert np.array_equal(a.live_count, b.live_count)
    for kind in KINDS:
        assert np.array_equal(getattr(a, kind), getattr(b, kind)), kind
    assert np.array_equal(a.capacity_load, b.capacity_load)
    assert np.array_equal(a.capacity_limit, b.capacity_limit)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_changed=st.integers(0, 60),
    n_failed=st.integers(0, 3),
    n_draining=st.integers(0, 3),
)
def test_recheck_equals_a_full_check(seed, n_changed, n_failed, n_draining):
    # Random rewrites of random rows (other nodes, duplicates, empty slots), over a
    # cluster with failed and draining nodes and residency classes: every violation
    # array, in check's order, and the capacity entries are the same.
    rng = np.random.default_rng(seed)
    c = _STATE.cluster
    states = c.state.copy()
    picks = rng.choice(c.n_nodes, n_failed + n_draining, replace=False)
    states[picks[:n_failed]] = NodeState.FAILED
    states[picks[n_failed:]] = NodeState.DRAINING
    state = _STATE.with_cluster(c.with_state(states))
    before_nodes = state.placement.nodes
    before = check(state, before_nodes)
    nodes = before_nodes.copy()
    rows = rng.choice(nodes.shape[0], n_changed, replace=False)
    nodes[rows] = rng.integers(-1, c.n_nodes, (n_changed, nodes.shape[1]))
    # Some rows get a duplicate, so under-replication by duplicates is covered too.
    if n_changed:
        nodes[rows[0], 1] = nodes[rows[0], 0]
    _same(recheck(state, before, nodes, rows), check(state, nodes))


def test_recheck_of_nothing_changed_is_the_check_itself():
    before = check(_STATE)
    _same(recheck(_STATE, before, _STATE.placement.nodes, np.zeros(0, np.int64)), before)
