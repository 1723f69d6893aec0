"""The columnar cluster model: nodes, shards, placement, policy and the state binding them."""

from placement.model.assignment import EMPTY, Placement
from placement.model.cluster import Cluster, NodeState, RegionGraph
from placement.model.policy import Policy
from placement.model.shards import Shards
from placement.model.state import State

__all__ = ["EMPTY", "Cluster", "NodeState", "Placement", "Policy", "RegionGraph", "Shards", "State"]
