"""Load a cluster state from an interchange JSON document, and handle a broken one.

Shows the file edge of the library: a ``placement.state/1`` document (see the
interchange spec) written with :mod:`json`, read back with ``placement.load_state``,
and the report's status, imbalance ratio per resource and violation counts. A document
with a mistake raises ``placement.InputError`` (also a ``ValueError``) whose message
names the offending id and says how to fix it.

Run it with ``python examples/load_json.py``.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import placement

TB, GB = 1e12, 1e9
CAPACITY = {"disk_bytes": 4 * TB, "iops": 20000}


def main() -> None:
    """Round-trip a state document through a file, then show a rejected one."""
    # Two regions, two zones each, one node per zone; one node in "us" has failed.
    document = {
        "format": "placement.state/1",
        "resources": ["disk_bytes", "iops"],
        "size_resource": "disk_bytes",
        "levels": ["region", "zone"],
        "nodes": [
            {"id": "eu-1", "location": ["eu", "eu-a"], "capacity": CAPACITY},
            {"id": "eu-2", "location": ["eu", "eu-b"], "capacity": CAPACITY},
            {"id": "us-1", "location": ["us", "us-a"], "capacity": CAPACITY},
            {"id": "us-2", "location": ["us", "us-b"], "capacity": CAPACITY, "state": "failed"},
        ],
        "links": [{"a": "eu", "b": "us", "latency_ms": 80}],
        "shards": [
            {
                "id": "s1",
                "demand": {"disk_bytes": 1200 * GB, "iops": 300},
                "replicas": 2,
                "nodes": ["eu-1", "us-1"],
                "clients": {"eu": 10, "us": 30},
            },
            {
                "id": "s2",
                "demand": {"disk_bytes": 800 * GB, "iops": 100},
                "replicas": 2,
                "nodes": ["eu-2", "us-2"],
                "clients": {"us": 5},
            },
            {
                "id": "s3",
                "demand": {"disk_bytes": 500 * GB, "iops": 900},
                "replicas": 2,
                "nodes": ["eu-1", "eu-2"],
                "allowed_regions": ["eu"],
                "group": "gdpr",
            },
        ],
        "policy": {"headroom": 0.85, "spread_level": "zone", "min_regions": 1},
    }

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")

        state = placement.load_state(path)
        report = placement.evaluate(state)
        print(f"loaded {path.name}: {state.cluster.n_nodes} nodes, {state.shards.n_shards} shards")
        print(f"status: {report.status}")
        for summary in report.resources:
            ratio = "n/a" if summary.imbalance_ratio is None else f"{summary.imbalance_ratio:.3f}"
            print(f"  imbalance ratio {summary.resource:<11} {ratio}  ({summary.status})")
        print("violations:")
        for kind, count in report.violations.counts().items():
            if count:
                print(f"  {kind:<17} {count}")

        # A broken document: a shard lists a node the cluster does not have.
        broken = copy.deepcopy(document)
        broken["shards"][0]["nodes"] = ["eu-1", "us-9"]
        bad_path = Path(tmp) / "broken.json"
        bad_path.write_text(json.dumps(broken), encoding="utf-8")
        try:
            placement.load_state(bad_path)
        except placement.InputError as exc:
            print(f"\n{bad_path.name} rejected ({type(exc).__name__}):\n  {exc}")
        else:  # pragma: no cover - the document above is invalid on purpose
            raise SystemExit("expected the broken document to be rejected")


if __name__ == "__main__":
    main()
