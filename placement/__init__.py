"""placement: plan where the replicas of sharded data should live, and how to get there.

The façade: everything a user needs is importable from here.

>>> import placement
>>> report = placement.evaluate(placement.example_state())
>>> report.status
'critical'
"""

from placement.constraints import Violations, check, is_valid, node_load
from placement.datasets import TIERS, example_state, synthetic_state, tier_state
from placement.diagnose import Diagnosis, PartialPlan, diagnose, plan_partial
from placement.errors import (
    DuplicateIdError,
    InfeasibleError,
    InputError,
    InvalidValueError,
    PlacementError,
    SchemaError,
    TopologyError,
    UnknownIdError,
)
from placement.evaluate import Report, evaluate
from placement.io import dump_state, load_state, state_from_document, state_to_document
from placement.model import EMPTY, Cluster, NodeState, Placement, Policy, RegionGraph, Shards, State

__version__ = "0.1.0"

__all__ = [
    "EMPTY",
    "TIERS",
    "Cluster",
    "Diagnosis",
    "DuplicateIdError",
    "InfeasibleError",
    "InputError",
    "InvalidValueError",
    "NodeState",
    "PartialPlan",
    "Placement",
    "PlacementError",
    "Policy",
    "RegionGraph",
    "Report",
    "SchemaError",
    "Shards",
    "State",
    "TopologyError",
    "UnknownIdError",
    "Violations",
    "check",
    "diagnose",
    "dump_state",
    "evaluate",
    "example_state",
    "is_valid",
    "load_state",
    "node_load",
    "plan_partial",
    "state_from_document",
    "state_to_document",
    "synthetic_state",
    "tier_state",
]
