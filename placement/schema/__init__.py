"""The JSON Schema of the interchange state document (``placement.state/1``).

The schema is data (``state.schema.json`` beside this module), so other programs can use
it without importing `placement`. It checks the shape and value ranges of a document; the
reader, :func:`placement.io.interchange.state_from_document`, additionally checks what a
schema cannot express (references between ids, one location entry per level, replication
against failure domains, a connected region graph).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["state_schema"]


@cache
def _state_schema_text() -> str:
    return resources.files(__name__).joinpath("state.schema.json").read_text(encoding="utf-8")


def state_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``placement.state/1`` document.

    Returns
    -------
    dict
        A freshly parsed schema: callers may modify it without affecting later calls.

    Examples
    --------
    >>> schema = state_schema()
    >>> schema["$schema"]
    'https://json-schema.org/draft/2020-12/schema'
    >>> schema["properties"]["format"]["const"], schema["required"]
    ('placement.state/1', ['format', 'resources', 'levels', 'nodes', 'shards'])
    """
    return json.loads(_state_schema_text())
