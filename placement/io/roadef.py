"""ROADEF/EURO Challenge 2012 (machine reassignment) files, both ways.

The challenge's files are whitespace-separated non-negative integers; line breaks carry no
meaning. A *model* file describes the instance, an *assignment* file gives one machine
index per process (the original assignment, or a solution). This module reads them into
a frozen, columnar :class:`RoadefInstance` and writes solution files.

Reading is strict, like Google's ``solution_checker.cc``: every token must be a decimal
integer in ``[0, 2**31 - 1]``, every index in range, and every token consumed. Each
problem raises an :class:`~placement.errors.InputError` subclass naming the file, the
token position (1-based, with its line) and the entity (``machine 12``, ``process 7``):

* :class:`~placement.errors.SchemaError`: not an integer, too few or too many tokens;
* :class:`~placement.errors.InvalidValueError`: a value out of range (flag not 0/1, above
  the 32-bit limit of the official checker);
* :class:`~placement.errors.UnknownIdError`: an index naming a resource, service or
  machine that does not exist.

Mapping onto the library's general reassignment model (soft capacities, transient
resources, group spread and dependencies, move-cost matrix) is done by
:func:`placement.roadef.roadef_problem`.

Examples
--------
>>> text = "1 0 1  2 0 0 10 8 0 1  0 1 8 6 1 0  1 0 0  1 0 4 1  0  1 10 100"
>>> inst = parse_roadef_model(text)
>>> inst.n_machines, inst.n_processes, inst.capacity.tolist()
(2, 1, [[10], [8]])
>>> parse_roadef_assignment("1", inst).tolist()
[1]
>>> format_roadef_solution(np.array([0])).strip()
'0'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from placement.errors import InputError, InvalidValueError, SchemaError, UnknownIdError

__all__ = [
    "MAX_VALUE",
    "RoadefInstance",
    "format_roadef_solution",
    "parse_roadef_assignment",
    "parse_roadef_model",
    "read_roadef_assignment",
    "read_roadef_model",
    "write_roadef_solution",
]

#: Largest value the official checker accepts (its ``kMaxIntValue`` is the int32 maximum).
#: Keeping every input below it also keeps every product in the objective inside int64.
MAX_VALUE = 2**31 - 1

_NOT_DIGITS = re.compile(r"[^0-9\s]")


@dataclass(frozen=True, eq=False)
class RoadefInstance:
    """One machine-reassignment instance, columnar (all integer arrays are int64).

    Shapes use R resources, M machines, S services, P processes and B balance costs.
    Arrays are read-only.

    Attributes
    ----------
    transient : ndarray of bool, shape (R,)
        Resources whose usage stays on the original machine while a process moves.
    load_cost_weight : ndarray, shape (R,)
        Cost per unit of usage above the safety capacity.
    neighborhood, location : ndarray, shape (M,)
        Neighborhood (dependency domain) and location (spread domain) of each machine.
    capacity, safety_capacity : ndarray, shape (M, R)
        Hard capacity and the safety (soft) capacity above which the load cost accrues.
    machine_move_cost : ndarray, shape (M, M)
        Cost of moving one process from machine ``i`` (its original) to machine ``j``.
    spread_min : ndarray, shape (S,)
        Least number of distinct locations each service must use.
    dependency_indptr, dependency : ndarray, shapes (S + 1,) and (deps,)
        CSR lists: the services that service ``s`` depends on are
        ``dependency[dependency_indptr[s]:dependency_indptr[s + 1]]``, as in the file.
    service : ndarray, shape (P,)
        Service of each process.
    requirement : ndarray, shape (P, R)
        Resource requirement of each process.
    process_move_cost : ndarray, shape (P,)
        Cost of moving each process away from its original machine.
    balance_resources : ndarray, shape (B, 2)
        ``(r1, r2)`` of each balance cost.
    balance_target, balance_weight : ndarray, shape (B,)
        Target ratio and weight of each balance cost.
    process_move_weight, service_move_weight, machine_move_weight : int
        Weights of the three move-cost terms.
    """

    transient: np.ndarray
    load_cost_weight: np.ndarray
    neighborhood: np.ndarray
    location: np.ndarray
    capacity: np.ndarray
    safety_capacity: np.ndarray
    machine_move_cost: np.ndarray
    spread_min: np.ndarray
    dependency_indptr: np.ndarray
    dependency: np.ndarray
    service: np.ndarray
    requirement: np.ndarray
    process_move_cost: np.ndarray
    balance_resources: np.ndarray
    balance_target: np.ndarray
    balance_weight: np.ndarray
    process_move_weight: int
    service_move_weight: int
    machine_move_weight: int

    def __post_init__(self) -> None:
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def n_resources(self) -> int:
        return int(self.transient.shape[0])

    @property
    def n_machines(self) -> int:
        return int(self.capacity.shape[0])

    @property
    def n_services(self) -> int:
        return int(self.spread_min.shape[0])

    @property
    def n_processes(self) -> int:
        return int(self.service.shape[0])

    @property
    def n_balance_costs(self) -> int:
        return int(self.balance_target.shape[0])

    @property
    def n_neighborhoods(self) -> int:
        return int(self.neighborhood.max()) + 1 if self.n_machines else 0

    @property
    def n_locations(self) -> int:
        return int(self.location.max()) + 1 if self.n_machines else 0

    @property
    def n_dependencies(self) -> int:
        return int(self.dependency.shape[0])

    def stats(self) -> dict[str, Any]:
        """Sizes, as in the instance-statistics table of the data README."""
        return {
            "resources": self.n_resources,
            "transient": int(self.transient.sum()),
            "machines": self.n_machines,
            "neighborhoods": self.n_neighborhoods,
            "locations": self.n_locations,
            "services": self.n_services,
            "dependencies": self.n_dependencies,
            "processes": self.n_processes,
            "balance_costs": self.n_balance_costs,
        }


# -- tokens -----------------------------------------------------------------------------


def _tokens(text: str, source: str) -> np.ndarray:
    """All tokens of *text* as int64, or a SchemaError naming the first bad token."""
    if _NOT_DIGITS.search(text) is not None:
        for index, match in enumerate(re.finditer(r"\S+", text)):
            if _NOT_DIGITS.search(match.group()) is not None:
                line = text.count("\n", 0, match.start()) + 1
                raise SchemaError(
                    f"{source}: token {index + 1} (line {line}) is {match.group()[:20]!r}; "
                    "every token must be a non-negative decimal integer. Fix or remove it."
                )
    words = text.split()
    # Values above 2**31 - 1 have at least 10 digits; compare as Python ints only then,
    # so a 40-digit token cannot overflow the int64 conversion below.
    long = [i for i, w in enumerate(words) if len(w) >= 10 and int(w) > MAX_VALUE]
    if long:
        i = long[0]
        raise InvalidValueError(
            f"{source}: token {i + 1} ({_line_of(text, i)}) is {words[i][:24]}, above the "
            f"largest value the official checker accepts ({MAX_VALUE})."
        )
    return np.array(words, dtype=np.int64) if words else np.zeros(0, dtype=np.int64)


def _line_of(text: str, index: int) -> str:
    """'line N' of the 0-based token *index* (only computed for error messages)."""
    for k, match in enumerate(re.finditer(r"\S+", text)):
        if k == index:
            return f"line {text.count(chr(10), 0, match.start()) + 1}"
    return "end of file"


class _Cursor:
    """Reads the token stream in order; every error names the position and the entity."""

    def __init__(self, values: np.ndarray, text: str, source: str) -> None:
        self.values = values
        self.text = text
        self.source = source
        self.pos = 0

    def where(self, index: int) -> str:
        return f"{self.source}: token {index + 1} ({_line_of(self.text, index)})"

    def take(self, n: int, what: str) -> np.ndarray:
        if self.pos + n > len(self.values):
            raise SchemaError(
                f"{self.source}: the file ends after {len(self.values)} tokens while reading "
                f"{what} (needs {n} more from token {self.pos + 1}). The file is truncated "
                "or a count earlier in it is too large."
            )
        out = self.values[self.pos : self.pos + n]
        self.pos += n
        return out

    def one(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def check_range(
        self, values: np.ndarray, start: int, stride: int, high: int, what: str, kind: str
    ) -> None:
        """Raise if an entry of *values* is >= *high*; it sits at token start + i*stride."""
        if values.size == 0:
            return
        over = np.flatnonzero(values >= high)
        if over.size:
            i = int(over[0])
            where = self.where(start + i * stride)
            if kind == "flag":
                raise InvalidValueError(
                    f"{where}: {what.format(i)} is {int(values[i])}; expected 0 or 1."
                )
            raise UnknownIdError(
                f"{where}: {what.format(i)} is {int(values[i])}, but only {high} {kind} "
                f"exist (valid indices 0..{high - 1})."
            )

    def finish(self) -> None:
        if self.pos != len(self.values):
            raise SchemaError(
                f"{self.where(self.pos)}: {len(self.values) - self.pos} token(s) left over "
                f"after a complete {self.source.split(' ')[0]}; the official checker requires "
                "every token to be consumed. A count earlier in the file is too small, or "
                "the file has trailing data."
            )


# -- model ------------------------------------------------------------------------------


def read_roadef_model(path: str | os.PathLike[str]) -> RoadefInstance:
    """Read a ``model_*.txt`` file.

    Raises
    ------
    InputError
        The file cannot be read, or is not a valid model (see :func:`parse_roadef_model`).
    """
    return parse_roadef_model(_read(path, "model"), source=f"model file {os.fspath(path)!r}")


def parse_roadef_model(text: str, *, source: str = "model") -> RoadefInstance:
    """Parse the text of a model file.

    Parameters
    ----------
    text : str
        The file's content.
    source : str
        How error messages name the file.

    Returns
    -------
    RoadefInstance

    Raises
    ------
    SchemaError
        A token is not a non-negative integer, or there are too few or too many tokens.
    InvalidValueError
        A transient flag is not 0 or 1, or a value exceeds ``MAX_VALUE``.
    UnknownIdError
        A dependency, process service or balance resource index is out of range.
    """
    cur = _Cursor(_tokens(text, source), text, source)

    n_res = cur.one("the number of resources")
    start = cur.pos
    res = cur.take(2 * n_res, f"{n_res} resources (transient flag, load-cost weight)")
    res = res.reshape(n_res, 2)
    cur.check_range(res[:, 0], start, 2, 2, "the transient flag of resource {}", "flag")

    n_mach = cur.one("the number of machines")
    width = 2 + 2 * n_res + n_mach
    rows = cur.take(n_mach * width, f"{n_mach} machines of {width} values each")
    machines = rows.reshape(n_mach, width)

    n_serv = cur.one("the number of services")
    spread_min = np.zeros(n_serv, dtype=np.int64)
    indptr = np.zeros(n_serv + 1, dtype=np.int64)
    dep_chunks: list[np.ndarray] = []
    dep_starts: list[int] = []
    for s in range(n_serv):
        head = cur.take(2, f"service {s} (spreadMin, number of dependencies)")
        spread_min[s] = head[0]
        k = int(head[1])
        dep_starts.append(cur.pos)
        dep_chunks.append(cur.take(k, f"the {k} dependencies of service {s}"))
        indptr[s + 1] = indptr[s] + k
    for s, (chunk, at) in enumerate(zip(dep_chunks, dep_starts, strict=True)):
        cur.check_range(chunk, at, 1, n_serv, f"dependency {{}} of service {s}", "services")
    deps = np.concatenate(dep_chunks) if dep_chunks else np.zeros(0, dtype=np.int64)

    n_proc = cur.one("the number of processes")
    start = cur.pos
    width_p = 2 + n_res
    procs = cur.take(n_proc * width_p, f"{n_proc} processes of {width_p} values each")
    procs = procs.reshape(n_proc, width_p)
    cur.check_range(procs[:, 0], start, width_p, n_serv, "the service of process {}", "services")

    n_bal = cur.one("the number of balance costs")
    start = cur.pos
    bal = cur.take(4 * n_bal, f"{n_bal} balance costs (r1, r2, target, weight)").reshape(n_bal, 4)
    cur.check_range(bal[:, 0], start, 4, n_res, "resource r1 of balance cost {}", "resources")
    cur.check_range(bal[:, 1], start + 1, 4, n_res, "resource r2 of balance cost {}", "resources")

    weights = cur.take(3, "the three move weights (process, service, machine)")
    cur.finish()

    r = n_res
    return RoadefInstance(
        transient=res[:, 0].astype(bool),
        load_cost_weight=res[:, 1].copy(),
        neighborhood=machines[:, 0].copy(),
        location=machines[:, 1].copy(),
        capacity=machines[:, 2 : 2 + r].copy(),
        safety_capacity=machines[:, 2 + r : 2 + 2 * r].copy(),
        machine_move_cost=machines[:, 2 + 2 * r :].copy(),
        spread_min=spread_min,
        dependency_indptr=indptr,
        dependency=deps.astype(np.int64),
        service=procs[:, 0].copy(),
        requirement=procs[:, 1 : 1 + r].copy(),
        process_move_cost=procs[:, 1 + r].copy(),
        balance_resources=bal[:, :2].copy(),
        balance_target=bal[:, 2].copy(),
        balance_weight=bal[:, 3].copy(),
        process_move_weight=int(weights[0]),
        service_move_weight=int(weights[1]),
        machine_move_weight=int(weights[2]),
    )


# -- assignments and solutions ----------------------------------------------------------


def read_roadef_assignment(
    path: str | os.PathLike[str], instance: RoadefInstance, *, what: str = "assignment"
) -> np.ndarray:
    """Read an assignment or solution file: one machine index per process.

    Returns
    -------
    ndarray of int64, shape (P,)
        Machine of each process.

    Raises
    ------
    InputError
        The file cannot be read, has the wrong length, or names a machine that does not exist.
    """
    text = _read(path, what)
    return parse_roadef_assignment(text, instance, source=f"{what} file {os.fspath(path)!r}")


def parse_roadef_assignment(
    text: str, instance: RoadefInstance, *, source: str = "assignment"
) -> np.ndarray:
    """Parse the text of an assignment or solution file (see :func:`read_roadef_assignment`)."""
    values = _tokens(text, source)
    n = instance.n_processes
    if len(values) != n:
        raise SchemaError(
            f"{source}: has {len(values)} machine indices, but the model has {n} processes; "
            "give exactly one machine per process, in process order."
        )
    cur = _Cursor(values, text, source)
    cur.check_range(values, 0, 1, instance.n_machines, "the machine of process {}", "machines")
    out = values.copy()
    out.setflags(write=False)
    return out


def format_roadef_solution(solution: np.ndarray) -> str:
    """The text of a solution file: the machine indices, space-separated, one line."""
    return " ".join(map(str, np.asarray(solution, dtype=np.int64).tolist())) + "\n"


def write_roadef_solution(path: str | os.PathLike[str], solution: np.ndarray) -> None:
    """Write *solution* (machine of each process) in the official format.

    Raises
    ------
    InvalidValueError
        *solution* is not a one-dimensional array of non-negative integers.
    InputError
        The file cannot be written.
    """
    arr = np.asarray(solution)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise InvalidValueError(
            "A solution must be a one-dimensional array of non-negative machine indices, "
            f"got shape {arr.shape} of {arr.dtype}."
        )
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(format_roadef_solution(arr))
    except OSError as exc:
        raise InputError(f"Cannot write solution file {os.fspath(path)!r}: {exc}.") from None


def _read(path: str | os.PathLike[str], what: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"The {what} file {os.fspath(path)!r} does not exist.") from None
    except UnicodeDecodeError:
        raise SchemaError(
            f"The {what} file {os.fspath(path)!r} is not plain ASCII text; ROADEF files hold "
            "only decimal integers and whitespace."
        ) from None
    except OSError as exc:
        raise InputError(f"Cannot read the {what} file {os.fspath(path)!r}: {exc}.") from None
