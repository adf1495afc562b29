"""Langevin dynamics and annealed Langevin dynamics.

Convention (one for the whole library, as in Song & Ermon, 2019, Alg. 1): a Langevin move with
step size eta is

    x_{k+1} = x_k + (eta / 2) grad log p(x_k) + sqrt(eta) z_k,   z_k ~ N(0, I),

the Euler-Maruyama step of dx = (1/2) grad log p(x) dt + dw, whose stationary law is p.
The other common form, x + eps grad log p + sqrt(2 eps) z, is the same move with eta = 2 eps.
Without the Metropolis correction (unadjusted Langevin, ULA) the chain's stationary law is
close to p, with a bias that vanishes as eta -> 0: on N(0, s^2) it is N(0, s^2 / (1 - eta / (4 s^2)))
for 0 < eta < 4 s^2. With it (MALA, Roberts & Tweedie, 1996) p is exactly invariant for every eta.

Shapes: `x: (B, *D)`; `score_fn(x) -> (B, *D)`; a noise-conditional `score_fn(x, sigma)`
takes `sigma: (B,)`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .utils import append_dims, batch_time, check_positive, gaussian_like


def _check_steps(name: str, n: int) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return n


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and temperature >= 0):  # NaN fails too
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")


def langevin_step(score: Tensor, x: Tensor, step_size: float, *, temperature: float = 1.0,
                  generator=None) -> Tensor:
    """One move x + (eta / 2) score + sqrt(eta * temperature) z with eta = step_size.
    temperature = 1 targets p; temperature = 0 is gradient ascent on log p."""
    step_size = check_positive("step_size", step_size)
    _check_temperature(temperature)
    z = gaussian_like(x, generator=generator)
    return x + 0.5 * step_size * score + (step_size * temperature) ** 0.5 * z


def langevin_dynamics(score_fn: Callable[[Tensor], Tensor], x: Tensor, *, step_size: float, n_steps: int,
                      temperature: float = 1.0, generator=None, callback=None) -> Tensor:
    """Unadjusted Langevin algorithm: `n_steps` moves x <- x + (eta/2) s(x) + sqrt(eta) z
    (eta = step_size) from the initial points x: (B, *D). `temperature` scales the noise
    variance (0: noiseless gradient ascent, which collapses onto a mode of p).
    callback gets {"i", "x"} after each move."""
    step_size = check_positive("step_size", step_size)
    _check_steps("n_steps", n_steps)
    _check_temperature(temperature)
    for i in range(n_steps):
        x = langevin_step(score_fn(x), x, step_size, temperature=temperature, generator=generator)
        if callback is not None:
            callback({"i": i, "x": x})
    return x


def mala_log_accept_ratio(x: Tensor, y: Tensor, log_p_x: Tensor, log_p_y: Tensor, score_x: Tensor,
                          score_y: Tensor, step_size: float) -> Tensor:
    """log [p(y) q(x | y) / (p(x) q(y | x))]: (B,), the Metropolis-Hastings log ratio for the
    Langevin proposal q(y | x) = N(y; x + (eta/2) s(x), eta I), with x, y, score_x, score_y:
    (B, *D), log_p_x, log_p_y: (B,) (log p up to one additive constant) and eta = step_size."""
    step_size = check_positive("step_size", step_size)

    def log_q(to, frm, score_frm):  # log q(to | frm) up to the constant that cancels
        return -(to - frm - 0.5 * step_size * score_frm).flatten(1).square().sum(1) / (2 * step_size)

    return log_p_y - log_p_x + log_q(x, y, score_y) - log_q(y, x, score_x)


def mala(log_prob_fn: Callable[[Tensor], Tensor], score_fn: Callable[[Tensor], Tensor], x: Tensor, *,
         step_size: float, n_steps: int, generator=None, callback=None) -> Tensor:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996): propose the Langevin
    move y = x + (eta/2) s(x) + sqrt(eta) z (eta = step_size), accept it with probability
    min(1, p(y) q(x | y) / (p(x) q(y | x))), else stay at x. p is exactly invariant for every
    eta > 0. log_prob_fn(x): (B,), log p up to a constant; score_fn(x): (B, *D); x: (B, *D).
    callback gets {"i", "x", "accepted"} after each move, accepted: (B,) bool."""
    step_size = check_positive("step_size", step_size)
    _check_steps("n_steps", n_steps)
    log_p, score = log_prob_fn(x), score_fn(x)
    for i in range(n_steps):
        y = langevin_step(score, x, step_size, generator=generator)
        log_p_y, score_y = log_prob_fn(y), score_fn(y)
        log_ratio = mala_log_accept_ratio(x, y, log_p, log_p_y, score, score_y, step_size)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        accepted = u.log() < log_ratio  # a NaN ratio (a proposal that overflowed) is rejected
        keep_y = append_dims(accepted, x.ndim)
        x, score = torch.where(keep_y, y, x), torch.where(keep_y, score_y, score)
        log_p = torch.where(accepted, log_p_y, log_p)
        if callback is not None:
            callback({"i": i, "x": x, "accepted": accepted})
    return x


def annealed_langevin(score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigmas: Tensor, *,
                      eps: float = 2e-5, n_steps_each: int = 100, final_denoise: bool = True,
                      generator=None, callback=None) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon, 2019, Alg. 1).

    For each noise level sigma_i of the decreasing ladder `sigmas: (L,)`, `n_steps_each`
    Langevin moves on p_{sigma_i} with eta_i = eps sigma_i^2 / sigma_L^2. With `final_denoise`,
    one last Tweedie step x + sigma_L^2 s(x, sigma_L) returns E[x_0 | x] (Jolicoeur-Martineau
    et al., 2021) instead of a sample still carrying noise of std sigma_L.
    score_fn(x, sigma) with sigma: (B,). callback gets {"i", "sigma", "x"} after each level."""
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1 or len(sigmas) < 1:
        raise ValueError("sigmas must be a non-empty 1-D tensor of noise levels")
    if not bool((sigmas > 0).all()) or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be positive and strictly decreasing")
    eps = check_positive("eps", eps)
    _check_steps("n_steps_each", n_steps_each)
    sigma_last = sigmas[-1]
    for i, sigma in enumerate(sigmas):
        sigma_b = batch_time(sigma, x)
        step_size = eps * float(sigma / sigma_last) ** 2
        for _ in range(n_steps_each):
            x = langevin_step(score_fn(x, sigma_b), x, step_size, generator=generator)
        if callback is not None:
            callback({"i": i, "sigma": sigma, "x": x})
    if final_denoise:
        sigma_b = batch_time(sigma_last, x)
        x = x + append_dims(sigma_b.square(), x.ndim) * score_fn(x, sigma_b)
    return x
