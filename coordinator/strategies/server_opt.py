"""Server optimizers as pure functions of one entry: tensors in, new tensors out.

The pseudo-gradient of a round is the example-weighted mean delta d = sum_i n_i d_i / sum_i n_i
(Reddi et al. write the plain mean; the two agree when shards are equal). Its sign is that of an
update (local - global), so every step *adds*. Nothing here mutates its inputs: a strategy
replaces each state entry by the returned one, so at most one entry's worth of scratch is live.
"""

from __future__ import annotations

import torch


def momentum(previous: torch.Tensor | None, delta: torch.Tensor, beta: float) -> torch.Tensor:
    """v_t = beta * v_{t-1} + d_t (Hsu et al. 2019), with v_0 = d_1."""
    return delta.clone() if previous is None else previous * beta + delta


def sgd_step(x: torch.Tensor, direction: torch.Tensor, lr: float) -> torch.Tensor:
    """x_{t+1} = x_t + lr * direction."""
    return x + direction * lr


def first_moment(m: torch.Tensor, delta: torch.Tensor, beta1: float) -> torch.Tensor:
    """m_t = beta1 * m_{t-1} + (1 - beta1) * d_t."""
    return m * beta1 + delta * (1.0 - beta1)


def adagrad_moment(v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """v_t = v_{t-1} + d_t^2."""
    return v + delta * delta


def adam_moment(v: torch.Tensor, delta: torch.Tensor, beta2: float) -> torch.Tensor:
    """v_t = beta2 * v_{t-1} + (1 - beta2) * d_t^2."""
    return v * beta2 + delta * delta * (1.0 - beta2)


def yogi_moment(v: torch.Tensor, delta: torch.Tensor, beta2: float) -> torch.Tensor:
    """v_t = v_{t-1} - (1 - beta2) * d_t^2 * sign(v_{t-1} - d_t^2)."""
    squared = delta * delta
    return v - squared * torch.sign(v - squared) * (1.0 - beta2)


def adaptive_step(x: torch.Tensor, m: torch.Tensor, v: torch.Tensor, eta: float, tau: float) -> torch.Tensor:
    """x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)."""
    return x + m / (v.sqrt() + tau) * eta
