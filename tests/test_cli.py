"""The ``placement`` command line: outputs, exit statuses and error handling.

Most cases call :func:`placement.cli.main` in-process (fast, output through ``capsys``);
a few run ``python -m placement`` as a subprocess to check what a shell user sees: the
exit status and that no traceback reaches stderr.

The promises under test (``placement/cli.py``): ``analyze`` prints text, JSON or
Prometheus exposition; ``--fail-on`` makes it exit 1; every input error ends in exit 2
and one ``error:`` line on stderr. The last test checks the JSON report of a 100,000-shard
state against numbers recomputed here from the raw document, with the interchange spec's
definitions and without the library.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import placement
from placement.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_state_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid state (30 nodes, 500 shards) written with ``dump_state``."""
    state = placement.synthetic_state(30, 500, seed=3)
    assert placement.is_valid(state), "the fixture must be a valid state"
    path = tmp_path_factory.mktemp("cli") / "state.json"
    placement.dump_state(state, path)
    return path


@pytest.fixture(scope="module")
def example_state_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped example state (a failed node: it violates hard constraints)."""
    path = tmp_path_factory.mktemp("cli") / "example.json"
    placement.dump_state(placement.example_state(), path)
    return path


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_module(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "placement", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- demo -------------------------------------------------------------------------------


def test_demo_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "demo")
    assert code == 0
    assert err == ""
    assert "placement report" in out
    assert "status: CRITICAL" in out  # the example has a failed node and a hot node
    assert "example cluster" in out


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "demo", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["format"] == "placement.report/1"
    assert report["status"] in ("ok", "warning", "critical")
    assert report["status"] == placement.evaluate(placement.example_state()).status
    assert report["violation_counts"]["failed"] > 0


# -- analyze ----------------------------------------------------------------------------


def test_analyze_text(capsys: pytest.CaptureFixture[str], valid_state_path: Path) -> None:
    code, out, err = run_main(capsys, "analyze", str(valid_state_path))
    assert code == 0
    assert err == ""
    state = placement.load_state(valid_state_path)
    assert f"state {state.sha256()[:12]}" in out
    assert "hard constraints  (none violated)" in out
    for resource in state.cluster.resources:
        assert resource in out


def test_analyze_json(capsys: pytest.CaptureFixture[str], valid_state_path: Path) -> None:
    code, out, _ = run_main(capsys, "analyze", str(valid_state_path), "--json")
    assert code == 0
    report = json.loads(out)
    expected = placement.evaluate(placement.load_state(valid_state_path))
    assert report["status"] == expected.status
    assert report["shards_total"] == 500
    assert report["nodes_total"] == 30
    assert report["state_sha256"] == expected.state.sha256()
    assert sum(report["violation_counts"].values()) == 0
    ratios = {r["resource"]: r["imbalance_ratio"] for r in report["resources"]}
    assert ratios == {r.resource: r.imbalance_ratio for r in expected.resources}


def test_analyze_json_max_items_caps_lists_not_counts(
    capsys: pytest.CaptureFixture[str], example_state_path: Path
) -> None:
    code, out, _ = run_main(
        capsys, "analyze", str(example_state_path), "--json", "--max-items", "2"
    )
    assert code == 0
    report = json.loads(out)
    assert report["violation_counts"]["failed"] > 2
    assert len(report["violations"]["failed"]) == 2


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def test_analyze_prometheus(capsys: pytest.CaptureFixture[str], valid_state_path: Path) -> None:
    code, out, _ = run_main(capsys, "analyze", str(valid_state_path), "--prometheus")
    assert code == 0
    assert out.endswith("\n")
    samples: dict[tuple[str, str], float] = {}
    for line in out.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP placement_", "# TYPE placement_")), line
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[(match["name"], match["labels"] or "")] = float(match["value"])
    report = placement.evaluate(placement.load_state(valid_state_path))
    for r in report.resources:
        got = samples[("placement_imbalance_ratio", f'resource="{r.resource}"')]
        assert got == pytest.approx(r.imbalance_ratio, rel=1e-12)
    assert samples[("placement_shards", "")] == 500
    assert samples[("placement_status", "")] == ("ok", "warning", "critical").index(report.status)


@pytest.mark.parametrize(
    "output", [[], ["--json"], ["--prometheus"]], ids=["text", "json", "prometheus"]
)
def test_fail_on_violation(
    capsys: pytest.CaptureFixture[str],
    example_state_path: Path,
    valid_state_path: Path,
    output: list[str],
) -> None:
    bad, _, _ = run_main(
        capsys, "analyze", str(example_state_path), "--fail-on", "violation", *output
    )
    good, _, _ = run_main(
        capsys, "analyze", str(valid_state_path), "--fail-on", "violation", *output
    )
    assert (bad, good) == (1, 0)


def test_fail_on_never_is_default(
    capsys: pytest.CaptureFixture[str], example_state_path: Path
) -> None:
    code, _, _ = run_main(capsys, "analyze", str(example_state_path))
    assert code == 0


@pytest.mark.parametrize(
    ("level", "expected"), [("never", 0), ("warning", 1), ("critical", 1), ("violation", 1)]
)
def test_fail_on_levels_on_critical_state(
    capsys: pytest.CaptureFixture[str], example_state_path: Path, level: str, expected: int
) -> None:
    assert placement.evaluate(placement.load_state(example_state_path)).status == "critical"
    code, _, _ = run_main(capsys, "analyze", str(example_state_path), "--fail-on", level)
    assert code == expected


# -- input errors -----------------------------------------------------------------------


def _broken_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Input files that must each be refused, with a phrase the message must contain."""
    invalid_json = tmp_path / "invalid.json"
    invalid_json.write_text('{"format": "placement.state/1", "nodes": [', encoding="utf-8")
    wrong_tag = tmp_path / "wrong_tag.json"
    doc = placement.state_to_document(placement.synthetic_state(15, 20, seed=0))
    wrong_tag.write_text(json.dumps({**doc, "format": "placement.state/2"}), encoding="utf-8")
    return {
        "missing": (tmp_path / "does-not-exist.json", "does not exist"),
        "invalid-json": (invalid_json, "not valid JSON"),
        "wrong-format": (wrong_tag, "placement.state/2"),
    }


@pytest.mark.parametrize("case", ["missing", "invalid-json", "wrong-format"])
@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_input_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, output: list[str]
) -> None:
    path, phrase = _broken_inputs(tmp_path)[case]
    code, out, err = run_main(capsys, "analyze", str(path), *output)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert phrase in lines[0]
    assert path.name in lines[0] or case == "wrong-format"
    assert "Traceback" not in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["analyze"])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# -- as a subprocess ---------------------------------------------------------------------


def test_module_entry_point(valid_state_path: Path) -> None:
    result = run_module("analyze", str(valid_state_path), "--json", "--fail-on", "violation")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shards_total"] == 500
    assert result.stderr == ""


def test_module_entry_point_input_error(tmp_path: Path) -> None:
    path, _ = _broken_inputs(tmp_path)["invalid-json"]
    result = run_module("analyze", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")


# -- a large state, checked against an independent recomputation ------------------------


def _break_document(doc: dict[str, Any]) -> None:
    """Make the (valid) generated document unhealthy in known ways, in place: one failed
    and one draining node, shards missing one, two or all of their replicas. Exercises
    "active nodes only" in the imbalance ratio and every replication count."""
    nodes = doc["nodes"]
    nodes[7]["state"] = "failed"
    nodes[8]["state"] = "draining"
    for k, shard in enumerate(doc["shards"]):
        if k % 997 == 0:
            shard["nodes"] = []
        elif k % 101 == 0:
            shard["nodes"] = shard["nodes"][:1]
        elif k % 13 == 0:
            shard["nodes"] = shard["nodes"][:-1]


def _recompute(doc: dict[str, Any]) -> dict[str, Any]:
    """Per-resource imbalance ratio and replication counts from the raw document, with
    the spec's definitions (plain Python and numpy; nothing from placement)."""
    resources = doc["resources"]
    node_pos = {n["id"]: i for i, n in enumerate(doc["nodes"])}
    node_state = [n.get("state", "active") for n in doc["nodes"]]
    active = np.array([s == "active" for s in node_state])
    # JSON whole numbers load as int: float arrays keep the sums from being truncated.
    capacity = np.array(
        [[n["capacity"].get(r, 0) for r in resources] for n in doc["nodes"]], dtype=float
    )
    load = np.zeros(capacity.shape, dtype=float)
    counts = dict.fromkeys(
        ("under_replicated", "below_min", "unavailable", "failed", "draining"), 0
    )
    for shard in doc["shards"]:
        demand = [shard["demand"].get(r, 0) for r in resources]
        live = 0
        for node in shard["nodes"]:
            i = node_pos[node]
            load[i] += demand
            live += node_state[i] != "failed"
            if node_state[i] in ("failed", "draining"):
                counts[node_state[i]] += 1
        rf = shard["replicas"]
        counts["under_replicated"] += live < rf
        counts["below_min"] += live < shard.get("min_available", rf // 2 + 1)
        counts["unavailable"] += live == 0
    ratios = {}
    for j, r in enumerate(resources):
        utilization = load[active, j] / capacity[active, j]
        mean = load[active, j].sum() / capacity[active, j].sum()
        ratios[r] = float(utilization.max() / mean - 1)
    return {"imbalance_ratio": ratios, **counts}


def test_analyze_100k_shards_agrees_with_recomputation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    placement.dump_state(placement.synthetic_state(1000, 100_000, seed=5), path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert len(doc["shards"]) == 100_000
    _break_document(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")

    code, out, err = run_main(capsys, "analyze", str(path), "--json", "--max-items", "3")
    assert code == 0, err
    report = json.loads(out)
    expected = _recompute(doc)

    got = {r["resource"]: r["imbalance_ratio"] for r in report["resources"]}
    assert set(got) == set(expected["imbalance_ratio"])
    for resource, ratio in expected["imbalance_ratio"].items():
        assert math.isclose(got[resource], ratio, rel_tol=1e-9), (resource, got[resource], ratio)
    counts = report["violation_counts"]
    for kind in ("under_replicated", "below_min", "unavailable", "failed", "draining"):
        assert counts[kind] == expected[kind], kind
    # The breakage above must have produced something to count.
    assert 0 < expected["unavailable"] < expected["below_min"] < expected["under_replicated"]
    assert expected["failed"] > 0 and expected["draining"] > 0
    assert report["shards_total"] == 100_000
    assert report["nodes_by_state"] == {"active": 998, "draining": 1, "failed": 1}
