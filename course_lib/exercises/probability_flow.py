"""Checks for the exercises of chapter 6, the probability-flow ODE and DPM-Solver."""

from __future__ import annotations

from .checking import exercise_check  # noqa: F401

__all__: list[str] = []
