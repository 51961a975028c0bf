"""Experiments built from the library's pieces: :func:`run_cg` runs a Med-MAT compositional-generalization plan."""

from medrega.experiments.cg import CGResult, CGRun, read_plan, run_cg

__all__ = ["CGResult", "CGRun", "read_plan", "run_cg"]
