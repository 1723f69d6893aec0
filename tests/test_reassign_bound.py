"""Lower bounds of reassignment problems: valid (never above a feasible cost), and tight
where the relaxation keeps what the simple bound ignores (move costs, transient room)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement.errors import InvalidValueError
from placement.io.roadef import read_roadef_assignment, read_roadef_model
from placement.roadef import roadef_problem
from placement.solvers.reassign import ReassignProblem, evaluate_reassignment
from placement.solvers.reassign_bound import (
    _shed_bound,
    reassignment_lower_bound,
    simple_lower_bound,
)

DATA = Path(__file__).parent / "data" / "roadef2012"


def _optimum(problem: ReassignProblem, initial: np.ndarray) -> int:
    """Least cost over every assignment, by enumeration (tiny problems only)."""
    best = None
    for combo in itertools.product(range(problem.n_nodes), repeat=problem.n_items):
        ev = evaluate_reassignment(problem, initial, np.array(combo), limit=1)
        if ev.feasible and (best is None or ev.total < best):
            best = ev.total
    assert best is not None  # the initial assignment is feasible
    return best


@st.composite
def _problems(draw: st.DrawFn) -> tuple[ReassignProblem, np.ndarray]:
    n_nodes = draw(st.integers(2, 3))
    n_items = draw(st.integers(1, 4))
    n_res = draw(st.integers(1, 2))

    def grid(rows: int, high: int) -> np.ndarray:
        row = st.lists(st.integers(0, high), min_size=n_res, max_size=n_res)
        drawn = draw(st.lists(row, min_size=rows, max_size=rows))
        return np.array(drawn, dtype=np.int64).reshape(rows, n_res)

    dem = grid(n_items, 6)
    initial = np.array(
        draw(st.lists(st.integers(0, n_nodes - 1), min_size=n_items, max_size=n_items))
    )
    used = np.zeros((n_nodes, n_res), dtype=np.int64)
    np.add.at(used, initial, dem)
    # Capacity at least the initial usage, so the start is feasible.
    capacity = used + grid(n_nodes, 6)
    soft = grid(n_nodes, 8)
    soft = np.minimum(soft, capacity)
    n_groups = draw(st.integers(1, n_items))
    group = draw(st.lists(st.integers(0, n_groups - 1), min_size=n_items, max_size=n_items))
    # Items of one group start on distinct nodes (or the start would be infeasible).
    for i, j in itertools.combinations(range(n_items), 2):
        if group[i] == group[j] and initial[i] == initial[j]:
            group[j] = n_groups + j
    balance = []
    if n_res == 2 and draw(st.booleans()):
        balance = [(0, 1, draw(st.integers(1, 3)), draw(st.integers(1, 5)))]
    problem = ReassignProblem.build(
        capacity=capacity,
        demand=dem,
        soft_capacity=soft,
        soft_capacity_cost=draw(st.lists(st.integers(0, 5), min_size=n_res, max_size=n_res)),
        transient=draw(st.lists(st.booleans(), min_size=n_res, max_size=n_res)),
        group=group,
        item_move_cost=draw(st.lists(st.integers(0, 4), min_size=n_items, max_size=n_items)),
        move_cost_matrix=np.array(
            draw(st.lists(st.integers(0, 3), min_size=n_nodes**2, max_size=n_nodes**2))
        ).reshape(n_nodes, n_nodes)
        * (1 - np.eye(n_nodes, dtype=np.int64)),
        balance=balance,
        item_move_weight=1,
        group_move_weight=draw(st.integers(0, 3)),
        node_move_weight=draw(st.integers(0, 2)),
        group_move_limit=draw(st.one_of(st.none(), st.integers(0, 2))),
    )
    return problem, initial


@settings(max_examples=60, deadline=None)
@given(_problems())
def test_bounds_never_exceed_the_optimum(case: tuple[ReassignProblem, np.ndarray]) -> None:
    problem, initial = case
    bound = reassignment_lower_bound(problem, initial)
    assert bound.lp_status == "optimal"
    assert bound.lp is not None
    optimum = _optimum(problem, initial)
    assert 0 <= bound.simple <= optimum
    assert bound.lp <= optimum
    # Computed only when it could beat the others; forced here, it must stay valid.
    shed = _shed_bound(problem, initial, None, beat=-1)
    assert shed is not None and 0 <= shed <= optimum
    assert bound.shed in (None, shed)
    assert bound.value == max(bound.simple, bound.lp, bound.shed or 0)


def test_transient_room_lifts_the_bound() -> None:
    # Node 0 holds items 0 and 1 (5 units each of resource A, watermark 0); node 1 holds
    # item 2 (6 units). Without the transient rule, item 2 moves to node 2 and both
    # items of node 0 fit on node 1: cost 0. With A transient, item 2 still holds its 6
    # units on node 1 after leaving, so node 1 can take only 4 units of arrivals: item
    # 0 goes to node 2 (item 1 cannot: resource B), and 5 units stay over node 0's
    # watermark at 3 each. The simple bound sees neither case; the LP sees both.
    def build(transient: bool) -> ReassignProblem:
        return ReassignProblem.build(
            capacity=[[10, 10], [10, 10], [6, 0]],
            demand=[[5, 0], [5, 5], [6, 0]],
            soft_capacity=[[0, 10], [10, 10], [6, 0]],
            soft_capacity_cost=[3, 0],
            transient=[transient, False],
        )

    initial = np.array([0, 0, 1])
    for transient, optimum in ((False, 0), (True, 15)):
        problem = build(transient)
        bound = reassignment_lower_bound(problem, initial)
        assert bound.simple == 0
        assert bound.lp == optimum == _optimum(problem, initial)


def test_move_costs_enter_the_bound() -> None:
    # The overflow of 2 units at weight 10 is cheaper to keep (20) than to fix by moving
    # either item, even a share of one (a share t of the big item saves 60 t and costs
    # 100 t): the simple bound sees 0, the LP the true optimum.
    problem = ReassignProblem.build(
        capacity=[[10], [10]],
        demand=[[6], [4]],
        soft_capacity=[[8], [8]],
        soft_capacity_cost=[10],
        item_move_cost=[100, 100],
    )
    initial = np.array([0, 0])
    bound = reassignment_lower_bound(problem, initial)
    assert bound.simple == 0
    assert bound.lp == _optimum(problem, initial) == 20


def _must_shed_two() -> ReassignProblem:
    # Node 0 holds four items of 2 units against a watermark of 4 at 100 per unit: it
    # must shed two whole items (1 each), and moving anything costs the group-move
    # weight 10 once. The LP moves half of each item (2 + 10 * 0.5); shedding sees the
    # optimum, 12.
    return ReassignProblem.build(
        capacity=[[10], [10]],
        demand=[[2], [2], [2], [2]],
        soft_capacity=[[4], [10]],
        soft_capacity_cost=[100],
        group=[0, 1, 2, 3],
        item_move_cost=[1, 1, 1, 1],
        group_move_weight=10,
    )


def test_shedding_sees_whole_items_where_moves_cost() -> None:
    problem, initial = _must_shed_two(), np.array([0, 0, 0, 0])
    bound = reassignment_lower_bound(problem, initial)
    assert bound.lp == 7
    assert bound.shed == bound.value == _optimum(problem, initial) == 12
    # Without the shedding bound the value falls back to the LP's.
    assert reassignment_lower_bound(problem, initial, shed=False).value == 7


def test_cli_bound_line_names_each_bound(capsys: pytest.CaptureFixture[str]) -> None:
    from placement.cli_roadef import _print_bound

    _print_bound(_must_shed_two(), np.array([0, 0, 0, 0]), 16, 10.0)
    out = capsys.readouterr().out
    assert out.startswith("lower bound: 12 (simple 0; LP relaxation 7 in ")
    assert out.rstrip().endswith("per-node shedding 12); unproven share of the new total: 25.00%")


def test_simple_bound_matches_the_readme_on_shipped_instances() -> None:
    # The data README's "simple LB" column (section 4), for the two shipped instances.
    for name, expected in (("a1_1", 44_306_390), ("a1_2", 777_530_730)):
        inst = read_roadef_model(DATA / f"model_{name}.txt")
        original = read_roadef_assignment(DATA / f"assignment_{name}.txt", inst)
        problem = roadef_problem(inst)
        assert simple_lower_bound(problem) == expected
        bound = reassignment_lower_bound(problem, original, time_limit_s=60)
        assert bound.simple == expected
        assert bound.lp is not None and expected <= bound.lp
    # a1_1's optimum is known (44,306,501); the LP must stay below it.
    assert bound.lp <= 777_532_896  # a1_2's best known value


def test_lp_can_be_skipped_and_inputs_are_checked() -> None:
    problem = ReassignProblem.build(capacity=[[10], [10]], demand=[[4], [4]])
    initial = np.array([0, 1])
    off = reassignment_lower_bound(problem, initial, lp=False)
    assert (off.lp, off.lp_status, off.shed, off.value) == (None, "skipped", None, 0)
    big = reassignment_lower_bound(problem, initial, max_variables=3)
    assert big.lp is None and big.lp_status == "skipped"
    with pytest.raises(InvalidValueError, match="initial"):
        reassignment_lower_bound(problem, np.array([0, 1, 1]))
    with pytest.raises(InvalidValueError, match="time_limit_s"):
        reassignment_lower_bound(problem, initial, time_limit_s=0)
