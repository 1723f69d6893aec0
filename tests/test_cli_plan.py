"""``placement plan``: the plan document, progress lines, the exact method, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import placement
from placement.cli import main
from placement.io import dump_state, load_state
from placement.plan import load_plan
from placement.scenarios import with_node_state


@pytest.fixture(scope="module")
def drained_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = placement.synthetic_state(40, 2000, seed=7)
    state = with_node_state(state, [state.cluster.node_ids[3]], "draining")
    path = tmp_path_factory.mktemp("cli") / "state.json"
    dump_state(state, path)
    return path


def test_plan_writes_a_valid_document_and_a_summary(
    drained_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    code = main(["plan", str(drained_path), "-o", str(out), "--quiet", "--seed", "3"])
    assert code == 0
    text = capsys.readouterr().out
    assert "moves" in text and "lower bound" in text and str(out) in text
    state = load_state(drained_path)
    p = load_plan(out, state)
    assert p.n_moves > 0
    assert not placement.check(state, p.target_nodes)
    doc = json.loads(out.read_text())
    assert doc["format"] == "placement.plan/1" and doc["state_sha256"] == state.sha256()
    assert {m["reason"] for m in doc["moves"]} >= {"drain"}


def test_progress_lines_reach_stderr_when_asked(
    drained_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["plan", str(drained_path), "-o", str(tmp_path / "p.json"), "--progress"])
    assert code == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no progress line"
    assert all(" steps, " in line and " moves, " in line for line in lines)


def test_quiet_and_progress_exclude_each_other(
    drained_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(drained_path), "-o", str(tmp_path / "p.json"), "--quiet", "--progress"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_exact_method_on_a_small_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    state = placement.synthetic_state(15, 60, seed=2)
    state = with_node_state(state, [state.cluster.node_ids[0]], "draining")
    path = tmp_path / "s.json"
    dump_state(state, path)
    out = tmp_path / "p.json"
    code = main(["plan", str(path), "-o", str(out), "--method", "exact", "--time-limit", "20"])
    assert code == 0, capsys.readouterr()
    p = load_plan(out, state)
    assert not placement.check(state, p.target_nodes)
    drained = state.placement.nodes == 0
    assert np.isin(p.source, [0]).sum() == drained.sum()  # exactly the drained replicas


def test_infeasible_budget_is_one_error_line_with_a_diagnosis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = placement.synthetic_state(30, 600, seed=4)
    state = with_node_state(state, [state.cluster.node_ids[1]], "failed")
    path = tmp_path / "s.json"
    dump_state(state, path)
    code = main(["plan", str(path), "-o", str(tmp_path / "p.json"), "--max-moves", "0"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "max_moves" in err[0] and "Diagnosis" in err[0]


@pytest.mark.parametrize("n_nodes,n_shards", [(15, 60), (40, 2000)])
def test_state_hash_survives_the_json_round_trip(tmp_path: Path, n_nodes: int, n_shards: int):
    """Regression: unused group names given to the array builder changed the hash, so a
    plan made in memory was refused for the same state loaded from its JSON."""
    state = placement.synthetic_state(n_nodes, n_shards, seed=2)
    path = tmp_path / "s.json"
    dump_state(state, path)
    assert load_state(path).sha256() == state.sha256()


def test_plan_line_reports_gap_and_latency_when_the_policy_has_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    state = placement.synthetic_state(40, 1000, seed=2)
    state = dataclasses.replace(
        state, policy=dataclasses.replace(state.policy, latency_target_ms=50.0)
    )
    path = tmp_path / "s.json"
    dump_state(state, path)
    code = main(["plan", str(path), "-o", str(tmp_path / "p.json"), "--quiet"])
    assert code == 0
    line = capsys.readouterr().out
    assert "gap " in line and "within 50 ms " in line
