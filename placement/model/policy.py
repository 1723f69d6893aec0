"""The operator's policy: hard-constraint parameters and report thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from placement.errors import InvalidValueError, SchemaError

__all__ = ["Policy"]


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


@dataclass(frozen=True)
class Policy:
    """Constraint parameters and thresholds, with the runbook's defaults.

    Parameters
    ----------
    headroom : float
        Highest utilization a node may reach for any resource (0 < headroom <= 1).
    headroom_by_resource : mapping of str to float
        Per-resource overrides of ``headroom``.
    spread_level : str or None
        Location level of the failure domains; None means the second level, or the only one.
    max_per_domain : int
        Most replicas of one shard in one domain at ``spread_level``.
    min_regions : int
        Fewest distinct regions a shard's replicas must span.
    latency_target_ms, latency_max_ms : float or None
        Client latency within which demand counts as served / is tolerable. None: no
        latency constraint (the report then uses the runbook's 50 ms and 100 ms).
    imbalance_warning, imbalance_critical : float
        Imbalance-ratio levels of the report's status (runbook: 20% and 35%).
    imbalance_alert : float
        Imbalance ratio above which the report raises an alert (runbook: 0.25).
    coverage_target, coverage_alert : float
        Regional coverage goal and alert level (runbook: 80%, alert below 75%).
    max_concurrent_per_node : int
        Concurrent transfers per node when executing a plan (runbook: 10).
    cross_region_alert_bytes : float
        Cross-region volume of a plan above which it needs approval (runbook: 100 GB).

    Examples
    --------
    >>> p = Policy.from_mapping({"headroom": 0.9, "spread_level": "rack"})
    >>> p.headroom, p.spread_level, p.max_per_domain
    (0.9, 'rack', 1)
    >>> Policy.from_mapping({"headroom": 1.5})
    Traceback (most recent call last):
    ...
    placement.errors.InvalidValueError: policy.headroom must be in (0, 1], got 1.5.
    """

    headroom: float = 0.85
    headroom_by_resource: Mapping[str, float] = field(default_factory=dict)
    spread_level: str | None = None
    max_per_domain: int = 1
    min_regions: int = 1
    latency_target_ms: float | None = None
    latency_max_ms: float | None = None
    imbalance_warning: float = 0.20
    imbalance_critical: float = 0.35
    imbalance_alert: float = 0.25
    coverage_target: float = 0.80
    coverage_alert: float = 0.75
    max_concurrent_per_node: int = 10
    cross_region_alert_bytes: float = 100e9

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "headroom_by_resource", MappingProxyType(dict(self.headroom_by_resource))
        )
        for name, value in [("headroom", self.headroom), *self.headroom_by_resource.items()]:
            label = "policy.headroom" if name == "headroom" else f"policy.headroom[{name!r}]"
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise InvalidValueError(f"{label} must be in (0, 1], got {value!r}.")
        for name in ("max_per_domain", "min_regions", "max_concurrent_per_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
                raise InvalidValueError(
                    f"policy.{name} must be a whole number >= 1 (at most 1000000), got {value!r:.40}."
                )
        for name in (
            "imbalance_warning",
            "imbalance_critical",
            "imbalance_alert",
            "coverage_target",
            "coverage_alert",
            "cross_region_alert_bytes",
            "latency_target_ms",
            "latency_max_ms",
        ):
            value = getattr(self, name)
            if value is None and name.startswith("latency"):
                continue
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not _finite(value)
                or value < 0
            ):
                raise InvalidValueError(
                    f"policy.{name} must be a finite number >= 0, got {value!r}."
                )
        if self.imbalance_critical < self.imbalance_warning:
            raise InvalidValueError(
                f"policy.imbalance_critical ({self.imbalance_critical}) is below imbalance_warning "
                f"({self.imbalance_warning}); critical must be the higher level."
            )
        if self.coverage_target > 1 or self.coverage_alert > 1:
            raise InvalidValueError(
                "policy.coverage_target and coverage_alert are shares in [0, 1]."
            )
        if (
            self.latency_target_ms is not None
            and self.latency_max_ms is not None
            and self.latency_max_ms < self.latency_target_ms
        ):
            raise InvalidValueError(
                f"policy.latency_max_ms ({self.latency_max_ms}) is below latency_target_ms "
                f"({self.latency_target_ms}); the maximum must be the larger."
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Policy:
        """Build from a JSON ``policy`` object; unknown keys are an error (likely typos)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SchemaError(f"policy must be an object, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)} - {"headroom_by_resource"}  # set through "headroom"
        unknown = sorted(
            str(k)
            for k in data
            if k not in known and not (isinstance(k, str) and k.startswith("x-"))
        )
        if unknown:
            raise SchemaError(
                f"Unknown policy field(s) {unknown}; known fields: {sorted(known)}. Fix the spelling, "
                'or prefix extension fields with "x-".'
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        headroom = kwargs.get("headroom")
        if isinstance(headroom, Mapping):
            # A per-resource object: its "default" entry (if any) is the scalar headroom.
            per = dict(headroom)
            if not all(isinstance(k, str) for k in per):
                raise SchemaError("policy.headroom keys must be resource names.")
            kwargs["headroom"] = per.pop("default", cls.headroom)
            kwargs["headroom_by_resource"] = per
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, Any]:
        """The JSON ``policy`` object (defaults included, so a document is self-describing)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        by_resource = dict(out.pop("headroom_by_resource"))
        if by_resource:
            out["headroom"] = {"default": self.headroom, **by_resource}
        return out
