"""Print a pytest-benchmark JSON file as a markdown table: time beside quality.

Run: ``python benchmarks/report.py engine.json [--columns moves,bytes_over_bound,...]``
after ``python -m pytest benchmarks -k bench_engine --benchmark-only
--benchmark-json=engine.json``. Times are the minimum over rounds (the least disturbed
run on a shared machine); the other columns are the case's ``extra_info``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_COLUMNS = (
    "moves",
    "bytes_moved",
    "lower_bound_bytes",
    "bytes_over_bound",
    "gap",
    "imbalance_after",
    "traded",
    "violations_after",
    "transfer_cost",
    "peak_memory_mb",
)


#: Ratios shown with three decimals: the targets (1.05x the bound) sit at the second.
RATIOS = ("bytes_over_bound",)


def _cell(value: Any, column: str = "") -> str:
    if isinstance(value, dict):
        return " / ".join(_cell(v) for v in value.values())
    if isinstance(value, float):
        if column in RATIOS or abs(value) < 1:
            return f"{value:.3f}"
        if abs(value) >= 1e9:
            return f"{value / 1e12:,.2f} TB"
        return f"{value:,.2f}"
    return "-" if value is None else str(value)


def table(path: Path, columns: tuple[str, ...]) -> str:
    data = json.loads(path.read_text())
    lines = [
        "| case | time s | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        cells = [_cell(info.get(c), c) for c in columns]
        lines.append(
            f"| {bench['name']} | {bench['stats']['min']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--columns", default=",".join(DEFAULT_COLUMNS))
    args = parser.parse_args()
    print(table(args.json, tuple(c for c in args.columns.split(",") if c)))


if __name__ == "__main__":
    main()
