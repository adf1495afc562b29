"""Automatic checks that the chapters' exercise cells call: `exercises.check_<name>(your_function)`.

One module per chapter holds its checks (each lists them in its `__all__`); all of them are
importable from here. A check tests the student's function against an independent answer
(autograd, or `course_lib`'s closed forms) and prints one line starting with "Correct:", or
fails with one short message saying what is wrong (`ExerciseFailure`, shown without a
traceback in Jupyter; see `checking`).
"""

from . import langevin, ncsn, probability_flow, score_function, score_matching, sde
from .checking import ExerciseFailure
from .langevin import *  # noqa: F401,F403          chapter 2
from .ncsn import *  # noqa: F401,F403              chapter 4
from .probability_flow import *  # noqa: F401,F403  chapter 6
from .score_function import *  # noqa: F401,F403    chapter 1
from .score_matching import *  # noqa: F401,F403    chapter 3
from .sde import *  # noqa: F401,F403               chapter 5

_CHAPTERS = (score_function, langevin, score_matching, ncsn, sde, probability_flow)
__all__ = ["ExerciseFailure"] + [name for chapter in _CHAPTERS for name in chapter.__all__]
