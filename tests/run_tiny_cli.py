"""The command line with tiny versions of every recipe registered (`recipes.tiny`: every code
path of a recipe at a size the CPU runs in a second), for the tests that run it in other
processes (under torchrun, or stopped by a signal): python tests/run_tiny_cli.py train ...
"""

import sys

from course_lib import cli, recipes

TINY = {r.name: r for r in map(recipes.tiny, recipes.ALL)}

if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    cli.RECIPES.update(TINY)
    sys.exit(cli.main(sys.argv[1:]))
