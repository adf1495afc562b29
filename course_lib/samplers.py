"""Reverse-time samplers: every one is `sampler(score_fn, sde, x, ts, *, generator=None,
callback=None) -> x`, with `score_fn(x, t)` the (model) score, `x: (B, *D)` drawn from the
prior at `ts[0]`, and `ts` a strictly decreasing time grid in `[sde.eps, sde.T]`.

`callback`, when given, receives a dict after every step with at least
`{"i": step index, "t": time reached, "x": state, "nfe": model evaluations so far}`.

Stochastic samplers (Euler-Maruyama, reverse diffusion, predictor-corrector) add no noise on
their last step: they return the mean of the final transition, as score_sde does, so the
output carries no fresh noise of std g(eps) at t = eps. The probability-flow ODE solvers
(Euler, Heun, RK45) and DDIM are deterministic; they accept `generator` only to share the
signature. Grids end at `sde.eps > 0`, so every step, the last one included, evaluates the
score at a time where the marginal std is positive.

The noise schedule (alpha, sigma, lambda, g) is read once per grid in float64 (`levels`), so
a step costs only the model calls and a few fused passes over `x` with scalar coefficients.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .sde import SDE, probability_flow_drift
from .utils import append_dims, batch_time, check_positive, gaussian_like

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class NFECounter:
    """Wrap a score function and count its evaluations (one per call, whatever the batch)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.score_fn(x, t)


def check_grid(sde: SDE, ts: Tensor, min_steps: int = 1) -> None:
    """ValueError unless `ts` is a 1-D, strictly decreasing grid in [eps, T] with at least
    `min_steps` steps (len(ts) - 1), e.g. a solver's order."""
    if not torch.is_tensor(ts) or ts.ndim != 1:
        raise ValueError("ts must be a 1-D tensor of times")
    if len(ts) - 1 < min_steps:
        raise ValueError(f"ts must hold at least {min_steps} steps ({min_steps + 1} times), got {len(ts) - 1}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("ts must be strictly decreasing (from T towards eps)")
    sde.check_time(ts, "ts")


# -- the noise schedule at the grid times, and the model's predictions there -------------------
class Level(NamedTuple):
    """The noise schedule at one time, as float64 numbers."""

    t: float  # time
    alpha: float  # mean coefficient alpha(t)
    sigma: float  # std sigma(t)
    lam: float  # half log-SNR lambda(t) = log alpha(t) - log sigma(t)
    f: float  # drift coefficient: the drift is linear here, f(x, t) = f(t) x (Gaussian kernels)
    g: float  # diffusion coefficient g(t) of the forward SDE


def levels(sde: SDE, ts: Tensor) -> list[Level]:
    """Read alpha, sigma, lambda, f and g at every time of `ts: (N,)` in float64 (once per grid)."""
    t64 = ts.detach().to(device="cpu", dtype=torch.float64)
    alpha = sde.marginal_log_mean_coeff(t64).exp()
    sigma, lam, g = sde.marginal_std(t64), sde.marginal_lambda(t64), sde.diffusion(t64)
    f = sde.drift(torch.ones_like(t64).unsqueeze(1), t64).squeeze(1)  # f(t) = f(1, t)
    columns = (t64, alpha, sigma, lam, f, g)
    return [Level(*v) for v in zip(*(c.tolist() for c in columns))]


def time_batch(level: Level, x: Tensor) -> Tensor:
    """The level's time as the `(B,)` tensor a score function takes, for `x: (B, *D)`."""
    return torch.full((x.shape[0],), level.t, device=x.device, dtype=x.dtype)


def combine(*terms: tuple[float, Tensor]) -> Tensor:
    """sum_i c_i v_i for (c_i, v_i) pairs: one fresh tensor, one pass over memory per term."""
    (c, v), rest = terms[0], terms[1:]
    out = c * v
    for c, v in rest:
        out.add_(v, alpha=c)
    return out


def noise_prediction(score_fn: ScoreFn, x: Tensor, s: Level) -> Tensor:
    """eps_theta(x_s, s) = -sigma_s * score(x_s, s): (B, *D), a fresh tensor."""
    return -s.sigma * score_fn(x, time_batch(s, x))


def data_prediction(score_fn: ScoreFn, x: Tensor, s: Level) -> Tensor:
    """x0_theta(x_s, s) = (x_s + sigma_s^2 score) / alpha_s (Tweedie): (B, *D), a fresh tensor."""
    score = score_fn(x, time_batch(s, x))
    return torch.add(x, score, alpha=s.sigma**2).div_(s.alpha)


def _add_noise(mean: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    """mean + std z with z ~ N(0, I): (B, *D)."""
    z = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return torch.add(mean, z, alpha=std)


def _emit(callback, i: int, t: Tensor, x: Tensor, nfe: int, **extra) -> None:
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "nfe": nfe, **extra})


# -- reverse-SDE predictors: step(score_fn, sde, x, t, s, *, generator) -> (x_s, mean of x_s) --
# t and s are the schedule (`levels`) at the current time and the next, earlier one.
def euler_maruyama_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: Level, s: Level, *, generator=None):
    """Euler-Maruyama from t to s < t on the reverse SDE (Song et al., 2021, eq. 6), drift f(t) x:
    x_s = x_t + [f(t) x_t - g(t)^2 score(x_t, t)] (s - t) + g(t) sqrt(t - s) z.
    `x: (B, *D)`; returns (x_s, its mean)."""
    dt = s.t - t.t
    x_mean = combine((1.0 + t.f * dt, x), (-t.g**2 * dt, score_fn(x, time_batch(t, x))))
    return _add_noise(x_mean, t.g * math.sqrt(-dt), generator), x_mean


def forward_increments(t: Level, s: Level) -> tuple[float, float]:
    """(f_i, G_i) of the exact forward transition from s to t > s,
    x_t = (1 + f_i) x_s + G_i z, for any SDE with a Gaussian kernel:
    f_i = alpha_t / alpha_s - 1 and G_i^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2
    = sigma_t^2 (1 - e^{-2h}), h = lambda_s - lambda_t (written with expm1 for accuracy).
    VE gives G_i^2 = sigma_t^2 - sigma_s^2 (NCSN), VP gives f_i = sqrt(1 - beta_i) - 1 and
    G_i^2 = beta_i (DDPM), the discretizations of score_sde."""
    h = s.lam - t.lam
    return t.alpha / s.alpha - 1.0, t.sigma * math.sqrt(-math.expm1(-2.0 * h))


def reverse_diffusion_step(score_fn: ScoreFn, sde: SDE, x: Tensor, t: Level, s: Level, *, generator=None):
    """Reverse-diffusion predictor (Song et al., 2021, App. E) from t to s < t, the reverse of
    the forward transition x_t = (1 + f_i) x_s + G_i z (see `forward_increments`):
    x_s = x_t - f_i x_t + G_i^2 score(x_t, t) + G_i z. Returns (x_s, its mean)."""
    f, g = forward_increments(t, s)
    x_mean = combine((1.0 - f, x), (g**2, score_fn(x, time_batch(t, x))))
    return _add_noise(x_mean, g, generator), x_mean


def langevin_corrector(score_fn: ScoreFn, sde: SDE, x: Tensor, t: Tensor | float, *, snr: float,
                       n_steps: int = 1, alpha: Tensor | float = 1.0, generator=None):
    """`n_steps` Langevin moves targeting p_t (Song et al., 2021, Alg. 4/5).

    Song's step is eps = 2 alpha (snr ||z|| / ||score||)^2 with x <- x + eps score + sqrt(2 eps) z,
    the same move as `langevin.langevin_dynamics` with step_size = 2 eps. alpha = 1 for VE and
    alpha_i = 1 - beta_i for VP (`predictor_corrector` passes alpha_t^2 / alpha_s^2, both at
    once), a float or one per sample. The norms are averaged over the batch as in score_sde, so
    one small score norm cannot blow up a step. `x: (B, *D)`, `t: (B,)`; returns (x, its mean
    after the last move)."""
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    check_positive("snr", snr)
    t = batch_time(t, x)
    if torch.is_tensor(alpha):
        alpha = append_dims(batch_time(alpha, x), x.ndim)
    for _ in range(n_steps):
        score = score_fn(x, t)
        z = gaussian_like(x, generator=generator)
        score_norm = score.flatten(1).norm(dim=1).mean().clamp_min(torch.finfo(x.dtype).tiny)
        noise_norm = z.flatten(1).norm(dim=1).mean()
        eps = 2.0 * alpha * (snr * noise_norm / score_norm) ** 2  # Song's step: () or (B, 1, ..)
        x_mean = torch.addcmul(x, eps, score)  # x + eps score
        x = z.mul_(torch.sqrt(2.0 * eps)).add_(x_mean)  # x_mean + sqrt(2 eps) z
    return x, x_mean


def predictor_corrector(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *,
                        predictor=reverse_diffusion_step, snr: float = 0.16, n_corrector_steps: int = 1,
                        generator=None, callback=None, project=None) -> Tensor:
    """Predictor-corrector sampling (Song et al., 2021), corrector first as in score_sde's
    `pc_sampler` code: at each t_i, `n_corrector_steps` Langevin moves at t_i, then one
    `predictor` step (e.g. `reverse_diffusion_step`, `euler_maruyama_step`) to t_{i+1}; 0
    corrector steps is the plain predictor. The paper's Algorithm 1 writes the predictor first
    and corrects at the time it reaches; both alternate the same moves and differ only at the
    ends (here the prior sample at T is corrected, and no corrector runs at the last time).
    The last step returns the predictor's mean (no noise injected at t = eps).
    `project(x, t) -> x`, if given, is applied after the correctors and after every predictor
    step, at the time x has reached (`t: (B,)`; inpainting's replacement of known coordinates
    uses it). NFE = (len(ts) - 1) (1 + n_corrector_steps)."""
    check_grid(sde, ts)
    if not isinstance(n_corrector_steps, int) or n_corrector_steps < 0:
        raise ValueError(f"n_corrector_steps must be an integer >= 0, got {n_corrector_steps!r}")
    score = NFECounter(score_fn)
    grid = levels(sde, ts)
    n = len(grid) - 1
    for i, (t, s) in enumerate(zip(grid, grid[1:])):
        if n_corrector_steps > 0:
            x, _ = langevin_corrector(score, sde, x, time_batch(t, x), snr=snr, n_steps=n_corrector_steps,
                                      alpha=(t.alpha / s.alpha) ** 2, generator=generator)
            x = x if project is None else project(x, time_batch(t, x))
        x, x_mean = predictor(score, sde, x, t, s, generator=generator)
        if i == n - 1:
            x = x_mean
        x = x if project is None else project(x, time_batch(s, x))
        _emit(callback, i, ts[i + 1], x, score.nfe, x_mean=x_mean)
    return x


def euler_maruyama(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """Euler-Maruyama on the reverse SDE (`euler_maruyama_step` on each step of ts); NFE = len(ts) - 1."""
    return predictor_corrector(score_fn, sde, x, ts, predictor=euler_maruyama_step, n_corrector_steps=0,
                               generator=generator, callback=callback)


def reverse_diffusion_predictor(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, generator=None,
                                callback=None) -> Tensor:
    """score_sde's reverse-diffusion sampler (`reverse_diffusion_step` on each step); NFE = len(ts) - 1."""
    return predictor_corrector(score_fn, sde, x, ts, predictor=reverse_diffusion_step, n_corrector_steps=0,
                               generator=generator, callback=callback)


# -- probability-flow ODE: dx/dt = v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2 -------------------
def _velocity(score_fn: ScoreFn, x: Tensor, t: Level) -> Tensor:
    """v(x, t) = f(t) x - g(t)^2 score(x, t) / 2 of the probability-flow ODE (Song et al., 2021,
    eq. 13): (B, *D)."""
    return combine((t.f, x), (-0.5 * t.g**2, score_fn(x, time_batch(t, x))))


def euler_ode(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """Explicit Euler on the probability-flow ODE (Song et al., 2021, eq. 13), order 1:
    x_s = x_t + (s - t) v(x_t, t). NFE = len(ts) - 1."""
    check_grid(sde, ts)
    score = NFECounter(score_fn)
    grid = levels(sde, ts)
    for i, (t, s) in enumerate(zip(grid, grid[1:])):
        h = s.t - t.t  # x_s = (1 + f(t) h) x_t - g(t)^2 h score(x_t, t) / 2
        x = combine((1.0 + t.f * h, x), (-0.5 * t.g**2 * h, score(x, time_batch(t, x))))
        _emit(callback, i, ts[i + 1], x, score.nfe)
    return x


def heun_ode(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """Heun's method (explicit trapezoid, Karras et al., 2022, Alg. 1) on the probability-flow
    ODE, order 2: x' = x_t + h v(x_t, t), x_s = x_t + h [v(x_t, t) + v(x', s)] / 2, h = s - t.
    The grid ends at eps > 0, so the last step keeps its correction (EDM drops it only because
    its grid ends at sigma = 0). NFE = 2 (len(ts) - 1)."""
    check_grid(sde, ts)
    score = NFECounter(score_fn)
    grid = levels(sde, ts)
    for i, (t, s) in enumerate(zip(grid, grid[1:])):
        h = s.t - t.t
        d = _velocity(score, x, t)
        x_euler = torch.add(x, d, alpha=h)
        x = torch.add(x, d, alpha=0.5 * h).add_(_velocity(score, x_euler, s), alpha=0.5 * h)
        _emit(callback, i, ts[i + 1], x, score.nfe)
    return x


def ddim_step(score_fn: ScoreFn, x: Tensor, t: Level, s: Level) -> tuple[Tensor, Tensor]:
    """Deterministic DDIM (eta = 0) from t to s < t: DPM-Solver-1 (Lu et al., 2022, eq. 3.7)
    in the data-prediction form of DPM-Solver++. With h = lambda_s - lambda_t,
    x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 x0_pred, phi_1 = expm1(-h),
    x0_pred the Tweedie denoiser from the score. Returns (x_s, x0_pred)."""
    x0_pred = data_prediction(score_fn, x, t)
    h = s.lam - t.lam
    phi_1 = math.expm1(-h)
    return combine((s.sigma / t.sigma, x), (-s.alpha * phi_1, x0_pred)), x0_pred


def ddim(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """DDIM (Song, Meng & Ermon, 2021) with eta = 0, i.e. DPM-Solver-1; exact for VE too
    (alpha = 1). NFE = len(ts) - 1; the callback also gets "x0_pred"."""
    check_grid(sde, ts)
    score = NFECounter(score_fn)
    grid = levels(sde, ts)
    for i, (t, s) in enumerate(zip(grid, grid[1:])):
        x, x0_pred = ddim_step(score, x, t, s)
        _emit(callback, i, ts[i + 1], x, score.nfe, x0_pred=x0_pred)
    return x


# -- adaptive solver through scipy ------------------------------------------------------------
def ode_rk45(score_fn: ScoreFn, sde: SDE, x: Tensor, *, t_start: float | None = None, t_end: float | None = None,
             rtol: float = 1e-5, atol: float = 1e-5, method: str = "RK45") -> tuple[Tensor, int]:
    """Solve the probability-flow ODE from t_start (default T) to t_end (default eps; t_end > t_start
    encodes) with scipy's `solve_ivp`, the whole batch flattened into one state as in score_sde.
    The state crosses to float64 numpy at the solver boundary (scipy works on numpy arrays);
    the score runs in x's dtype and device. `method` is solve_ivp's name ("RK45", "DOP853", ...).
    Returns (x at t_end: (B, *D), NFE used by the solver)."""
    t_start = sde.T if t_start is None else float(t_start)
    t_end = sde.eps if t_end is None else float(t_end)
    sde.check_time(t_start, "t_start")
    sde.check_time(t_end, "t_end")
    if t_start == t_end:
        raise ValueError(f"t_start and t_end must differ, got both {t_start}")
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    shape = x.shape

    @torch.no_grad()
    def velocity(t: float, y: Tensor) -> Tensor:
        xt = y.reshape(shape)
        return probability_flow_drift(sde, score_fn, xt, batch_time(t, xt)).reshape(-1)

    y_end, nfe = solve_ivp_torch(velocity, x.detach().reshape(-1), (t_start, t_end),
                                 method=method, rtol=rtol, atol=atol)
    return y_end.reshape(shape), nfe


def solve_ivp_torch(rhs, y0: Tensor, t_span: tuple[float, float], *, method: str, rtol: float,
                    atol: float) -> tuple[Tensor, int]:
    """Solve dy/dt = rhs(t, y) with scipy's `solve_ivp` for a flat torch state y0: (N,).

    `rhs(t: float, y: Tensor) -> Tensor` runs in y0's dtype and device; the state crosses to
    float64 numpy only at the solver boundary (scipy works on numpy arrays). Returns
    (y at t_span[1] in y0's dtype and device, the solver's number of rhs evaluations)."""
    dtype, device = y0.dtype, y0.device

    def numpy_rhs(t, y):
        return rhs(t, torch.from_numpy(y).to(dtype).to(device)).cpu().to(torch.float64).numpy()

    sol = solve_ivp(numpy_rhs, t_span, y0.cpu().to(torch.float64).numpy(), method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).to(dtype).to(device), int(sol.nfev)


def ode_reference(score_fn: ScoreFn, sde: SDE, x: Tensor, t_start: float | None = None,
                  t_end: float | None = None, *, tol: float = 1e-10) -> Tensor:
    """A tight-tolerance probability-flow solution for benchmarks: float64 state and score,
    scipy's 8th-order DOP853 with rtol = atol = `tol`. Returns x at t_end in float64."""
    x, _ = ode_rk45(score_fn, sde, x.to(torch.float64), t_start=t_start, t_end=t_end,
                    rtol=tol, atol=tol, method="DOP853")
    return x
