"""Every script in ``examples/`` runs on its own and prints something.

The examples are documentation that executes: each is run as a fresh subprocess (as a
user would run it, with the current interpreter), so a change to the façade that breaks
an example fails here. New scripts are picked up by the glob without editing this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))


def test_examples_exist() -> None:
    # Guards the parametrization below: an empty glob would silently test nothing.
    assert EXAMPLES, f"no example scripts found in {EXAMPLES_DIR}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    # Run from an unrelated directory so an example cannot depend on the working directory;
    # PYTHONPATH makes it import this checkout's `placement` even without an editable install.
    path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{script.name} exited {result.returncode}:\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
    assert "Traceback" not in result.stderr, result.stderr


def test_examples_have_docstrings() -> None:
    import ast

    for script in EXAMPLES:
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
        assert doc, f"{script.name} needs a module docstring saying what it shows"


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in EXAMPLES if p.name not in readme]
    assert not missing, f"examples/README.md does not mention {missing}"
