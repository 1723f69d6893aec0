"""Reading and writing the library's documents (interchange JSON)."""

from placement.io.interchange import (
    STATE_FORMAT,
    dump_state,
    load_state,
    state_from_document,
    state_to_document,
)

__all__ = ["STATE_FORMAT", "dump_state", "load_state", "state_from_document", "state_to_document"]
