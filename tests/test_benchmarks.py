"""benchmarks/gpu_throughput.py runs at tiny size on the CPU (its GPU figures need a GPU) and prints
every table: training rows with compile and bf16 on and off, the tutorial style beside them at
equal model size, their ratio, sampling at 10, 20 and 50 NFE."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_the_tutorial_unet_keeps_the_image_shape_and_has_the_tutorials_size():
    bench = load_benchmark()
    for c, size in ((1, 28), (3, 32)):
        net = bench.TutorialUNet(size, c)
        x = torch.randn(2, c, size, size)
        assert net(x, torch.rand(2)).shape == x.shape
    assert round(sum(p.numel() for p in bench.TutorialUNet(28, 1).parameters()) / 1e6, 1) == 1.1  # the tutorial's


def quick(capsys, recipe):
    threads = torch.get_num_threads()
    try:
        assert load_benchmark().main(["--quick", "--device", "cpu", "--recipes", recipe]) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def test_quick_prints_every_table(capsys):
    out = quick(capsys, "digits-vp")
    rows = [line for line in out.splitlines() if line.startswith("digits-tiny-vp")]
    assert sum("course_lib.train" in r for r in rows) == 3  # compile off and on, channels-last
    assert sum("channels-last" in r for r in rows) == 1
    assert sum("bf16 autocast is used on CUDA only" in r for r in rows) == 2
    assert sum("tutorial style" in r for r in rows) == 1
    assert sum(r.rstrip().endswith("x") for r in rows) == 1  # the ratio table
    assert "10 NFE    20 NFE    50 NFE" in out and len(rows[-1].split()) == 4  # the sampling table


@pytest.mark.slow
def test_quick_measures_the_tutorial_unet_beside_a_recipe(capsys):
    out = quick(capsys, "mnist-vp")
    rows = [line for line in out.splitlines() if line.startswith("TutorialUNet 1x28x28")]
    assert sum("course_lib.train" in r for r in rows) == 3 and sum("tutorial style" in r for r in rows) == 1
    assert rows[-1].rstrip().endswith("x")
