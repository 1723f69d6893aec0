"""The exception tree of `placement`.

Every error the library raises on purpose is a :class:`PlacementError`. Errors caused by
what a user gave us also subclass :class:`ValueError`, so code that already guards
against ``ValueError`` keeps working::

    PlacementError                      anything raised on purpose by placement
    ├── InputError (ValueError)         the input cannot be used as given
    │   ├── SchemaError                 wrong document shape: format tag, field, type
    │   ├── DuplicateIdError            an id appears twice
    │   ├── UnknownIdError              a reference to an id, resource or region that does not exist
    │   ├── InvalidValueError           a number out of range: negative, NaN, infinite, ...
    │   │   └── StateDriftError         a plan made for another state than the current one
    │   └── TopologyError               the cluster's shape cannot satisfy the policy
    │                                    (replication above the failure domains, disconnected
    │                                    region graph, ...)
    ├── InfeasibleError                 no plan satisfies every hard constraint
    │                                    (.diagnosis: the conflict, when diagnosed)
    └── SchedulingError                 the moves cannot be ordered safely (names the cycle)

Messages say what was expected, what was received (naming the offending ids) and how to
fix it. Long lists of offenders are shortened to the first few with a count.

Examples
--------
>>> from placement.errors import InputError, PlacementError
>>> issubclass(InputError, ValueError) and issubclass(InputError, PlacementError)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "DuplicateIdError",
    "InfeasibleError",
    "InputError",
    "InvalidValueError",
    "PlacementError",
    "SchedulingError",
    "SchemaError",
    "StateDriftError",
    "TopologyError",
    "UnknownIdError",
    "format_ids",
]


class PlacementError(Exception):
    """Base of every error raised on purpose by `placement`."""


class InputError(PlacementError, ValueError):
    """The input (a document, records or arrays) cannot be used as given."""


class SchemaError(InputError):
    """The document does not have the expected shape (format tag, fields, types)."""


class DuplicateIdError(InputError):
    """An id (node, shard, resource, region, level) appears more than once."""


class UnknownIdError(InputError):
    """A reference names an id, resource, region or level that does not exist."""


class InvalidValueError(InputError):
    """A number is out of its allowed range (negative, NaN, infinite, fraction above 1...)."""


class StateDriftError(InvalidValueError):
    """A plan was made for another state than the one given (its ``state_sha256`` differs):
    the cluster drifted since planning, so the plan must be made again."""


class TopologyError(InputError):
    """The shape of the cluster cannot satisfy the policy, whatever the placement."""


class InfeasibleError(PlacementError):
    """No plan satisfies every hard constraint within the given budget.

    Attributes
    ----------
    diagnosis : placement.diagnose.Diagnosis or None
        The conflicting constraints, with the shards, nodes and domains involved and a
        recommendation, when the raiser diagnosed the instance.
    """

    def __init__(self, *args: object, diagnosis: Any = None) -> None:
        super().__init__(*args)
        self.diagnosis = diagnosis


class SchedulingError(PlacementError):
    """The moves of a plan cannot be ordered into safe waves (for example a cycle of moves
    between full nodes, with no node to hold a replica temporarily); the message names
    the moves and nodes involved."""


def format_ids(ids: Iterable[object], *, limit: int = 5) -> str:
    """Render ids for an error message: the first *limit* quoted, then a count of the rest.

    >>> format_ids(["n1", "n2"])
    "'n1', 'n2'"
    >>> format_ids([f"s{i}" for i in range(8)], limit=3)
    "'s0', 's1', 's2' and 5 more"
    """
    items = list(ids)
    shown = ", ".join(repr(str(item)) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown
