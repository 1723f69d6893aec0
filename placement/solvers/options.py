"""The checks of the options every planning path takes (budget, balance goal, time).

One message per bad parameter, shared by :func:`placement.planner.plan`, the exact
solver and the baselines, so that the same mistake reads the same wherever it is made.

>>> import placement
>>> st = placement.synthetic_state(15, 40, seed=1)
>>> check_options(st, weights={"iops": 0.0}).tolist()
[1.0, 0.0]
>>> check_options(st, max_moves=-1)
Traceback (most recent call last):
...
placement.errors.InvalidValueError: max_moves must be a whole number >= 0, got -1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from placement.errors import InvalidValueError
from placement.model import State

__all__ = ["check_options"]


def _number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_options(
    state: State,
    *,
    max_moves: int | None = None,
    max_bytes: float | None = None,
    max_moves_per_node: int | None = None,
    max_moves_per_group: int | None = None,
    target_imbalance: float = 0.02,
    trigger_imbalance: float | None = None,
    time_limit_s: float = 10.0,
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Raise :class:`InvalidValueError` for a bad option; return the weight per resource.

    Counts must be whole numbers >= 0 (not booleans), ``max_bytes`` and the imbalance
    ratios numbers >= 0, ``time_limit_s`` positive and finite; ``weights`` maps resource
    names to numbers >= 0 (unnamed resources weigh 1).
    """
    for name, value in (
        ("max_moves", max_moves),
        ("max_moves_per_node", max_moves_per_node),
        ("max_moves_per_group", max_moves_per_group),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0
        ):
            raise InvalidValueError(f"{name} must be a whole number >= 0, got {value!r}.")
    if max_bytes is not None and not (_number(max_bytes) and max_bytes >= 0):
        raise InvalidValueError(f"max_bytes must be a number >= 0, got {max_bytes!r}.")
    if not (_number(target_imbalance) and target_imbalance >= 0):
        raise InvalidValueError(f"target_imbalance must be >= 0, got {target_imbalance!r}.")
    if trigger_imbalance is not None and not (
        _number(trigger_imbalance) and trigger_imbalance >= 0
    ):
        raise InvalidValueError(f"trigger_imbalance must be >= 0, got {trigger_imbalance!r}.")
    if not (_number(time_limit_s) and time_limit_s > 0 and math.isfinite(time_limit_s)):
        raise InvalidValueError(f"time_limit_s must be a positive number, got {time_limit_s!r}.")
    w = np.ones(state.cluster.n_resources)
    for name, weight in (weights or {}).items():
        if not (_number(weight) and weight >= 0):
            raise InvalidValueError(f"weights[{name!r}] must be a number >= 0, got {weight!r}.")
        w[state.cluster.resource_index(name)] = weight
    return w
