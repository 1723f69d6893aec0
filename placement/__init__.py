"""placement: plan where the replicas of sharded data should live, and how to get there.

The façade: everything a user needs is importable from here.

>>> import placement
>>> report = placement.evaluate(placement.example_state())
>>> report.status
'critical'
"""

from placement.constraints import Violations, check, is_valid, node_load
from placement.cost import CostReport, cost_report
from placement.datasets import TIERS, example_state, synthetic_state, tier_state
from placement.diagnose import Diagnosis, PartialPlan, diagnose, plan_partial
from placement.errors import (
    DuplicateIdError,
    InfeasibleError,
    InputError,
    InvalidValueError,
    PlacementError,
    SchedulingError,
    SchemaError,
    StateDriftError,
    TopologyError,
    UnknownIdError,
)
from placement.evaluate import Report, evaluate
from placement.io import dump_state, load_state, state_from_document, state_to_document
from placement.latency import ClientService, client_service
from placement.model import EMPTY, Cluster, NodeState, Placement, Policy, RegionGraph, Shards, State
from placement.scenarios import plan_geo
from placement.schedule import Schedule, schedule
from placement.solvers.reassign import (
    ReassignProblem,
    ReassignResult,
    evaluate_reassignment,
    solve_reassignment,
)
from placement.solvers.reassign_bound import ReassignBound, reassignment_lower_bound
from placement.validate import Approval, ValidationReport, approval, ensure_current, validate
from placement.verify import VerifyReport, resume, verify

__version__ = "0.1.0"

__all__ = [
    "EMPTY",
    "TIERS",
    "Approval",
    "ClientService",
    "Cluster",
    "CostReport",
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
    "ReassignBound",
    "ReassignProblem",
    "ReassignResult",
    "RegionGraph",
    "Report",
    "Schedule",
    "SchedulingError",
    "SchemaError",
    "Shards",
    "State",
    "StateDriftError",
    "TopologyError",
    "UnknownIdError",
    "ValidationReport",
    "VerifyReport",
    "Violations",
    "approval",
    "check",
    "client_service",
    "cost_report",
    "diagnose",
    "dump_state",
    "ensure_current",
    "evaluate",
    "evaluate_reassignment",
    "example_state",
    "is_valid",
    "load_state",
    "node_load",
    "plan_geo",
    "plan_partial",
    "reassignment_lower_bound",
    "resume",
    "schedule",
    "solve_reassignment",
    "state_from_document",
    "state_to_document",
    "synthetic_state",
    "tier_state",
    "validate",
    "verify",
]
