"""Checks for the exercises of chapter 2, Langevin dynamics."""

from __future__ import annotations

from .checking import exercise_check  # noqa: F401

__all__: list[str] = []
