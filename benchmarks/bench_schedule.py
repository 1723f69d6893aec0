"""Scheduling benchmarks: tiers x scenarios, the estimate's quality beside the time.

Each case schedules a plan made by :mod:`placement.scenarios` on the tier's state (made
once per session and cached: the tier-L zone failure plan alone takes about 15 s) and
records in ``extra_info``: moves, waves, the estimated duration, its lower bound and
their ratio, temporary moves and cross-region bytes. ``links=False`` ignores the region
links' bandwidth, so nodes are the bottleneck (the harder case for wave packing).

The target (issue 4): a tier-L plan of about 300k moves scheduled in at most 2 s, with an
estimated duration at most 1.2 x its lower bound.

Run: ``python -m pytest benchmarks/bench_schedule.py --benchmark-only -k L``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import placement
from placement.plan import Plan
from placement.scenarios import plan_add_nodes, plan_failure
from placement.schedule import schedule

TIME_LIMIT_S = {"S": 10.0, "M": 30.0, "L": 60.0}


@pytest.fixture(scope="session")
def scenario_plan(tier_state):
    """``scenario_plan(tier, name)``: (state, plan) of a scenario, made once per session."""

    @functools.cache
    def make(tier: str, name: str) -> tuple[placement.State, Plan]:
        st = tier_state(tier)
        c = st.cluster
        if name == "fail-zone":
            new, p = plan_failure(st, zone=c.domain_names[1][0], time_limit_s=TIME_LIMIT_S[tier])
        elif name == "add-10pct":
            n_new = max(1, c.n_nodes // 10)
            rng = np.random.default_rng(1)
            picks = rng.choice(c.n_nodes, n_new, replace=False)
            loc = [[c.domain_leaf[k][c.domain_of[i, k]] for k in range(3)] for i in picks]
            new, p = plan_add_nodes(
                st,
                [f"new-{k}" for k in range(n_new)],
                c.capacity[picks],
                [[r, z, f"{z}-new"] for r, z, _ in loc],
                time_limit_s=TIME_LIMIT_S[tier],
            )
        else:
            raise ValueError(name)
        new.sha256()  # hashed once, outside the timing (cached on the state)
        return new, p

    # The first schedule imports scipy.optimize (about half a second, once per process).
    tiny = placement.synthetic_state(30, 300, seed=0)
    schedule(*plan_failure(tiny, [tiny.cluster.node_ids[0]]))
    return make


@pytest.mark.parametrize("links", [True, False], ids=["links", "nodes-only"])
@pytest.mark.parametrize("scenario", ["fail-zone", "add-10pct"])
@pytest.mark.parametrize("tier", ["S", "M", "L"])
def test_schedule(benchmark, scenario_plan, tier, scenario, links):
    state, p = scenario_plan(tier, scenario)
    result = benchmark.pedantic(
        schedule,
        args=(state, p),
        kwargs={"region_links": links},
        rounds=3 if tier == "L" else 5,
        iterations=1,
    )
    benchmark.extra_info.update(
        {
            "tier": tier,
            "scenario": scenario,
            "links": links,
            "n_moves": p.n_moves,
            "waves": result.n_waves,
            "duration_s": result.duration_s,
            "lower_bound_s": result.lower_bound_s,
            "duration_over_bound": result.ratio,
            "temporary_moves": int(result.temporary.sum()),
            "cross_region_bytes": result.stats["cross_region_bytes"],
            "wave_budget_s": result.stats["wave_budget_s"],
        }
    )
    assert sorted(np.concatenate(result.waves()).tolist()) == list(range(result.plan.n_moves))
    if tier == "L" and links:  # the target; smaller tiers are recorded only
        assert result.ratio is None or result.ratio <= 1.2
