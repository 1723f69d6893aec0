"""ROADEF/EURO 2012 machine reassignment: files, exact evaluation, search, command line.

The evaluator must reproduce the official checker: the original cost of every instance
in the data README (the two smallest are shipped in ``tests/data/roadef2012``; the others
are read from ``$PLACEMENT_ROADEF_DIR`` or ``../shared/data/roadef2012`` when present),
and one constructed violation of each hard-constraint kind. The search's incremental
bookkeeping and vectorized move scores must agree with that evaluator exactly.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from placement.cli import main
from placement.errors import (
    InfeasibleError,
    InputError,
    InvalidValueError,
    SchemaError,
    UnknownIdError,
)
from placement.io.roadef import (
    format_roadef_solution,
    parse_roadef_assignment,
    parse_roadef_model,
    read_roadef_assignment,
    read_roadef_model,
    write_roadef_solution,
)
from placement.roadef import evaluate_roadef, roadef_problem, solve_roadef
from placement.solvers.reassign import (
    ReassignProblem,
    evaluate_reassignment,
    solve_reassignment,
)
from placement.solvers.reassign_search import _BIG, _START_METHOD, _Board, _Search

HERE = Path(__file__).parent / "data" / "roadef2012"
SHARED = Path(
    os.environ.get(
        "PLACEMENT_ROADEF_DIR", Path(__file__).resolve().parents[2] / "shared/data/roadef2012"
    )
)

#: Original cost (load, balance) of every instance with a model file, from the data README.
ORIGINAL = {
    "a1_1": (36_234_090, 13_294_660),
    "a1_2": (1_061_649_570, 0),
    "a1_3": (583_662_270, 0),
    "a1_4": (390_112_070, 242_387_530),
    "a1_5": (656_913_110, 125_276_580),
    "a2_1": (391_189_190, 0),
    "a2_2": (1_876_768_120, 0),
    "a2_3": (2_272_487_840, 0),
    "a2_4": (2_993_842_640, 229_673_490),
    "a2_5": (787_355_300, 0),
    "b_1": (7_644_173_180, 0),
    "b_2": (4_197_528_830, 983_965_000),
    "b_3": (6_336_834_660, 0),
    "b_4": (4_531_809_260, 4_677_767_120),
    "b_5": (12_426_813_010, 0),
    "b_6": (3_224_019_420, 9_525_841_820),
    "b_8": (14_068_207_250, 0),
    "b_9": (17_400_271_470, 5_834_370_050),
}


def _files(name: str) -> tuple[Path, Path]:
    for root in (HERE, SHARED):
        model, assignment = root / f"model_{name}.txt", root / f"assignment_{name}.txt"
        if model.exists() and assignment.exists():
            return model, assignment
    pytest.skip(f"instance {name} not found in {HERE} or {SHARED}")


def _load(name: str) -> tuple[Any, np.ndarray]:
    model, assignment = _files(name)
    inst = read_roadef_model(model)
    return inst, read_roadef_assignment(assignment, inst)


def _model(
    resources: list[tuple[int, int]],
    machines: list[tuple[int, int, list[int], list[int], list[int]]],
    services: list[tuple[int, list[int]]],
    processes: list[tuple[int, list[int], int]],
    balances: list[tuple[int, int, int, int]] = (),  # type: ignore[assignment]
    weights: tuple[int, int, int] = (1, 10, 100),
) -> str:
    """A model file's text from Python lists, in the file's order."""
    out: list[int] = [len(resources)]
    for flag, w in resources:
        out += [flag, w]
    out.append(len(machines))
    for nbh, loc, cap, safety, mmc in machines:
        out += [nbh, loc, *cap, *safety, *mmc]
    out.append(len(services))
    for spread, deps in services:
        out += [spread, len(deps), *deps]
    out.append(len(processes))
    for service, req, pmc in processes:
        out += [service, *req, pmc]
    out.append(len(balances))
    for b in balances:
        out += list(b)
    out += list(weights)
    return " ".join(map(str, out))


def _two_machines(transient: int = 0, **kw: Any) -> str:
    """Two machines (capacity 10, safety 8), two processes of 6 and 5 in services 0, 1."""
    return _model(
        resources=[(transient, 1)],
        machines=[
            (0, 0, [10], [8], [0, 3]),
            (kw.get("nbh1", 0), kw.get("loc1", 1), [10], [8], [5, 0]),
        ],
        services=kw.get("services", [(0, []), (0, [])]),
        processes=[(0, [6], 7), (kw.get("service1", 1), [5], 2)],
    )


# -- reading and writing ----------------------------------------------------------------


def test_reads_a1_1_columnar() -> None:
    inst, original = _load("a1_1")
    assert inst.stats() == {
        "resources": 2,
        "transient": 0,
        "machines": 4,
        "neighborhoods": 1,
        "locations": 4,
        "services": 79,
        "dependencies": 0,
        "processes": 100,
        "balance_costs": 1,
    }
    assert inst.capacity.dtype == np.int64 and inst.machine_move_cost.shape == (4, 4)
    assert (inst.process_move_weight, inst.service_move_weight, inst.machine_move_weight) == (
        1,
        10,
        100,
    )
    assert original.shape == (100,) and not original.flags.writeable
    with pytest.raises(ValueError):
        inst.capacity[0, 0] = 1  # frozen arrays


def test_solution_round_trip(tmp_path: Path) -> None:
    inst, original = _load("a1_1")
    path = tmp_path / "solution.txt"
    write_roadef_solution(path, original[::-1].copy())
    assert (read_roadef_assignment(path, inst) == original[::-1]).all()
    assert format_roadef_solution(np.array([3, 0, 1])) == "3 0 1\n"
    with pytest.raises(InvalidValueError):
        write_roadef_solution(path, np.array([[0, 1]]))
    with pytest.raises(InvalidValueError):
        write_roadef_solution(path, np.array([0, -1]))


GOOD = _two_machines()


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        (GOOD + " 7", SchemaError, ["token 33", "left over"]),
        (GOOD.rsplit(" ", 2)[0], SchemaError, ["ends after", "move weights"]),
        (GOOD.replace("0 1", "0 x1", 1), SchemaError, ["token 3", "'x1'"]),
        (GOOD.replace("10", "-10", 1), SchemaError, ["'-10'", "non-negative"]),
        ("1 2 1" + GOOD[5:], InvalidValueError, ["transient flag of resource 0", "0 or 1"]),
        (GOOD.replace("0 8 0 3", f"0 {2**31} 0 3"), InvalidValueError, ["2147483647"]),
        (
            _two_machines(services=[(0, [5]), (0, [])]),
            UnknownIdError,
            ["dependency 0 of service 0", "only 2 services"],
        ),
        (_two_machines(service1=4), UnknownIdError, ["the service of process 1", "is 4"]),
    ],
)
def test_model_errors_name_the_position(text: str, error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        parse_roadef_model(text, source="model m.txt")
    assert issubclass(error, InputError) and issubclass(error, ValueError)
    assert "model m.txt" in str(info.value)
    for w in words:
        assert w in str(info.value)


def test_balance_resource_out_of_range() -> None:
    text = _model(
        [(0, 1)], [(0, 0, [10], [8], [0])], [(0, [])], [(0, [1], 0)], balances=[(0, 3, 1, 1)]
    )
    with pytest.raises(UnknownIdError, match="resource r2 of balance cost 0 is 3"):
        parse_roadef_model(text)


def test_assignment_errors() -> None:
    inst = parse_roadef_model(GOOD)
    assert parse_roadef_assignment("0\n1\n", inst).tolist() == [0, 1]
    with pytest.raises(SchemaError, match="has 3 machine indices, but the model has 2"):
        parse_roadef_assignment("0 1 1", inst)
    with pytest.raises(UnknownIdError, match="the machine of process 1 is 2"):
        parse_roadef_assignment("0 2", inst)
    with pytest.raises(SchemaError, match="token 2 .line 1. is '1.5'"):
        parse_roadef_assignment("0 1.5", inst)


def test_mutated_models_parse_or_raise_input_errors() -> None:
    model, assignment = _files("a1_1")
    words = model.read_text().split()
    original_text = assignment.read_text()
    rng = np.random.default_rng(0)
    outcomes = {"parsed": 0, "rejected": 0}
    for _ in range(300):
        w = list(words)
        at = int(rng.integers(len(w)))
        kind = rng.integers(4)
        if kind == 0:
            del w[at]
        elif kind == 1:
            w = w[:at]
        elif kind == 2:
            w[at] = str(int(rng.integers(0, 200)))
        else:
            w.insert(at, str(int(rng.integers(0, 5))))
        try:
            inst = parse_roadef_model(" ".join(w))
            initial = parse_roadef_assignment(original_text, inst)
            evaluate_roadef(inst, initial, initial)
            outcomes["parsed"] += 1
        except InputError:
            outcomes["rejected"] += 1
    assert outcomes["parsed"] > 10 and outcomes["rejected"] > 100


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_roadef_model(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"1 0 \xff")
    with pytest.raises(SchemaError, match="not plain ASCII"):
        read_roadef_model(bad)


# -- exact evaluation -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_original_cost_matches_readme(name: str) -> None:
    inst, original = _load(name)
    costs, violations = evaluate_roadef(inst, original, original)
    load, balance = ORIGINAL[name]
    assert violations == []
    assert costs == {
        "load": load,
        "balance": balance,
        "process_move": 0,
        "service_move": 0,
        "machine_move": 0,
        "total": load + balance,
    }


def test_costs_by_hand() -> None:
    # Both processes on machine 1: usage 11 > capacity 10 (a violation, but costs are
    # still computed). Load: w 1 * (11 - 8). Moves: process 0 moved (PMC 7), one process
    # of service 0 moved (SMC 1), machine move 0 -> 1 costs 3.
    inst = parse_roadef_model(GOOD)
    costs, violations = evaluate_roadef(inst, [0, 1], [1, 1])
    assert costs == {
        "load": 3,
        "balance": 0,
        "process_move": 7,
        "service_move": 10,
        "machine_move": 300,
        "total": 320,
    }
    assert [v.kind for v in violations] == ["capacity"]
    assert violations[0].where == (1, 0)


def test_balance_cost_by_hand() -> None:
    # Resources r0, r1; target 2: cost = w * max(0, 2 * A0 - A1), A = C - U.
    text = _model(
        [(0, 0), (0, 0)],
        [(0, 0, [10, 10], [10, 10], [0])],
        [(0, [])],
        [(0, [1, 6], 0)],
        balances=[(0, 1, 2, 5)],
    )
    costs, _ = evaluate_roadef(parse_roadef_model(text), [0], [0])
    assert costs["balance"] == 5 * (2 * 9 - 4)


@pytest.mark.parametrize(
    ("text", "solution", "kind"),
    [
        (_two_machines(), [1, 1], "capacity"),
        # Swapping keeps U at 5 and 6, but the transient use of the process that left
        # stays on its original machine: 5 + 6 > 10 on both.
        (_two_machines(transient=1), [1, 0], "transient"),
        (_two_machines(service1=0, loc1=0), [0, 0], "conflict"),
        (_two_machines(services=[(2, []), (0, [])], service1=0, loc1=0), [0, 1], "spread"),
        (_two_machines(services=[(0, [1]), (0, [])], nbh1=1), [0, 1], "dependency"),
    ],
)
def test_each_hard_constraint_is_flagged(text: str, solution: list[int], kind: str) -> None:
    inst = parse_roadef_model(text)
    _, violations = evaluate_roadef(inst, [0, 1], solution)
    assert kind in {v.kind for v in violations}
    assert all(v.message for v in violations)


def test_transient_only_counts_transient_resources() -> None:
    inst = parse_roadef_model(_two_machines(transient=0))
    assert evaluate_roadef(inst, [0, 1], [1, 0]).violations == []


def test_flags_violations_on_a_real_instance() -> None:
    inst, original = _load("a1_2")
    # Everything on one machine breaks capacity (and the conflict rule).
    kinds = {v.kind for v in evaluate_roadef(inst, original, np.zeros_like(original))[1]}
    assert {"capacity", "conflict"} <= kinds


def test_wrong_solution_length() -> None:
    inst, original = _load("a1_1")
    with pytest.raises(InvalidValueError, match="100 integer node indices"):
        evaluate_roadef(inst, original, original[:-1])


# -- the general problem ----------------------------------------------------------------


def test_general_problem_validates() -> None:
    with pytest.raises(SchemaError, match="soft_capacity must have shape"):
        ReassignProblem.build([[5], [5]], [[1]], soft_capacity=[[1, 2]])
    with pytest.raises(InvalidValueError, match="demand must be non-negative"):
        ReassignProblem.build([[5], [5]], [[-1]])
    with pytest.raises(InvalidValueError, match="group_dependency"):
        ReassignProblem.build([[5]], [[1]], group_dependencies=[[3]])
    p = ReassignProblem.build(
        [[5], [5]], [[1], [1]], group=[0, 1], group_dependencies=[[0, 1, 1], []]
    )
    assert p.group_dependency.tolist() == [1]  # self-dependency and repeats dropped


def test_group_move_limit() -> None:
    # Four items of one group on nodes 0-3, each paying for usage above a zero watermark;
    # nodes 4 and 5 have room, so two items would move there, but the limit allows one.
    def problem(limit: int | None) -> ReassignProblem:
        return ReassignProblem.build(
            [[100]] * 6,
            [[10]] * 4,
            soft_capacity=[[0]] * 4 + [[100]] * 2,
            soft_capacity_cost=[1],
            group=[0, 0, 0, 0],
            group_move_limit=limit,
        )

    start = [0, 1, 2, 3]
    ev = evaluate_reassignment(problem(1), start, [4, 5, 2, 3])
    assert [v.kind for v in ev.violations] == ["group_move_limit"]
    free = solve_reassignment(problem(None), start, time_limit_s=5, max_rounds=1)
    assert int((free.assignment != start).sum()) == 2
    limited = solve_reassignment(problem(1), start, time_limit_s=5, max_rounds=1)
    assert limited.evaluation.feasible
    assert int((limited.assignment != start).sum()) == 1


def test_infeasible_start_is_refused() -> None:
    p = ReassignProblem.build([[5]], [[6]])
    with pytest.raises(InfeasibleError, match="violates hard constraints"):
        solve_reassignment(p, [0])


# -- the search agrees with the evaluator -------------------------------------------------


def test_incremental_state_matches_evaluator() -> None:
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    search = _Search(problem, original.copy(), seed=0)
    rng = np.random.default_rng(0)
    applied = 0
    for step in range(400):
        if step % 2:
            moves = [(int(rng.integers(inst.n_processes)), int(rng.integers(inst.n_machines)))]
        else:
            p, q = rng.integers(inst.n_processes, size=2)
            moves = [(int(p), int(search.node_of[q])), (int(q), int(search.node_of[p]))]
        if len({p for p, _ in moves}) < len(moves):
            continue
        if search._try(moves, threshold=int(_BIG)) is not None:  # any feasible change
            applied += 1
        if step % 50 == 0:
            ev = evaluate_reassignment(problem, original, search.node_of)
            assert ev.feasible and ev.total == search.total
    assert applied > 50
    ev = evaluate_reassignment(problem, original, search.node_of)
    assert ev.feasible and ev.total == search.total
    # Rebuilding the state from the assignment gives the same bookkeeping.
    fresh = _Search(problem, original.copy(), seed=0)
    fresh._reset(search.node_of)
    assert fresh.total == search.total
    for name in ("U", "E", "ncost", "loc_cnt", "dom_cnt", "moved_cnt", "hist"):
        assert (getattr(fresh, name) == getattr(search, name)).all(), name


@pytest.mark.parametrize("small_block", [0, 1 << 30], ids=["by-resource", "whole-block"])
@pytest.mark.parametrize("name", ["a1_2", "a1_1"])
def test_shift_scores_are_exact(name: str, small_block: int) -> None:
    inst, original = _load(name)
    problem = roadef_problem(inst)
    search = _Search(problem, original.copy(), seed=0)
    search.small_block = small_block  # each of the two ways of computing the scores
    search._shift_pass(float("inf"))  # away from the start, so some items are moved
    items = np.random.default_rng(1).choice(inst.n_processes, 12, replace=False)
    scores = search._shift_scores(items)
    checked = 0
    for k, p in enumerate(items):
        a = int(search.node_of[p])
        for b in range(inst.n_machines):
            if b == a:
                continue
            delta = search._try([(int(p), b)], threshold=int(_BIG))
            if scores[k, b] >= _BIG:
                assert delta is None, (p, b)  # masked means infeasible
            else:
                assert delta == scores[k, b], (p, b)  # scored means feasible, exact
                search._move(int(p), a)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", ["a1_2", "a2_2"])
def test_swap_scores_are_exact(name: str) -> None:
    inst, original = _load(name)
    # The swap scores leave the group-move term to the exact re-check; without it they
    # must equal the exact change for every feasible exchange. a2_2 has transient
    # resources, and a shift pass first moves items away from (and back to) their
    # initial nodes.
    problem = dataclasses.replace(roadef_problem(inst), group_move_weight=0)
    search = _Search(problem, original.copy(), seed=0)
    search._shift_pass(float("inf"))
    occupied = np.zeros((problem.n_groups, problem.n_nodes), dtype=np.int32)
    np.add.at(occupied, (problem.group, search.node_of), 1)
    rng = np.random.default_rng(2)
    checked = masked = 0
    for a in [0, 5, 17, 40]:
        others = np.flatnonzero(search.node_of != a)
        ib = np.sort(rng.choice(others, size=60, replace=False))
        ia, delta = search._swap_scores_node(a, ib, occupied)
        for i, p in enumerate(ia):
            for j, q in enumerate(ib):
                b = int(search.node_of[q])
                got = search._try([(int(p), b), (int(q), a)], threshold=int(_BIG))
                if delta[i, j] >= _BIG:
                    assert got is None, (p, q)  # masked means infeasible
                    masked += 1
                    continue
                if got is None:
                    continue  # infeasible by spread or dependency, checked only exactly
                assert delta[i, j] == got, (p, q)
                search._move(int(p), a)
                search._move(int(q), b)
                checked += 1
    assert checked > 10 and masked > 0


def _relocation_problem() -> tuple[ReassignProblem, np.ndarray]:
    """Item 0 (size 8) on node 0, which charges for every unit; it fits nowhere as is.

    Node 1 holds items 1 and 2 (3 each), node 2 item 3 (size 5); capacity 10 each.
    Moving item 0 to node 1 and ejecting item 1 to node 2 and item 2 to node 0 costs 3.
    """
    problem = ReassignProblem.build(
        capacity=[[10], [10], [10]],
        demand=[[8], [3], [3], [5]],
        soft_capacity=[[0], [10], [10]],
        soft_capacity_cost=[1],
    )
    return problem, np.array([0, 1, 1, 2])


def test_relocation_makes_room_and_is_exact() -> None:
    problem, start = _relocation_problem()
    search = _Search(problem, start.copy(), seed=0)
    scores = search._shift_scores(np.array([0]))
    assert (scores >= _BIG).all()  # no plain shift of item 0 is feasible
    delta = search._relocate(0, 1, max_eject=3)
    assert delta is not None and delta < 0
    assert search.node_of[0] == 1
    ev = evaluate_reassignment(problem, start, search.node_of)
    assert ev.feasible and ev.total == search.total == 8 + delta
    # Too few ejections allowed: nothing changes.
    again = _Search(problem, start.copy(), seed=0)
    assert again._relocate(0, 1, max_eject=1) is None
    assert (again.node_of == start).all() and again.total == 8


def test_relocation_respects_transient_room() -> None:
    problem, start = _relocation_problem()
    # Transient: node 1's initial items hold their share there even after leaving, so
    # it can never take item 0 (3 + 3 + 8 > 10), however it is emptied.
    transient = dataclasses.replace(problem, transient=np.array([True]))
    search = _Search(transient, start.copy(), seed=0)
    assert search.maxroom[1, 0] == 4
    assert search._relocate(0, 1, max_eject=3) is None
    assert search._relocate_pass(float("inf"), 4) == 0
    assert (search.node_of == start).all()


def test_revert_kick_sends_items_home_exactly() -> None:
    inst, original = _load("a2_2")
    problem = roadef_problem(inst)
    search = _Search(problem, original.copy(), seed=0)
    search._shift_pass(float("inf"))
    moved = int((search.node_of != original).sum())
    assert moved > 10
    search.relocating = False
    back = search._revert_kick(float("inf"), 0.5)
    assert 0 < back <= moved // 2
    assert int((search.node_of != original).sum()) == moved - back
    ev = evaluate_reassignment(problem, original, search.node_of)
    assert ev.feasible and ev.total == search.total


#: The data README's "simple LB" (load and balance terms only), per instance.
SIMPLE_LB = {"a1_1": 44_306_390, "a1_2": 777_530_730, "a1_4": 242_387_530, "a2_5": 307_035_180}


@pytest.mark.parametrize("name", sorted(SIMPLE_LB))
def test_node_excess_sums_to_the_cost_above_the_simple_bound(name: str) -> None:
    # The per-node excess guides the LNS; its sum must be the load and balance cost less
    # the README's bound, whatever the assignment (checked at the start and after moves).
    inst, original = _load(name)
    search = _Search(roadef_problem(inst), original.copy(), seed=0)
    for _ in range(2):
        excess = search._excess()
        assert (excess >= 0).all()
        assert int(excess.sum()) == search.cost_nodes - SIMPLE_LB[name]
        search._shift_pass(float("inf"))


def test_partners_complement_the_first_node() -> None:
    # Two resources, eight machines with one item each: machine 0 is over its watermark
    # on resource 0 and under on 1, machine 5 the mirror image, the rest at their
    # watermarks. Machine 5 is the partner most often drawn for machine 0.
    demand = [[50, 50]] * 8
    demand[0], demand[5] = [70, 20], [20, 70]
    problem = ReassignProblem.build(
        capacity=[[100, 100]] * 8,
        soft_capacity=[[50, 50]] * 8,
        demand=demand,
        soft_capacity_cost=[1, 1],
    )
    search = _Search(problem, np.arange(8), seed=0)
    assert search._excess().tolist() == [20, 0, 0, 0, 0, 20, 0, 0]  # overflow only
    counts = np.bincount([search._partners(0, 1, {0}, True)[0] for _ in range(300)], minlength=8)
    assert counts[0] == 0
    assert counts[5] > 1.5 * np.delete(counts, [0, 5]).max()


def test_a_failed_whole_neighbourhood_waits_for_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    inst, original = _load("a1_2")
    search = _Search(roadef_problem(inst), original.copy(), seed=0)
    pair = [3, 7]
    monkeypatch.setattr(search, "_lns_pick", lambda strategy, size: (list(pair), []))
    calls: list[list[int]] = []

    def fail(nodes: list[int], items: np.ndarray, det_time: float) -> None:
        assert len(items) == int(np.isin(search.node_of, nodes).sum())  # freed whole
        calls.append(nodes)

    monkeypatch.setattr(search, "_lns_step", fail)
    search._lns_once()
    search._lns_once()
    assert len(calls) == 1 and search.counters["lns_skipped"] == search.lns_redraws + 1
    search._changed([7])
    search._lns_once()
    assert len(calls) == 2


@pytest.mark.parametrize("strategy", ["hot", "excess", "home", "random"])
def test_lns_steps_never_worsen_and_stay_exact(strategy: str) -> None:
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    search = _Search(problem, original.copy(), seed=1)
    search._shift_pass(float("inf"))
    for _ in range(25):
        before = search.total
        nodes, prefer = search._lns_pick(strategy, 3)
        assert len(set(nodes)) == len(nodes) == 3
        items = search._lns_free(nodes, prefer, 40)
        assert np.isin(search.node_of[items], nodes).all()
        delta = search._lns_step(nodes, items, 0.05)
        if delta is None:
            assert search.total == before
        else:
            assert delta < 0 and search.total == before + delta
    ev = evaluate_reassignment(problem, original, search.node_of)
    assert ev.feasible and ev.total == search.total


def test_first_descent_keeps_relocation_only_when_it_wins_clearly() -> None:
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    plain = _Search(problem, original.copy(), seed=2)
    plain._plain_descent(float("inf"))
    # A margin of 1 can never be beaten: the plain start is kept, exactly.
    strict = _Search(problem, original.copy(), seed=2)
    strict.relocate_first_margin = 1.0
    strict._first_descent(float("inf"))
    assert not strict.relocating
    assert (strict.node_of == plain.node_of).all() and strict.total == plain.total
    # With no margin the better start is kept, so it is never worse than plain.
    loose = _Search(problem, original.copy(), seed=2)
    loose.relocate_first_margin = 0.0
    loose._first_descent(float("inf"))
    assert loose.total <= plain.total
    assert loose.relocating == (loose.total < plain.total)
    for search in (strict, loose):
        ev = evaluate_reassignment(problem, original, search.node_of)
        assert ev.feasible and ev.total == search.total


@pytest.mark.parametrize("name", ["a1_2", "a2_2"])
def test_priced_descent_leaves_more_transient_room_and_stays_exact(name: str) -> None:
    """A descent that prices the transient room an item leaves held on its initial node
    holds less of it there than the unpriced descent; the plain start (priced, then on
    the true cost) is feasible with its cost tracked exactly."""
    inst, original = _load(name)
    problem = roadef_problem(inst)

    def held(search: _Search) -> int:
        away = search.node_of != original
        return int((problem.demand[away] * problem.transient * problem.soft_capacity_cost).sum())

    priced = _Search(problem, original.copy(), seed=2)
    priced.pricing = True
    priced._descend_once(float("inf"))
    unpriced = _Search(problem, original.copy(), seed=2)
    unpriced._descend_once(float("inf"))
    assert held(priced) < held(unpriced)
    start = _Search(problem, original.copy(), seed=2)
    start._plain_descent(float("inf"))
    ev = evaluate_reassignment(problem, original, start.node_of)
    assert ev.feasible and ev.total == start.total


def test_ranged_descent_moves_the_biggest_items_first() -> None:
    # The ranged start's first range is the biggest 5% of the items: after it alone,
    # only those have moved; the whole ranged start ends feasible and tracked exactly.
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    share = (problem.demand / problem.soft_capacity.sum(axis=0)).sum(axis=1)
    biggest = np.argsort(-share, kind="stable")[: problem.n_items // 20]
    first = _Search(problem, original.copy(), seed=1)
    calls: list[np.ndarray] = []
    real_pass = first._shift_pass

    def first_range_only(deadline: float, items: Any = None) -> int:
        calls.append(items)
        return real_pass(deadline, items) if len(calls) == 1 else 0

    first._shift_pass = first_range_only  # type: ignore[method-assign]
    first._ranged_descent(float("inf"))
    moved = np.flatnonzero(first.node_of != original)
    assert len(moved) > 0
    assert set(moved.tolist()) <= set(biggest.tolist())
    search = _Search(problem, original.copy(), seed=1)
    search.ranged_start = True
    search._plain_descent(float("inf"))
    ev = evaluate_reassignment(problem, original, search.node_of)
    start = evaluate_reassignment(problem, original, original).total
    assert ev.feasible and ev.total == search.total < start


def _biggest(problem: ReassignProblem, frac: float) -> np.ndarray:
    """Mask of the biggest *frac* of the items, by the staged start's size."""
    share = (problem.demand / problem.soft_capacity.sum(axis=0)).sum(axis=1)
    mask = np.zeros(problem.n_items, dtype=bool)
    mask[np.argsort(-share, kind="stable")[: int(frac * problem.n_items)]] = True
    return mask


@pytest.mark.parametrize("name", ["a1_2", "a2_2"])
def test_restricted_rounds_move_only_the_movable_items(name: str) -> None:
    # Every neighbourhood and both perturbations respect the mask: four rounds of the
    # full search (CP-SAT steps included; a2_2 relocates and has transient resources)
    # move only the biggest fifth of the items, and stay exact.
    inst, original = _load(name)
    problem = roadef_problem(inst)
    search = _Search(problem, original.copy(), seed=2)
    search.movable = _biggest(problem, 0.2)
    search.kick_gate = 1.0  # perturb after every round
    rounds, stop = search._rounds(float("inf"), 4, True, lambda phase, rnd: None, float("inf"))
    assert (rounds, stop) == (4, "rounds")
    assert sum(search.kick_tries.values()) == 4
    assert search.counters["lns_tried"] > 0
    moved = search.node_of != original
    assert moved.any()
    assert not (moved & ~search.movable).any()
    ev = evaluate_reassignment(problem, original, search.node_of)
    assert ev.feasible and ev.total == search.total


def test_restricted_scores_rule_out_the_other_items() -> None:
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    search = _Search(problem, original.copy(), seed=0)
    items = np.arange(problem.n_items)
    free = search._shift_scores(items)
    search.movable = _biggest(problem, 0.5)
    held = search._shift_scores(items)
    assert (held[~search.movable] == _BIG).all()
    assert (held[search.movable] == free[search.movable]).all()
    assert (search._shift_scores(items, ignore_capacity=True)[~search.movable] == _BIG).all()
    occupied = np.zeros((problem.n_groups, problem.n_nodes), dtype=np.int32)
    np.add.at(occupied, (problem.group, search.node_of), 1)
    for a in range(problem.n_nodes):
        ia, _ = search._swap_scores_node(a, items[search.node_of != a], occupied)
        on_a = search.node_of == a
        assert ia.tolist() == np.flatnonzero(on_a & search.movable).tolist()
    assert search._may_move(items).tolist() == np.flatnonzero(search.movable).tolist()


def test_staged_start_keeps_the_best_of_its_starts_and_is_deterministic() -> None:
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    runs = []
    for _ in range(2):
        search = _Search(problem, original.copy(), seed=3)
        search.set_start("staged")
        stats = search.run(float("inf"), 2, True, None, 0.0)
        runs.append((search.node_of.copy(), stats))
    (final, stats), (again, stats2) = runs
    ends = stats["staged_totals"]
    # Three starts, each two stages of three rounds; the lowest one went on.
    assert len(ends) == 3 and stats["staged_kept"] == int(np.argmin(ends))
    assert len(set(ends)) > 1  # the starts differ
    assert stats["rounds"] == 2 and stats["stop"] == "rounds"
    ev = evaluate_reassignment(problem, original, final)
    assert ev.feasible and ev.total <= min(ends)
    # Reproducible when every stage ends on rounds.
    assert (final == again).all() and stats2["staged_totals"] == ends


def test_each_start_kind_returns_a_checked_solution() -> None:
    inst, original = _load("a1_2")
    kw: dict[str, Any] = {"time_limit_s": 60, "seed": 1, "max_rounds": 1, "lns": False}
    start = evaluate_roadef(inst, original, original).costs["total"]
    for kind in ("plain", "ranged", "staged"):
        res = solve_roadef(inst, original, starts=[kind], **kw)
        assert res.evaluation.feasible and res.evaluation.total < start
        assert ("staged_totals" in res.stats) == (kind == "staged")
    both = solve_roadef(inst, original, workers=2, starts=("staged", "plain"), **kw)
    assert both.evaluation.total == min(both.stats["worker_totals"])


@pytest.mark.parametrize(
    ("starts", "words"),
    [(["greedy"], "unknown start 'greedy'"), (["plain", "ranged"], "2 start(s) for 1 worker")],
)
def test_starts_are_checked(starts: list[str], words: str) -> None:
    problem = ReassignProblem.build(capacity=[[10], [10]], demand=[[4], [4]])
    with pytest.raises(InvalidValueError, match=re.escape(words)):
        solve_reassignment(problem, [0, 1], starts=starts)


@pytest.mark.parametrize(("name", "rounds"), [("a1_2", 6), ("a2_2", 10)])
def test_perturbed_search_is_deterministic_per_seed(name: str, rounds: int) -> None:
    # a2_2 starts by relocating (huge items, transient resources), a1_2 does not.
    inst, original = _load(name)
    runs = [
        solve_roadef(inst, original, time_limit_s=120, seed=5, max_rounds=rounds, lns=False)
        for _ in range(2)
    ]
    tries = runs[0].stats["kick_tries"]
    assert sum(tries.values()) > 0  # the rounds reached perturbation
    assert runs[0].stats["stop"] == "rounds"
    assert (runs[0].assignment == runs[1].assignment).all()
    assert runs[0].stats["kick_tries"] == runs[1].stats["kick_tries"]


# -- solving ----------------------------------------------------------------------------


def test_solves_a1_1_to_its_known_optimum() -> None:
    inst, original = _load("a1_1")
    res = solve_roadef(inst, original, time_limit_s=20, seed=0, max_rounds=1)
    assert res.evaluation.feasible
    # 44,306,501 is optimal (equal to the CPLEX bound reported in the data README).
    assert res.evaluation.total == 44_306_501
    assert res.initial_evaluation.total == 49_528_750
    assert res.stats["stop"] == "rounds"


def test_a1_2_improves_feasibly_and_deterministically() -> None:
    inst, original = _load("a1_2")
    first = solve_roadef(inst, original, time_limit_s=30, seed=3, max_rounds=1)
    costs, violations = evaluate_roadef(inst, original, first.assignment)
    assert violations == []
    assert costs["total"] == first.evaluation.total < 0.8 * 1_061_649_570
    again = solve_roadef(inst, original, time_limit_s=30, seed=3, max_rounds=1, lns=False)
    twice = solve_roadef(inst, original, time_limit_s=30, seed=3, max_rounds=1, lns=False)
    assert (again.assignment == twice.assignment).all()


def test_lns_is_deterministic_per_seed() -> None:
    inst, original = _load("a1_1")
    runs = [
        solve_roadef(inst, original, time_limit_s=30, seed=7, max_rounds=2).assignment
        for _ in range(2)
    ]
    assert (runs[0] == runs[1]).all()


def test_workers_run_independent_searches_and_keep_the_best() -> None:
    inst, original = _load("a1_2")
    kw: dict[str, Any] = {"time_limit_s": 60, "seed": 4, "max_rounds": 1, "lns": False}
    alone = solve_roadef(inst, original, **kw)
    starts = ("plain", "ranged")
    runs = [solve_roadef(inst, original, workers=2, starts=starts, **kw) for _ in range(2)]
    totals = runs[0].stats["worker_totals"]
    assert len(totals) == 2
    # A plain first worker is the single search itself; the best of both is returned,
    # re-checked, and the choice is reproducible when the runs end on rounds.
    assert totals[0] == alone.evaluation.total
    assert runs[0].evaluation.feasible
    assert runs[0].evaluation.total == min(totals) == totals[runs[0].stats["worker"]]
    assert (runs[0].assignment == runs[1].assignment).all()
    assert runs[1].stats["worker_totals"] == totals
    # The default for two workers starts the first staged: another first total, the
    # same second one (same seed, same start), and as reproducible.
    default = [solve_roadef(inst, original, workers=2, **kw) for _ in range(2)]
    got = default[0].stats["worker_totals"]
    assert got[1] == totals[1] and got[0] != totals[0]
    assert default[1].stats["worker_totals"] == got
    assert (default[0].assignment == default[1].assignment).all()


def test_restart_takes_the_boards_best_only_when_it_is_better() -> None:
    inst, original = _load("a1_2")
    problem = roadef_problem(inst)
    better = solve_roadef(inst, original, time_limit_s=60, seed=1, max_rounds=1, lns=False)
    search = _Search(problem, original.copy(), seed=0)
    search.board = _Board(problem.n_items)
    own_total, own = search.total, search.node_of.copy()
    # An empty board, or sharing not yet allowed: back to the search's own best.
    assert search._restart(own_total, own, share=True)[0] == own_total
    search.board.post(better.evaluation.total, better.assignment)
    assert search._restart(own_total, own, share=False)[0] == own_total
    assert search.counters["adopted"] == 0
    # A better one on the board is adopted, state and all.
    total, best = search._restart(own_total, own, share=True)
    assert total == better.evaluation.total == search.total < own_total
    assert (best == better.assignment).all() and (search.node_of == best).all()
    assert search.counters["adopted"] == 1
    # Nothing worse replaces what the board holds.
    search.board.post(own_total, own)
    held = search.board.better_than(own_total + 1)
    assert held is not None and held[0] == total and (held[1] == best).all()


def test_board_is_shared_with_worker_processes() -> None:
    board = _Board(3)
    ctx = multiprocessing.get_context(_START_METHOD)
    child = ctx.Process(target=board.post, args=(7, np.array([2, 0, 1])))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    got = board.better_than(8)
    assert got is not None and got[0] == 7 and got[1].tolist() == [2, 0, 1]
    assert board.better_than(7) is None


def test_timed_workers_share_and_return_a_checked_best() -> None:
    inst, original = _load("a1_2")
    result = solve_roadef(inst, original, time_limit_s=6, seed=3, workers=2)
    totals = result.stats["worker_totals"]
    assert result.evaluation.feasible
    # The returned best is re-checked, whichever search found it and whatever they
    # took from each other.
    assert result.evaluation.total == min(totals)
    assert isinstance(result.stats["adopted"], int)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_positive_integer(workers: Any) -> None:
    problem = ReassignProblem.build(capacity=[[10], [10]], demand=[[4], [4]])
    with pytest.raises(InvalidValueError, match="workers"):
        solve_reassignment(problem, [0, 1], workers=workers)


# -- command line -----------------------------------------------------------------------


def test_cli_solves_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, assignment = _files("a1_1")
    out = tmp_path / "solution.txt"
    rc = main(["roadef", str(model), str(assignment), "-o", str(out), "--time-limit", "3"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "feasible: yes" in text
    for term in ("load", "balance", "process_move", "service_move", "machine_move", "total"):
        assert term in text
    assert "49,528,750" in text
    inst = read_roadef_model(model)
    assert read_roadef_assignment(out, inst).shape == (100,)
    assert main(["roadef", str(model), str(assignment), "--check", str(out), "--bound"]) == 0
    text = capsys.readouterr().out
    assert "feasible: yes" in text
    # a1_1's optimum 44,306,501 is within 25 of the LP bound: 0.00% unproven.
    assert "lower bound: 44,306,4" in text
    assert "unproven share of the new total: 0.00%" in text
    staged = ["--time-limit", "2", "--starts", "staged"]
    assert main(["roadef", str(model), str(assignment), "-o", str(out), *staged]) == 0
    assert "feasible: yes" in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, assignment = _files("a1_1")
    bad = tmp_path / "solution.txt"
    bad.write_text("0 " * 100)
    # Everything on machine 0: infeasible, exit 1 with the violations named.
    assert main(["roadef", str(model), str(assignment), "--check", str(bad)]) == 1
    assert "feasible: NO" in capsys.readouterr().out
    bad.write_text("0 1")
    assert main(["roadef", str(model), str(assignment), "--check", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    out = str(tmp_path / "out.txt")
    assert main(["roadef", str(model), str(assignment), "-o", out, "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    starts = ["--workers", "2", "--starts", "staged"]
    assert main(["roadef", str(model), str(assignment), "-o", out, *starts]) == 2
    assert "--starts names 1 start(s) for 2 worker(s)" in capsys.readouterr().err
    args = ["roadef", str(model), str(assignment), "-o", out, "--bound"]
    assert main([*args, "--bound-time-limit", "0"]) == 2
    assert "--bound-time-limit must be positive" in capsys.readouterr().err


def _table_script() -> Any:
    """benchmarks/roadef_table.py as a module (benchmarks/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "roadef_table.py"
    spec = importlib.util.spec_from_file_location("roadef_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_runs_each_seed_and_reports_the_mean_and_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table_script()
    runs = tmp_path / "runs.jsonl"
    argv = ["--data", str(HERE), "--instances", "a1_2", "--time-limit", "0.5"]
    code = table.main([*argv, "--seed", "3", "5", "--jsonl", str(runs)])
    assert code == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [r["seed"] for r in records] == [3, 5]
    assert all(r["feasible"] for r in records)
    totals = [r["total"] for r in records]
    row = next(line for line in out.splitlines() if line.startswith("| a1_2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # instance, original, mean, gap of the mean, range of the per-seed gaps, ...
    assert cells[2] == f"{round(sum(totals) / 2):,}"
    best = table.BEST_KNOWN["a1_2"]
    low, high = (100 * (v - best) / best for v in (min(totals), max(totals)))
    assert cells[4] == f"{low:.2f}% to {high:.2f}%"
    assert "ours 0.5 s (mean of 2)" in out and "per-seed gaps spread" in out
    for bad in (["--seed", "1", "1"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exc:
            table.main([*argv, *bad])
        assert exc.value.code == 2
    assert "distinct non-negative" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        table.main([*argv, "--starts", "staged", "plain"])
    assert "--starts needs one start per worker (1)" in capsys.readouterr().err
