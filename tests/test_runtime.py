"""Size profiles, device choice and seeding."""

import pytest
import torch

from course_lib import runtime


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV_VAR, "cpu")
    assert runtime.get_profile().name == "cpu"
    assert runtime.get_profile("gpu").name == "gpu"  # an explicit name wins over the variable


def test_default_profile_follows_the_hardware(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV_VAR, raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert runtime.get_profile().name == expected


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV_VAR, "huge")
    with pytest.raises(ValueError, match=r"unknown size profile 'huge'.*ci, cpu, gpu"):
        runtime.get_profile()


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = (runtime.PROFILES[n] for n in ("ci", "cpu", "gpu"))
    for field in ("train_steps", "batch_size", "n_samples", "sampler_steps", "grid_size"):
        assert getattr(ci, field) <= getattr(cpu, field) <= getattr(gpu, field), field
    assert cpu.pick(ci=1, cpu=2, gpu=3) == 2


def test_device_choice():
    assert runtime.get_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert runtime.get_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.get_device("cuda")


def test_seeding_is_reproducible():
    a = torch.randn(3, generator=runtime.seed_everything(7))
    b = torch.randn(3, generator=runtime.seed_everything(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="seed"):
        runtime.seed_everything(-1)
