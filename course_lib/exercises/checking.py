"""What every exercise check shares: one kind of verdict, and the comparisons that produce it.

A check is a function `check_<name>(student_function)` decorated with `@exercise_check`. It
tests the student's function on fixed and random problems against an independent answer and
either prints one line starting with "Correct:" or raises `ExerciseFailure` with one short,
specific message. The decorator turns everything else into such a message too: the untouched
stub (`raise NotImplementedError`) becomes "not implemented yet", and an exception raised inside
the student's code becomes a sentence naming it, never a traceback.

In Jupyter and Colab an `ExerciseFailure` is shown as its message alone (IPython calls
`_render_traceback_` instead of printing the traceback), yet the cell still fails, so nbval and
the grader see it.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

DTYPE = torch.float64
# float64 round-off over a handful of matrix operations on well-conditioned problems
RTOL, ATOL = 1e-7, 1e-9


class ExerciseFailure(AssertionError):
    """A check's verdict on a wrong or unfinished answer: one message, no traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"\N{BALLOT X} {self}"]


def exercise_check(check: Callable) -> Callable:
    """Decorate a check so that it answers with one sentence whatever the student's code does."""

    @functools.wraps(check)
    def run(*args, **kwargs):
        name = getattr(args[0], "__name__", "your function") if args else "your function"
        try:
            return check(*args, **kwargs)
        except ExerciseFailure:
            raise
        except NotImplementedError:
            raise ExerciseFailure(f"{name} is not implemented yet: replace `raise NotImplementedError` "
                                  "with your code, run that cell, then this one") from None
        except Exception as err:  # raised inside the student's function
            raise ExerciseFailure(f"{name} raised {type(err).__name__}: {_first_line(err)}") from None

    return run


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "(no message)"


def fail(message: str) -> None:
    """Raise the verdict `message`."""
    raise ExerciseFailure(message)


def check_tensor(name: str, got, expected: Tensor, what: str = "") -> Tensor:
    """The student's result `got` as a tensor, after checking its type, dtype, shape and
    finiteness against `expected`; `what` says where (e.g. "in dimension 2")."""
    where = f" {what}" if what else ""
    if not torch.is_tensor(got):
        fail(f"{name} must return a torch.Tensor, got {type(got).__name__}{where}")
    if got.dtype != expected.dtype:
        fail(f"{name} returned {got.dtype}{where}; keep the inputs' dtype ({expected.dtype})")
    if got.shape != expected.shape:
        fail(f"{name} returned shape {tuple(got.shape)}{where}; expected {tuple(expected.shape)}")
    if got.device != expected.device:
        fail(f"{name} returned a tensor on {got.device}{where}; keep it on the inputs' device ({expected.device})")
    if not bool(torch.isfinite(got).all()):
        fail(f"{name} returned NaN or Inf{where}")
    return got


def assert_close(name: str, got, expected: Tensor, what: str = "", *, rtol: float = RTOL,
                 atol: float = ATOL, hints: dict[str, Tensor] | None = None) -> None:
    """ExerciseFailure unless `got` matches `expected` elementwise within rtol/atol.

    `hints` maps a diagnosis ("the sign is flipped") to the answer that mistake would give; when
    `got` matches one of them the message names it instead of a bare error size.
    """
    got = check_tensor(name, got, expected, what)
    where = f" {what}" if what else ""
    if torch.allclose(got, expected, rtol=rtol, atol=atol):
        return
    for diagnosis, wrong in (hints or {}).items():
        if wrong.shape == got.shape and torch.allclose(got, wrong.to(got.dtype), rtol=rtol, atol=atol):
            fail(f"{name} is wrong{where}: {diagnosis}")
    err = (got - expected).abs().max().item()
    fail(f"{name} is off by up to {err:.3g}{where}")
