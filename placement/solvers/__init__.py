"""Solvers. Private kernels that trust their inputs; :mod:`placement.planner` is the public
entry point, validates, and re-checks every result against :mod:`placement.constraints`."""
