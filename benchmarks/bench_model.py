"""Benchmarks of the model layer: building a state from arrays, evaluating it, reading JSON.

Tiers (``placement.TIERS``, replication 3): S = 100 nodes / 10,000 shards, M = 1,000 /
100,000, L = 10,000 / 1,000,000. Targets at tier L on a 2-core machine: at most 1 s and
2 GB for building the model from arrays and for ``evaluate``.

Each case records beside its time (``benchmark.extra_info``): the instance size, the
peak memory of one measured call (under tracemalloc, in a separate untimed call) and, for
``evaluate``, the quality figures of the report (imbalance ratio per resource, violation
total), so a speed-up that changes the answer shows up in the same table.

The inputs of the build benchmark are what a caller with columnar data would pass:
numpy arrays for demand, replication, placement and node columns; residency as classes
plus region sets; groups as integer codes plus names; clients as a CSR matrix. They are
extracted from a generated state once, outside the timing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import placement

# L runs a fixed 3 rounds of 1 call (each call takes about a second); S and M let
# pytest-benchmark calibrate the number of rounds.
L_ROUNDS = 3


@dataclass(frozen=True)
class ModelArrays:
    """Keyword arguments of ``Cluster.build``, ``Shards.build`` and ``Placement.build``."""

    cluster: dict[str, Any]
    shards: dict[str, Any]
    nodes: np.ndarray
    policy: placement.Policy


def model_arrays(state: placement.State) -> ModelArrays:
    """The columnar inputs that rebuild *state* (ids at the edges, indices inside)."""
    c, s = state.cluster, state.shards
    location = [
        [c.domain_leaf[k][c.domain_of[i, k]] for k in range(len(c.levels))]
        for i in range(c.n_nodes)
    ]
    links = c.link_records()
    residency_sets = [
        None if mask.all() else [c.regions[r] for r in np.flatnonzero(mask)]
        for mask in s.allowed_regions
    ]
    cluster = {
        "node_ids": list(c.node_ids),
        "resources": list(c.resources),
        "capacity": np.array(c.capacity),
        "levels": list(c.levels),
        "location": location,
        "size_resource": c.size_resource,
        "state": np.array(c.state),
        "bandwidth_bps": np.array(c.bandwidth_bps),
        "links": links,
    }
    shards = {
        "ids": np.array(s.ids),
        "demand": np.array(s.demand),
        "replicas": np.array(s.replicas),
        "min_available": np.array(s.min_available),
        "residency_class": np.array(s.residency_class),
        "residency_sets": residency_sets,
        "clients": s.clients.copy(),
        "group": np.array(s.group),
        "group_names": list(s.group_names),
    }
    return ModelArrays(cluster, shards, np.array(state.placement.nodes), state.policy)


def build_state(arrays: ModelArrays) -> placement.State:
    """The measured call of the build benchmark: validate and assemble a State."""
    cluster = placement.Cluster.build(**arrays.cluster)
    shards = placement.Shards.build(cluster, **arrays.shards)
    where = placement.Placement.build(arrays.nodes, n_nodes=cluster.n_nodes, shard_ids=shards.ids)
    return placement.State(cluster, shards, where, arrays.policy)


def run(benchmark: Any, tier: str, fn: Callable[..., Any], *args: Any) -> Any:
    if tier == "L":
        return benchmark.pedantic(fn, args=args, rounds=L_ROUNDS, iterations=1)
    return benchmark(fn, *args)


def record_size(benchmark: Any, state: placement.State, peak_mb: float) -> None:
    benchmark.extra_info["n_nodes"] = state.cluster.n_nodes
    benchmark.extra_info["n_shards"] = state.shards.n_shards
    benchmark.extra_info["peak_memory_mb"] = peak_mb


@pytest.mark.benchmark(group="build-from-arrays")
@pytest.mark.parametrize("tier", ["S", "M", "L"])
def test_build_from_arrays(
    benchmark: Any,
    tier: str,
    tier_state: Callable[[str], placement.State],
    peak_memory_mb: Callable[..., float],
) -> None:
    state = tier_state(tier)
    arrays = model_arrays(state)
    built = run(benchmark, tier, build_state, arrays)
    # The rebuilt state must be the same state, or the timing measures something else.
    assert built.placement.equals(state.placement)
    assert np.array_equal(built.shards.demand, state.shards.demand)
    assert np.array_equal(built.cluster.domain_of, state.cluster.domain_of)
    record_size(benchmark, built, peak_memory_mb(build_state, arrays))


@pytest.mark.benchmark(group="evaluate")
@pytest.mark.parametrize("tier", ["S", "M", "L"])
def test_evaluate(
    benchmark: Any,
    tier: str,
    tier_state: Callable[[str], placement.State],
    peak_memory_mb: Callable[..., float],
) -> None:
    state = tier_state(tier)
    report = run(benchmark, tier, placement.evaluate, state)
    record_size(benchmark, state, peak_memory_mb(placement.evaluate, state))
    for r in report.resources:
        benchmark.extra_info[f"imbalance_ratio_{r.resource}"] = r.imbalance_ratio
    benchmark.extra_info["violations_total"] = report.violations.total
    benchmark.extra_info["status"] = report.status


@pytest.fixture(scope="module")
def tier_m_document(tmp_path_factory: pytest.TempPathFactory, tier_state: Any) -> Path:
    path = tmp_path_factory.mktemp("bench") / "state-M.json"
    placement.dump_state(tier_state("M"), path)
    return path


@pytest.mark.benchmark(group="load-json")
def test_load_state_json_tier_m(
    benchmark: Any, tier_m_document: Path, peak_memory_mb: Callable[..., float]
) -> None:
    """For reference: the JSON edge is per-record Python work, unlike the array paths."""
    state = benchmark.pedantic(
        placement.load_state, args=(tier_m_document,), rounds=3, iterations=1
    )
    record_size(benchmark, state, peak_memory_mb(placement.load_state, tier_m_document))
    benchmark.extra_info["file_mb"] = round(tier_m_document.stat().st_size / 1e6, 1)
