"""Small array kernels shared by the solvers and the plan builder (private).

Examples
--------
>>> import numpy as np
>>> keys = np.array([2, 0, 2, 1, 0])
>>> stable_order(keys, 3).tolist()
[1, 4, 3, 0, 2]
"""

from __future__ import annotations

import numpy as np

__all__ = ["stable_order"]


def stable_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Stable argsort of integer *keys* in ``[-1, n_keys)`` (e.g. node ids, -1 for none).

    numpy sorts 16-bit integers stably by radix sort, 4-5x faster than its merge sort
    of wider ones (0.05 s against 0.24 s for 3M node ids), so keys are narrowed when
    they fit.
    """
    if -1 <= n_keys < np.iinfo(np.int16).max:
        return np.argsort(keys.astype(np.int16, copy=False), kind="stable")
    return np.argsort(keys, kind="stable")
