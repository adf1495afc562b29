"""Sampler benchmark on Gaussian mixtures with exact scores: endpoint error against the exact
probability-flow solution, measured convergence order, sample quality (sliced W2, MMD^2 with
their noise floors), wall time and the share of time spent outside score evaluations.

    python benchmarks/samplers.py            # full run (about 10 minutes on two CPU cores)
    python benchmarks/samplers.py --quick    # smoke run (well under a minute)

Models: a 2-D mixture (5 anisotropic modes with unequal weights) and a 32-D one (8 modes,
random covariances of condition number ~100), under the VP SDE, and the 2-D one under the VE SDE.
Deterministic samplers start from the same prior draws as the reference solution (DOP853,
tol 1e-10, float64), so their endpoint RMS error is pure discretization error. Sample metrics
compare the samples at t = eps with exact samples of p_0. Every sampler runs on its customary
grid (named in its row). The "best" row is UniPC-3 (course_lib.multistep) on a grid fitted to
the model for each NFE <= 50 (`multistep.fit_grid`, on calibration draws disjoint from the
evaluation draws; the fitting cost is printed), and on the logSNR grid above that. The
"default" row is `course_lib.sampling.sample`, which fits nothing; a last table compares it with
DPM-Solver++(2M) on the logSNR grid on ten mixtures, seven of them held aside from its choice.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from course_lib import dpm_solver as dpm
from course_lib import multistep as ms
from course_lib import samplers as smp
from course_lib import sampling
from course_lib.distributions import GaussianMixture, ring_of_gaussians
from course_lib.metrics import mmd_rbf, noise_floor, sliced_wasserstein
from course_lib.sde import VESDE, VPSDE, SubVPSDE

F64 = torch.float64


@dataclass(frozen=True)
class Config:
    n_error: int  # prior draws for endpoint errors and sample metrics (float64)
    n_default: int  # x5 (D <= 16) or x2 prior draws per model of the default-sampler table
    n_timing: int  # samples per timing run (float32)
    n_calibration: int  # prior draws the best sampler's grid is fitted on (disjoint; 4x for D <= 2)
    nfes: tuple  # NFE budgets of the tables
    fit_nfes: tuple  # budgets that get a fitted grid (the others use the logSNR grid)
    fit_evals: int  # Nelder-Mead evaluations per fitted grid
    timing_nfe: int  # NFE of the timing runs
    floor_repeats: int  # pairs of true sample sets per noise floor
    order_nfes: tuple  # NFE range of the fitted convergence order


FULL = Config(2000, 2000, 10_000, 768, (5, 10, 20, 50, 100, 1000), (5, 10, 20, 50), 400, 20, 5, (20, 50, 100))
QUICK = Config(300, 100, 2000, 128, (5, 10, 20, 50), (10, 20), 40, 10, 2, (10, 20, 50))


# -- models ------------------------------------------------------------------------------------
def mixture_2d() -> GaussianMixture:
    """5 modes on a circle of radius 2, weights 0.35 .. 0.08, stds 0.3 x 0.08 at random angles."""
    g = torch.Generator().manual_seed(0)
    angle = 2 * math.pi * torch.arange(5, dtype=F64) / 5
    means = 2.0 * torch.stack([angle.cos(), angle.sin()], 1)
    theta = math.pi * torch.rand(5, generator=g, dtype=F64)
    rot = torch.stack([torch.stack([theta.cos(), -theta.sin()], 1), torch.stack([theta.sin(), theta.cos()], 1)], 1)
    covs = rot @ torch.diag(torch.tensor([0.3**2, 0.08**2], dtype=F64)) @ rot.transpose(1, 2)
    return GaussianMixture(torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08], dtype=F64), means, covs)


def mixture_32d(dim: int = 32, k: int = 8) -> GaussianMixture:
    """k modes, means ~ N(0, 0.36 I), covariances Q diag(l) Q^T with l log-uniform in [0.005, 0.5]."""
    g = torch.Generator().manual_seed(1)
    weights = torch.softmax(0.5 * torch.randn(k, generator=g, dtype=F64), 0)
    means = 0.6 * torch.randn(k, dim, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=F64))
    evals = 0.005 * torch.exp(math.log(100.0) * torch.rand(k, dim, generator=g, dtype=F64))
    covs = q @ torch.diag_embed(evals) @ q.transpose(1, 2)
    return GaussianMixture(weights, means, 0.5 * (covs + covs.transpose(1, 2)))


def _rotated(evals: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Covariances Q_k diag(evals_k) Q_k^T with random orthogonal Q_k: (K, D, D)."""
    k, dim = evals.shape
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=F64))
    covs = q @ torch.diag_embed(evals) @ q.transpose(1, 2)
    return 0.5 * (covs + covs.transpose(1, 2))


def mixture_overlapping_64d() -> GaussianMixture:
    """4 heavily overlapping modes in 64-D (means ~ N(0, 0.06 I), variances in [0.1, 1])."""
    g = torch.Generator().manual_seed(5)
    weights = torch.softmax(0.3 * torch.randn(4, generator=g, dtype=F64), 0)
    means = 0.25 * torch.randn(4, 64, generator=g, dtype=F64)
    evals = 0.1 * torch.exp(math.log(10.0) * torch.rand(4, 64, generator=g, dtype=F64))
    return GaussianMixture(weights, means, _rotated(evals, g))


def mixture_degenerate_16d() -> GaussianMixture:
    """3 modes near 2-D planes of R^16: variances 0.1 and 0.03, then 1e-4 in 14 directions, so
    the probability flow is stiff near t = eps, as for data on a low-dimensional manifold."""
    g = torch.Generator().manual_seed(6)
    means = 0.8 * torch.randn(3, 16, generator=g, dtype=F64)
    evals = torch.full((3, 16), 1e-4, dtype=F64)
    evals[:, :2] = torch.tensor([0.1, 0.03], dtype=F64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=F64), means, _rotated(evals, g))


def mixture_8d() -> GaussianMixture:
    """3 well-separated isotropic modes in 8-D with stds 0.3, 0.1, 0.5."""
    g = torch.Generator().manual_seed(7)
    means = 2 * torch.randn(3, 8, generator=g, dtype=F64)
    covs = torch.stack([s**2 * torch.eye(8, dtype=F64) for s in (0.3, 0.1, 0.5)])
    return GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=F64), means, covs)


def mixture_many_modes_4d() -> GaussianMixture:
    """10 modes in 4-D with random full covariances and unequal weights."""
    g = torch.Generator().manual_seed(11)
    weights = torch.softmax(torch.randn(10, generator=g, dtype=F64), 0)
    means = 1.5 * torch.randn(10, 4, generator=g, dtype=F64)
    a = 0.2 * torch.randn(10, 4, 4, generator=g, dtype=F64)
    return GaussianMixture(weights, means, a @ a.transpose(1, 2) + 0.01 * torch.eye(4, dtype=F64))


def mixture_degenerate_48d() -> GaussianMixture:
    """4 modes near 3-D subspaces of R^48 (variances 0.05, 0.02, 0.01, then 1e-5)."""
    g = torch.Generator().manual_seed(12)
    means = 0.5 * torch.randn(4, 48, generator=g, dtype=F64)
    evals = torch.full((4, 48), 1e-5, dtype=F64)
    evals[:, :3] = torch.tensor([0.05, 0.02, 0.01], dtype=F64)
    return GaussianMixture(torch.full((4,), 0.25, dtype=F64), means, _rotated(evals, g))


def default_models() -> dict:
    """(mixture, SDE) pairs of the default-sampler table: the three benchmark models the choice was
    made on, then seven held aside from it (the last three were first run after the choice)."""
    ring = ring_of_gaussians(8, 2.0, 0.05, dtype=F64)
    return {
        "2-D, VP (tuning)": (mixture_2d(), VPSDE()),
        "32-D, VP (tuning)": (mixture_32d(), VPSDE()),
        "2-D, VE (tuning)": (mixture_2d(), VESDE()),
        "ring 8 x 0.05, VP": (ring, VPSDE()),
        "64-D overlap, sub-VP": (mixture_overlapping_64d(), SubVPSDE()),
        "16-D degenerate, VP": (mixture_degenerate_16d(), VPSDE()),
        "8-D, VE": (mixture_8d(), VESDE()),
        "4-D 10 modes, sub-VP": (mixture_many_modes_4d(), SubVPSDE()),
        "48-D degenerate, VE": (mixture_degenerate_48d(), VESDE()),
        "ring 6 x 0.15, VE": (ring_of_gaussians(6, 3.0, 0.15, dtype=F64), VESDE()),
    }


# -- samplers: run(score_fn, sde, x, nfe, generator) -> (x at eps, NFE used) ------------------------
@dataclass(frozen=True)
class Entry:
    name: str  # row label
    run: Callable  # run(score_fn, sde, x, nfe, generator) -> (samples, NFE used)
    stochastic: bool  # no endpoint error for SDE samplers
    one_grid: bool = True  # one grid family at every NFE (else no convergence order is fitted)


def fixed_grid(sampler, grid, per_step: int = 1):
    def run(score_fn, sde, x, nfe, generator):
        n = max(1, nfe // per_step)
        return sampler(score_fn, sde, x, grid(sde, n, dtype=x.dtype), generator=generator), n * per_step
    return run


def singlestep(order: int):
    def run(score_fn, sde, x, nfe, generator):
        ts, orders = dpm.singlestep_plan(sde, nfe, order, dtype=x.dtype)
        return dpm.dpm_solver_singlestep(score_fn, sde, x, ts, orders=orders), nfe
    return run


def fitted(grids: dict):
    """UniPC-3 on the grid fitted for this NFE (logSNR grid where none was fitted)."""
    def run(score_fn, sde, x, nfe, generator):
        if nfe in grids:
            ts = ms.density_grid(sde, nfe, grids[nfe], dtype=x.dtype)
        else:
            ts = dpm.logsnr_grid(sde, nfe, dtype=x.dtype)
        return ms.unipc_3(score_fn, sde, x, ts), nfe
    return run


def default_sampler(score_fn, sde, x, nfe, generator):
    """course_lib.sampling.sample: method, orders and grid from the NFE alone."""
    return sampling.sample(score_fn, sde, x, nfe=nfe), nfe


def pc(score_fn, sde, x, ts, *, generator=None, callback=None):
    return smp.predictor_corrector(score_fn, sde, x, ts, n_corrector_steps=1, generator=generator)


def entries(grids: dict) -> list[Entry]:
    uniform, logsnr = dpm.time_uniform_grid, dpm.logsnr_grid
    return [
        Entry("Euler-Maruyama (t-uniform)", fixed_grid(smp.euler_maruyama, uniform), True),
        Entry("rev.-diffusion PC (t-unif.)", fixed_grid(pc, uniform, 2), True),
        Entry("Euler ODE (t-uniform)", fixed_grid(smp.euler_ode, uniform), False),
        Entry("Heun ODE (t-uniform)", fixed_grid(smp.heun_ode, uniform, 2), False),
        Entry("DDIM (quadratic)", fixed_grid(smp.ddim, dpm.quadratic_grid), False),
        Entry("DPM-Solver-1 (logSNR)", fixed_grid(dpm.dpm_solver_1, logsnr), False),
        Entry("DPM-Solver-2 (logSNR)", singlestep(2), False),
        Entry("DPM-Solver-3 fast (logSNR)", singlestep(3), False),
        Entry("DPM-Solver++(2M) (logSNR)", fixed_grid(dpm.dpm_solver_pp_2m, logsnr), False),
        Entry("DPM-Solver++(3M) (logSNR)", fixed_grid(ms.dpm_solver_pp_3m, logsnr), False),
        Entry("UniPC-3 (logSNR)", fixed_grid(ms.unipc_3, logsnr), False),
        Entry("best: UniPC-3 (fitted grid)", fitted(grids), False, one_grid=False),
        Entry(DEFAULT, default_sampler, False, one_grid=False),
    ]


DEFAULT = "default: sampling.sample"


# -- measurements -------------------------------------------------------------------------------
class TimedScore:
    """Wrap a score function and add up the wall time spent inside it."""

    def __init__(self, score_fn):
        self.score_fn, self.seconds = score_fn, 0.0

    def __call__(self, x, t):
        start = time.perf_counter()
        out = self.score_fn(x, t)
        self.seconds += time.perf_counter() - start
        return out


def slope(nfes, errors) -> float:
    """Least-squares slope of -log(error) against log(NFE)."""
    u = torch.tensor([math.log(n) for n in nfes], dtype=F64)
    v = torch.tensor([math.log(e) for e in errors], dtype=F64)
    u, v = u - u.mean(), v - v.mean()
    return float(-(u * v).sum() / (u * u).sum())


def fit_grids(cfg: Config, mixture, sde) -> dict:
    score_fn = mixture.score_fn(sde)
    n_cal = cfg.n_calibration * (4 if mixture.dim <= 2 else 1)
    x = sde.prior_sampling((n_cal, mixture.dim), generator=torch.Generator().manual_seed(99), dtype=F64)
    x_ref = smp.ode_reference(score_fn, sde, x)
    start, grids = time.perf_counter(), {}
    for nfe in cfg.fit_nfes:
        fit = ms.fit_grid(ms.unipc_3, score_fn, sde, x, x_ref, nfe, max_evals=cfg.fit_evals)
        grids[nfe] = fit.knots
        print(f"  NFE {nfe:>3d}: held-out RMS error {fit.fitted_error:.3e} fitted vs {fit.start_error:.3e} on the "
              f"logSNR grid: {'fitted grid kept' if fit.helped else 'logSNR grid kept'}")
    spent = cfg.fit_evals * sum(cfg.fit_nfes)
    print(f"  grids of the best sampler fitted on {n_cal} separate calibration draws at NFE "
          f"{list(cfg.fit_nfes)}: {time.perf_counter() - start:.0f} s, <= {spent} batched evaluations")
    return grids


def evaluate(cfg: Config, mixture, sde, rows: list[Entry]) -> dict:
    """Endpoint error, SW2 and MMD^2 of every sampler at every NFE, in float64."""
    score_fn = mixture.score_fn(sde)
    x = sde.prior_sampling((cfg.n_error, mixture.dim), generator=torch.Generator().manual_seed(1), dtype=F64)
    x_ref = smp.ode_reference(score_fn, sde, x)
    true = mixture.sample(cfg.n_error, generator=torch.Generator().manual_seed(2))
    def sw2(a, b):
        return sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(3))
    floors = {name: noise_floor(metric, mixture.sample, cfg.n_error, repeats=cfg.floor_repeats,
                                generator=torch.Generator().manual_seed(4))
              for name, metric in (("sw2", sw2), ("mmd", mmd_rbf))}
    results = {}
    for entry in rows:
        for nfe in cfg.nfes:
            out, used = entry.run(score_fn, sde, x, nfe, torch.Generator().manual_seed(5))
            dist = None if entry.stochastic else (out - x_ref).flatten(1).norm(dim=1)
            results[entry.name, nfe] = {"err": None if dist is None else float(dist.pow(2).mean().sqrt()),
                                        "median": None if dist is None else float(dist.median()),
                                        "sw2": float(sw2(out, true)), "mmd": float(mmd_rbf(out, true)), "nfe": used}
    results["floors"] = floors
    return results


def score_calls_only(score_fn, sde, x, nfe, generator):
    """The floor of the overhead column: `nfe` score calls and nothing else. What it still shows
    outside the score (the timer itself, freeing each output) no sampler can avoid."""
    t = torch.full((x.shape[0],), 0.5 * (sde.T + sde.eps), dtype=x.dtype)
    for _ in range(nfe):
        score_fn(x, t)
    return x, nfe


def timing(cfg: Config, mixture, sde, rows: list[Entry]) -> dict:
    """Wall time per 10k samples at cfg.timing_nfe (float32, best of five runs: two were too few
    on a busy machine) and overhead share."""
    mixture32 = mixture.to(dtype=torch.float32)
    x = sde.prior_sampling((cfg.n_timing, mixture.dim), generator=torch.Generator().manual_seed(6))
    out = {}
    floor = Entry("(score calls only: the floor)", score_calls_only, stochastic=False)
    for entry in [floor, *rows]:
        best = None
        for _ in range(5):
            timed = TimedScore(mixture32.score_fn(sde))
            start = time.perf_counter()
            entry.run(timed, sde, x, cfg.timing_nfe, torch.Generator().manual_seed(7))
            total = time.perf_counter() - start
            if best is None or total < best[0]:
                best = (total, timed.seconds)
        out[entry.name] = (best[0] * 1e4 / cfg.n_timing, 1.0 - best[1] / best[0])
    return out


# -- printing -----------------------------------------------------------------------------------
def fmt(value, spec=".2e") -> str:
    return "-" if value is None else format(value, spec)


def print_metric(cfg: Config, rows, results, key: str, title: str, order: bool = False) -> None:
    head = f"  {'sampler':30s}" + "".join(f"{'NFE ' + str(n):>10s}" for n in cfg.nfes)
    print(f"\n  {title}\n" + head + (f"{'order':>7s}{'(median)':>9s}" if order else ""))
    for entry in rows:
        values = [results[entry.name, n][key] for n in cfg.nfes]
        line = f"  {entry.name:30s}" + "".join(f"{fmt(v):>10s}" for v in values)
        if order:
            for stat, width in (("err", 7), ("median", 9)):
                errs = [results[entry.name, n][stat] for n in cfg.order_nfes]
                fitted_order = entry.one_grid and not entry.stochastic
                line += f"{format(slope(cfg.order_nfes, errs), '.2f') if fitted_order else '-':>{width}s}"
        print(line)
    if key in results["floors"]:
        mean, std = results["floors"][key]
        print(f"  {'noise floor (true vs true)':30s}{mean:>10.2e} +- {std:.1e}")


def print_timing(cfg: Config, times: dict) -> None:
    print(f"\n  wall time per 10k samples at NFE {cfg.timing_nfe} (float32, {cfg.n_timing} samples, best of 5)")
    print(f"  {'sampler':30s}{'ms / 10k':>10s}{'outside score':>15s}")
    for name, (ms_per, share) in times.items():
        print(f"  {name:30s}{ms_per * 1e3:>10.1f}{100 * share:>14.1f}%")


def print_quality(cfg: Config, results) -> None:
    ref_nfe = max(cfg.nfes)
    em = results["Euler-Maruyama (t-uniform)", ref_nfe]
    print(f"\n  sample quality at <= 20 NFE against Euler-Maruyama with {ref_nfe} steps "
          f"(SW2 {em['sw2']:.2e}, MMD^2 {em['mmd']:.2e}); 'yes' = within 2 noise-floor std of it or below")
    for name in ("DPM-Solver-3 fast (logSNR)", "DPM-Solver++(2M) (logSNR)", "best: UniPC-3 (fitted grid)", DEFAULT):
        for nfe in (n for n in cfg.nfes if n <= 20):
            r = results[name, nfe]
            ok = {k: r[k] <= em[k] + 2 * results["floors"][k][1] for k in ("sw2", "mmd")}
            print(f"  {name:30s} NFE {nfe:>3d}: SW2 {r['sw2']:.2e} ({'yes' if ok['sw2'] else 'no'}), "
                  f"MMD^2 {r['mmd']:.2e} ({'yes' if ok['mmd'] else 'no'})")


def section(cfg: Config, label: str, mixture, sde, with_timing: bool = True) -> dict:
    print(f"\n=== {label}: D = {mixture.dim}, K = {mixture.n_components}, {sde!r} ===")
    start = time.perf_counter()
    rows = entries(fit_grids(cfg, mixture, sde))
    results = evaluate(cfg, mixture, sde, rows)
    print(f"  errors and metrics on {cfg.n_error} prior draws / true samples (float64); "
          f"'-': stochastic sampler; Heun and PC spend 2 NFE per step (odd budgets rounded down)")
    print_metric(cfg, rows, results, "err", "endpoint RMS error vs the reference PF-ODE solution (order: slope of "
                 f"the RMS / the median error over NFE {list(cfg.order_nfes)}; the RMS is dominated by the few\n"
                 "  trajectories that a step error moves to another mode, so its slope is pre-asymptotic)", order=True)
    print_metric(cfg, rows, results, "sw2", "sliced W2 to true samples")
    print_metric(cfg, rows, results, "mmd", "MMD^2 (unbiased, median bandwidth) to true samples")
    if with_timing:
        print_timing(cfg, timing(cfg, mixture, sde, rows))
    print_quality(cfg, results)
    print(f"  [section time {time.perf_counter() - start:.0f} s]")
    return results


def default_table(cfg: Config) -> None:
    """The default sampler against DPM-Solver++(2M) on the log-SNR grid on every model of
    `default_models`, endpoint errors against the exact flow at NFE 5, 10, 20, 50."""
    nfes = (5, 10, 20, 50)
    print("\n=== the default sampler (course_lib.sampling) vs DPM-Solver++(2M) on the logSNR grid ===")
    print("  endpoint error ratio default / DPM-Solver++(2M), RMS and median over prior draws; goal: <= 0.5 at NFE 10,")
    print("  <= 0.25 at NFE 20. The RMS counts the few trajectories a step error sends to another mode: its ratio is")
    print("  about the square root of the local-error ratio where such switches dominate (their number is ~ the error).")
    head = "".join(f"{'NFE ' + str(n):>14s}" for n in nfes)
    print(f"  {'model':24s}{'draws':>7s}{head}")
    worst = {(stat, n): (0.0, "") for stat in ("rms", "median") for n in nfes}
    for name, (mixture, sde) in default_models().items():
        n_draws = cfg.n_default * (5 if mixture.dim <= 16 else 2)
        score_fn = mixture.score_fn(sde)
        x = sde.prior_sampling((n_draws, mixture.dim), generator=torch.Generator().manual_seed(1), dtype=F64)
        x_ref = smp.ode_reference(score_fn, sde, x)
        cells = []
        for nfe in nfes:
            ours = (sampling.sample(score_fn, sde, x, nfe=nfe) - x_ref).norm(dim=1)
            base = (dpm.dpm_solver_pp_2m(score_fn, sde, x, dpm.logsnr_grid(sde, nfe, dtype=F64)) - x_ref).norm(dim=1)
            ratios = {"rms": float(ours.pow(2).mean().sqrt() / base.pow(2).mean().sqrt()),
                      "median": float(ours.median() / base.median())}
            for stat, r in ratios.items():
                if r > worst[stat, nfe][0]:
                    worst[stat, nfe] = (r, name)
            cells.append(f"{ratios['rms']:.2f} / {ratios['median']:.2f}")
        print(f"  {name:24s}{n_draws:>7d}" + "".join(f"{c:>14s}" for c in cells))
    for stat in ("rms", "median"):
        print(f"  worst {stat:6s} ratio: " + ", ".join(f"NFE {n}: {worst[stat, n][0]:.2f} ({worst[stat, n][1]})"
                                                     for n in nfes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--no-ve", action="store_true", help="skip the VE section")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.quick:
        print("quick smoke run: small sets and a tiny grid-fitting budget; its numbers are not the benchmark's")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    models = {"2-D mixture": mixture_2d(), "32-D mixture": mixture_32d()}
    summary = {name: section(cfg, name, m, VPSDE()) for name, m in models.items()}
    if not args.no_ve:
        summary["2-D mixture, VE"] = section(cfg, "2-D mixture", models["2-D mixture"], VESDE(), with_timing=False)
    print("\n=== best deterministic sampler vs DPM-Solver++(2M) on the logSNR grid (endpoint error) ===")
    print("  (RMS errors are heavy-tailed, a few trajectories switch modes; the median-error ratio is the steadier one)")
    for name, results in summary.items():
        for nfe in (10, 20):
            best, base = results["best: UniPC-3 (fitted grid)", nfe], results["DPM-Solver++(2M) (logSNR)", nfe]
            print(f"  {name:18s} NFE {nfe:>3d}: UniPC-3 + fitted grid {best['err']:.3e} vs DPM-Solver++(2M) "
                  f"{base['err']:.3e}: RMS ratio {best['err'] / base['err']:.2f}, "
                  f"median ratio {best['median'] / base['median']:.2f} (target <= 0.5)")
    default_table(cfg)
    print("\ncomparison with diffusers and k-diffusion on the same nodes: benchmarks/compare_public.py")
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
