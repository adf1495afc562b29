"""course_lib: the tested PyTorch library behind the score-based generative models course.

Import the module you need (`from course_lib import sde, samplers`); each holds one idea.
"""

__version__ = "0.1.0"
