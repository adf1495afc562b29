"""course_lib's DPM-Solver++(2M) next to two public implementations, on the same nodes:
diffusers' `DPMSolverMultistepScheduler` and k-diffusion's `sample_dpmpp_2m`.

    PYTHONPATH=/tmp/ext python benchmarks/compare_public.py

Neither package is a dependency of the course. Install them apart from the project, e.g.

    python -m pip install --target /tmp/ext --no-deps diffusers huggingface_hub safetensors regex \
        httpx2 httpcore2 anyio h11 sniffio truststore k-diffusion torchsde torchdiffeq trampoline

(torch, numpy, scipy, Pillow, requests, tqdm come from the course's environment). A package
that does not import is skipped with a message. k-diffusion's package `__init__` pulls in
torchvision, scikit-image, kornia, CLIP and wandb; when that fails only its `sampling.py` is
loaded (it needs torchsde and torchdiffeq, and from `k_diffusion.utils` only `append_dims`).

The model is a 2-D Gaussian mixture with its exact score, everything in float64. The noise
schedule is diffusers' default: 1000 DDPM steps with linear betas 1e-4 .. 0.02 (its
`alphas_cumprod`, a float32 table, read as float64). `NodeSDE` is a VP SDE whose half log-SNR
lambda is linear in t between the two ends of that table; every node of a grid is placed at
the t where lambda(t) equals the scheduler's lambda, so alpha and sigma at the nodes are
diffusers' values (to a few ulp). Between nodes the schedule does not matter: in the variables
y = x / alpha and sigma / alpha = e^{-lambda} the probability-flow ODE reads
dy = (y - D(y, e^{-lambda})) d(-lambda), so its solution from node to node depends on the
nodes' lambdas only; the linear choice keeps the drift smooth for the DOP853 reference.

Grids (both end at the smallest sigma of the table, sigma_min > 0, never at sigma = 0):
  diffusers': its `set_timesteps(n)` with timestep_spacing="linspace" (integer timesteps
              999, ..., round(999 / n)) and final_sigmas_type="sigma_min" (last node timestep 0);
  logSNR:     `course_lib.dpm_solver.logsnr_grid` on NodeSDE (uniform in lambda).
diffusers' default final_sigmas_type="zero" ends with a first-order step to sigma = 0 (the
denoiser's output), an endpoint no other row reaches, so it is not used here.

Rows: ours; diffusers driven in float64 (its own update methods `convert_model_output`,
`dpm_solver_first_order_update`, `multistep_dpm_solver_second_order_update`, with float64
sigmas; `step()` itself casts the state to float32, so it cannot agree to float64 round-off);
diffusers' `step()` as shipped (float32 sigmas and state); diffusers with its default
lower_order_final=True (first-order last step below 15 steps, our rule too); k-diffusion
in the VE variables (x_ve = x / alpha, sigma_ve = sigma / alpha) with the grid's last
sigma_ve > 0, so it never takes its first-order step to sigma = 0.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import torch

from course_lib import dpm_solver as dpm
from course_lib import samplers as smp
from course_lib.distributions import GaussianMixture
from course_lib.parameterization import x0_from_score
from course_lib.sde import SDE
from course_lib.utils import append_dims, batch_time

F64 = torch.float64
NFES = (5, 10, 20, 50)
INSTALL = "python -m pip install --target /tmp/ext --no-deps {}; then run with PYTHONPATH=/tmp/ext"


# -- the optional packages ----------------------------------------------------------------------
def load_diffusers():
    """diffusers' DPMSolverMultistepScheduler class, or None with a message."""
    try:
        from diffusers import DPMSolverMultistepScheduler
    except ImportError as err:
        needs = "diffusers huggingface_hub safetensors regex httpx2 httpcore2 anyio h11 sniffio truststore"
        print(f"diffusers: skipped ({err}); install: {INSTALL.format(needs)}")
        return None
    import diffusers
    print(f"diffusers {diffusers.__version__}: {diffusers.__file__}")
    return DPMSolverMultistepScheduler


def _sampling_module_alone(package_dir: str):
    """Execute k_diffusion/sampling.py with a stand-in `k_diffusion.utils` (append_dims only)."""
    package = types.ModuleType("k_diffusion")
    package.__path__ = [package_dir]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = append_dims
    package.utils = utils
    sys.modules.update({"k_diffusion": package, "k_diffusion.utils": utils})
    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{package_dir}/sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_k_diffusion():
    """k-diffusion's sampling module, or None with a message."""
    spec = importlib.util.find_spec("k_diffusion")
    hint = INSTALL.format("k-diffusion torchsde torchdiffeq trampoline")
    if spec is None:
        print(f"k-diffusion: skipped (not importable); install: {hint}")
        return None
    try:
        module, how = importlib.import_module("k_diffusion.sampling"), "package import"
    except ImportError as err:
        for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
            del sys.modules[name]
        try:
            module = _sampling_module_alone(spec.submodule_search_locations[0])
        except ImportError as err2:
            print(f"k-diffusion: skipped ({err}; sampling.py alone: {err2}); install: {hint}")
            return None
        how = f"sampling.py alone; the package import fails: {err}"
    print(f"k-diffusion: {module.__file__} ({how})")
    return module


# -- the model: a mixture under a VP SDE through diffusers' nodes ----------------------------------
def mixture() -> GaussianMixture:
    """4 modes with unequal weights; stds from 0.05 to 0.5, two of them tilted."""
    c, s = math.cos(0.6), math.sin(0.6)
    rot = torch.tensor([[c, -s], [s, c]], dtype=F64)
    diag = [torch.diag(torch.tensor(v, dtype=F64) ** 2) for v in ([0.5, 0.1], [0.05, 0.3], [0.2, 0.2], [0.4, 0.06])]
    covs = torch.stack([rot @ diag[0] @ rot.T, diag[1], diag[2], rot.T @ diag[3] @ rot])
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.2], [0.3, -1.4], [1.8, -0.2]], dtype=F64)
    return GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64), means, covs)


class NodeSDE(SDE):
    """VP SDE with lambda(t) linear from lambda_T at t = T to lambda_eps at t = eps;
    alpha^2 = sigmoid(2 lambda), sigma^2 = sigmoid(-2 lambda), f = lambda' sigma^2 x, g^2 = -2 lambda' sigma^2."""

    def __init__(self, lambda_T: float, lambda_eps: float, eps: float = 1e-3):
        if not lambda_T < lambda_eps:
            raise ValueError(f"lambda_T must be below lambda_eps, got {lambda_T} >= {lambda_eps}")
        self.lambda_T, self.lambda_eps, self.eps = lambda_T, lambda_eps, eps
        self.slope = (lambda_T - lambda_eps) / (self.T - eps)  # lambda'(t) < 0

    def marginal_lambda(self, t):
        return self.lambda_eps + self.slope * (t - self.eps)

    def marginal_log_mean_coeff(self, t):
        lam = self.marginal_lambda(t)
        return -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)

    def marginal_std(self, t):
        lam = self.marginal_lambda(t)
        return torch.exp(-0.5 * torch.logaddexp(torch.zeros_like(lam), 2.0 * lam))

    def inverse_lambda(self, lambda_t):
        return self.eps + (lambda_t - self.lambda_eps) / self.slope

    def drift(self, x, t):
        return append_dims(self.slope * self.marginal_std(batch_time(t, x)) ** 2, x.ndim) * x

    def diffusion(self, t):
        return self.marginal_std(t) * math.sqrt(-2.0 * self.slope)


def node_times(sde: NodeSDE, lams: torch.Tensor) -> torch.Tensor:
    """The times at which lambda(t) takes the values `lams` (T and eps pinned at the ends)."""
    ts = sde.inverse_lambda(lams.to(F64))
    ts[0], ts[-1] = sde.T, sde.eps
    return ts


# -- the three implementations on one grid ------------------------------------------------------------
class Problem:
    """Everything the runs share: SDE, score, prior draws, reference endpoints, scheduler config."""

    def __init__(self, scheduler_cls, n_samples: int = 1000):
        self.scheduler_cls = scheduler_cls
        self.config = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                           solver_order=2, prediction_type="epsilon", algorithm_type="dpmsolver++",
                           solver_type="midpoint", final_sigmas_type="sigma_min", timestep_spacing="linspace")
        self.alphas_cumprod = self._alphas_cumprod()
        lam = self.table_lambda(torch.tensor([len(self.alphas_cumprod) - 1, 0]))
        self.sde = NodeSDE(float(lam[0]), float(lam[1]))
        self.score_fn = mixture().score_fn(self.sde)
        self.x = torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
        self.x_ref = smp.ode_reference(self.score_fn, self.sde, self.x)

    def _alphas_cumprod(self) -> torch.Tensor:
        if self.scheduler_cls is not None:
            return self.scheduler_cls(**self.config).alphas_cumprod.to(F64)
        # the same float32 table as diffusers builds (linear betas), when diffusers is absent
        return torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32), 0).to(F64)

    def table_lambda(self, timesteps: torch.Tensor) -> torch.Tensor:
        """lambda = -log sigma_ve of the table at integer timesteps, sigma_ve = sqrt((1 - a) / a)."""
        a = self.alphas_cumprod[timesteps]
        return -0.5 * torch.log((1.0 - a) / a)

    def diffusers_grid(self, n: int) -> torch.Tensor:
        """Nodes of diffusers' set_timesteps(n) (integer timesteps 999 .. round(999 / n)), then
        timestep 0 (final_sigmas_type="sigma_min"), as times of NodeSDE: (n + 1,)."""
        scheduler = self.scheduler_cls(**self.config)
        scheduler.set_timesteps(n)
        timesteps = torch.cat([scheduler.timesteps, torch.zeros(1, dtype=torch.long)])
        return node_times(self.sde, self.table_lambda(timesteps))

    def logsnr_grid(self, n: int) -> torch.Tensor:
        """course_lib's grid uniform in lambda between the same two ends: (n + 1,)."""
        return dpm.logsnr_grid(self.sde, n, dtype=F64)

    def sigma_ve(self, ts: torch.Tensor) -> torch.Tensor:
        """sigma / alpha = e^{-lambda} at the nodes: the scheduler's `sigmas`."""
        return torch.exp(-self.sde.marginal_lambda(ts))

    # the model in each implementation's parameterization
    def eps(self, x, t):
        """Noise prediction eps = -sigma_t score(x, t)."""
        t = batch_time(t, x)
        return -append_dims(self.sde.marginal_std(t), x.ndim) * self.score_fn(x, t)

    def denoiser_ve(self, y, sigma):
        """k-diffusion's D(y, sigma_ve) = E[x_0 | x_t = alpha_t y] with lambda_t = -log sigma_ve (Tweedie)."""
        t = self.sde.inverse_lambda(-torch.log(sigma))
        alpha, std = self.sde.marginal(t)
        x = append_dims(alpha, y.ndim) * y
        return x0_from_score(x, self.score_fn(x, t), alpha, std)


def ours(p: Problem, ts: torch.Tensor) -> torch.Tensor:
    return dpm.dpm_solver_pp_2m(p.score_fn, p.sde, p.x, ts)


def diffusers_float64(p: Problem, ts: torch.Tensor, lower_order_final: bool) -> torch.Tensor:
    """diffusers' update methods in float64, with step()'s choice of order for solver_order=2
    and final_sigmas_type="sigma_min": first order on the first step, and on the last one
    when lower_order_final and fewer than 15 steps."""
    n = len(ts) - 1
    scheduler = p.scheduler_cls(**p.config, lower_order_final=lower_order_final)
    scheduler.set_timesteps(n)
    scheduler.sigmas = p.sigma_ve(ts)  # float64 nodes (set_timesteps stores float32)
    x, x0_prev = p.x.clone(), None
    for k in range(n):
        scheduler._step_index = k  # the counter step() advances; the update methods read it
        x0 = scheduler.convert_model_output(p.eps(x, ts[k]), sample=x)
        if k == 0 or (k == n - 1 and lower_order_final and n < 15):
            x = scheduler.dpm_solver_first_order_update(x0, sample=x)
        else:
            x = scheduler.multistep_dpm_solver_second_order_update([x0_prev, x0], sample=x)
        x0_prev = x0
    return x


def diffusers_step(p: Problem, ts: torch.Tensor, lower_order_final: bool) -> torch.Tensor:
    """diffusers' step() as shipped (float32 sigmas; step() casts the state to float32)."""
    scheduler = p.scheduler_cls(**p.config, lower_order_final=lower_order_final)
    scheduler.set_timesteps(len(ts) - 1)
    scheduler.sigmas = p.sigma_ve(ts).float()
    x = p.x.clone()
    for k, timestep in enumerate(scheduler.timesteps):
        x = scheduler.step(p.eps(x, ts[k]), timestep, x).prev_sample
    return x


def k_diffusion(p: Problem, ts: torch.Tensor, sampling) -> torch.Tensor:
    """k-diffusion's sample_dpmpp_2m in the VE variables y = x / alpha, back to x at the end."""
    alpha = p.sde.marginal_log_mean_coeff(ts).exp()
    y = sampling.sample_dpmpp_2m(p.denoiser_ve, p.x / alpha[0], p.sigma_ve(ts), disable=True)
    return alpha[-1] * y


# -- tables -----------------------------------------------------------------------------------------
def rms_error(x: torch.Tensor, x_ref: torch.Tensor) -> float:
    """Root mean square over samples of the endpoint distance ||x - x_ref||."""
    return float((x - x_ref).norm(dim=1).pow(2).mean().sqrt())


def rel_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """max |x - y| / max |y| over all samples and coordinates."""
    return float((x - y).abs().max() / y.abs().max())


def check_nodes(p: Problem) -> None:
    """Our diffusers-grid nodes against the float32 sigmas that set_timesteps stores itself."""
    worst = 0.0
    for n in NFES:
        scheduler = p.scheduler_cls(**p.config)
        scheduler.set_timesteps(n)
        worst = max(worst, rel_diff(p.sigma_ve(p.diffusers_grid(n)), scheduler.sigmas.to(F64)))
    print(f"diffusers-grid nodes vs set_timesteps' own float32 sigmas: max rel. diff {worst:.1e} (float32 ulp 6e-8)")


def cell(x, ours_x, x_ref, width: int = 24) -> str:
    """'error [relative difference to ours]', or only the error when `ours_x` is None."""
    text = f"{rms_error(x, x_ref):8.2e}" + ("" if ours_x is None else f" [{rel_diff(x, ours_x):8.1e}]")
    return text.rjust(width)


def run_grid(p: Problem, name: str, grid, sampling) -> None:
    """One table: every implementation at every NFE on the nodes `grid(n)`."""
    print(f"\ngrid: {name}")
    print(f"{'NFE':>4} | {'ours':>8} | {'diffusers f64':>24} | {'diffusers step() f32':>24} | "
          f"{'diffusers default':>17} | {'k-diffusion':>24}")
    have_diffusers = p.scheduler_cls is not None
    for n in NFES:
        ts = grid(n)
        x = ours(p, ts)
        match = n < 15  # our rule (dpm_solver_pp_2m): first-order last step below 15 steps
        cells = [f"{n:>4}", cell(x, None, p.x_ref, 8)]
        for run in (diffusers_float64, diffusers_step):
            cells.append(cell(run(p, ts, match), x, p.x_ref) if have_diffusers else "skipped".rjust(24))
        cells.append(cell(diffusers_float64(p, ts, True), None, p.x_ref, 17) if have_diffusers else "skipped".rjust(17))
        cells.append(cell(k_diffusion(p, ts, sampling), x, p.x_ref) if sampling is not None else "skipped".rjust(24))
        print(" | ".join(cells))


def main() -> None:
    scheduler_cls, sampling = load_diffusers(), load_k_diffusion()
    p = Problem(scheduler_cls)
    print(f"model: 2-D mixture of 4 Gaussians, exact score, {len(p.x)} prior draws, float64; lambda from "
          f"{p.sde.lambda_T:.4f} (timestep 999) to {p.sde.lambda_eps:.4f} (timestep 0)")
    print("cells: RMS endpoint error against DOP853 (tol 1e-10) [max |x - ours| / max |ours|]")
    print("diffusers f64 and step(): lower_order_final = (NFE < 15), our rule; diffusers default: "
          "lower_order_final=True (first-order last step below 15 steps); k-diffusion: second order to the end")
    if scheduler_cls is not None:
        check_nodes(p)
        run_grid(p, "diffusers' linspace timesteps, then timestep 0", p.diffusers_grid, sampling)
    run_grid(p, "uniform in lambda (course_lib.dpm_solver.logsnr_grid)", p.logsnr_grid, sampling)


if __name__ == "__main__":
    main()
