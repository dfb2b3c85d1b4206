"""Linear strategies: FedProx, and server optimizers on FedAvg's pseudo-gradient (FedAvgM, FedOpt).

All of them stream: each reply is folded into one running, example-weighted sum and let go, so a
round needs memory for that sum plus the optimizer's state (one model for FedAvgM, two for the
adaptive ones), however many workers answer. The optimizer acts on the parameters only.
Normalisation buffers are statistics, not weights, and have no gradient: momentum or Adam's
1/sqrt(v) scaling would push a running variance anywhere (negative included), so they move by
FedAvg's example-weighted mean, integer counters (num_batches_tracked) by its rounded mean.
A strategy sees a state dict, not the module, so buffers are told by torch's own names for them
(`BUFFER_NAMES`, the last dotted component: every BatchNorm, SyncBatchNorm and InstanceNorm
registers exactly these): no job or task has to pass a list, and a checkpoint needs none. A model
with other float buffers names them in a subclass's `buffer_names`. A round without replies
leaves the model and the optimizer's state unchanged.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch

from fedmq.coordinator.strategies import server_opt
from fedmq.coordinator.strategies.state import KIND, check_fits, check_kind, flatten, tensors_under
from fedmq.coordinator.strategies.tensors import compute_dtype, sq_norm
from fedmq.coordinator.strategy import Failure, FedAvg, RunningSum, StrategyMetrics, TrainOptions
from fedmq.protocol.errors import StrategyError
from fedmq.protocol.messages import TrainConfig, Weights


def _check(name: str, value: float, low: float, high: float, *, closed_high: bool = False) -> None:
    inside = low <= value <= high if closed_high else low <= value < high
    if not inside:
        bracket = "]" if closed_high else ")"
        raise StrategyError(f"option {name}={value} is out of range; it must lie in [{low}, {high}{bracket}")


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg whose workers add a proximal term mu/2 ||w - w_t||^2.

    Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020. Each worker minimises F_k(w) + mu/2 * ||w - w_t||^2, which keeps its local weights near the
    global ones; the server aggregates exactly like FedAvg, w_{t+1} = w_t + sum_k n_k d_k / n.
    `mu` travels to the workers as the train option "proximal_mu" (worker.training applies it).
    The paper tunes mu in {0.001, 0.01, 0.1, 1}; 0.01 is the default here. Streams.
    """

    def __init__(self, *, mu: float = 0.01) -> None:
        super().__init__()
        _check("mu", mu, 0.0, float("inf"))
        self.mu = mu

    def train_options(self) -> TrainOptions:
        return {"proximal_mu": self.mu}


# The state-dict names torch's normalisation layers give their running statistics.
BUFFER_NAMES = frozenset({"running_mean", "running_var", "num_batches_tracked"})


class _ServerOptimizer(RunningSum):
    """FedAvg's streaming sum, then a server step on the mean delta of the parameters (subclasses:
    `_step`); buffers move by the plain weighted mean (module docstring)."""

    kind = ""  # the registry name, recorded in state_dict
    buffer_names: ClassVar[frozenset[str]] = BUFFER_NAMES  # last name components that are buffers

    def __init__(self) -> None:
        super().__init__()
        self._metrics: StrategyMetrics = {}

    def end_round(self, failures: Sequence[Failure]) -> Weights:
        total, self._total = self._total, None
        if total is None or self._examples <= 0:
            self._metrics = {"pseudo_gradient_norm": 0.0}
            return {name: t.clone() for name, t in self._weights.items()}
        self._check_state(self._weights)
        new: Weights = {}
        for name, t in self._weights.items():
            mean = total.pop(name).div_(self._examples)  # the entry's sum becomes its mean in place
            if self.is_parameter(name, t):
                step = self._step(name, t.to(compute_dtype(t)), mean.to(compute_dtype(t)))
                new[name] = step.to(t.dtype)
                total[name] = mean  # kept for the norm below, in the sum's own memory
            elif t.is_floating_point():  # a running statistic: FedAvg's weighted mean
                new[name] = (t.to(compute_dtype(t)) + mean.to(compute_dtype(t))).to(t.dtype)
            else:
                new[name] = t + mean.round().to(t.dtype)
        self._metrics = {"pseudo_gradient_norm": sq_norm(total) ** 0.5}  # over the parameters only
        return new

    def is_parameter(self, name: str, t: torch.Tensor) -> bool:
        """Whether the server optimizer steps this entry: floating, and not a buffer by name."""
        return t.is_floating_point() and name.rpartition(".")[2] not in self.buffer_names

    def parameters_of(self, weights: Weights) -> Weights:
        """The entries the optimizer steps, hence those its per-entry state must cover."""
        return {name: t for name, t in weights.items() if self.is_parameter(name, t)}

    def metrics(self) -> StrategyMetrics:
        return dict(self._metrics)

    @abstractmethod
    def _step(self, name: str, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x after one server step on this entry, given its mean delta."""

    def _check_state(self, weights: Weights) -> None:
        """Called before a step: a restored state must fit the model it is applied to."""


class FedAvgM(_ServerOptimizer):
    """FedAvgM (Hsu et al. 2019): FedAvg's mean delta as the gradient of server SGD with momentum.

    Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification", 2019:
    v_t = beta * v_{t-1} + d_t (v_1 = d_1);  w_{t+1} = w_t + server_lr * v_t, where d_t is
    FedAvg's example-weighted mean delta. With momentum=0 and server_lr=1 it is FedAvg. Defaults:
    server_lr=1.0, momentum=0.9 (the paper's most used beta). State: v, one model. Streams.
    """

    kind = "fedavgm"

    def __init__(self, *, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        _check("server_lr", server_lr, 0.0, float("inf"))
        _check("momentum", momentum, 0.0, 1.0)
        self.server_lr, self.momentum = server_lr, momentum
        self._velocity: Weights = {}

    def _step(self, name: str, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        v = server_opt.momentum(self._velocity.get(name), delta, self.momentum)
        self._velocity[name] = v
        return server_opt.sgd_step(x, v, self.server_lr)

    def _check_state(self, weights: Weights) -> None:
        if self._velocity:
            check_fits(self.kind, self._velocity, self.parameters_of(weights))

    def state_dict(self) -> dict[str, Any]:
        if not self._velocity:
            return {}
        return {KIND: self.kind, **flatten("velocity", self._velocity)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._velocity = tensors_under(state, "velocity") if check_kind(state, self.kind) else {}


class _Adaptive(_ServerOptimizer):
    """Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2 (no bias correction):

        m_t = beta1 * m_{t-1} + (1 - beta1) * d_t
        v_t = <FedAdagrad | FedAdam | FedYogi rule>,        v_0 = tau^2,  m_0 = 0
        w_{t+1} = w_t + eta * m_t / (sqrt(v_t) + tau)

    eta is the server learning rate, tau the adaptivity (the paper's beta1=0.9, beta2=0.99,
    tau=1e-3). eta_l, the workers' learning rate, defaults to the job's --lr; set it to send
    every worker that lr instead (configure_train). State: m and v, two models. Streams.
    """

    def __init__(self, *, eta: float, eta_l: float | None, beta1: float, beta2: float, tau: float) -> None:
        super().__init__()
        _check("eta", eta, 0.0, float("inf"))
        if eta_l is not None:
            _check("eta_l", eta_l, 0.0, float("inf"))
        _check("beta1", beta1, 0.0, 1.0)
        _check("beta2", beta2, 0.0, 1.0)
        _check("tau", tau, 0.0, float("inf"))
        if tau == 0.0:
            raise StrategyError("option tau must be positive: it keeps eta * m / (sqrt(v) + tau) finite")
        self.eta, self.eta_l, self.beta1, self.beta2, self.tau = eta, eta_l, beta1, beta2, tau
        self._m: Weights = {}
        self._v: Weights = {}

    def configure_train(self, round_: int, configs: Mapping[str, TrainConfig]) -> dict[str, TrainConfig]:
        configs = super().configure_train(round_, configs)
        if self.eta_l is None:
            return configs
        return {worker: replace(config, lr=self.eta_l) for worker, config in configs.items()}

    @abstractmethod
    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """v_t from v_{t-1} and the mean delta d_t."""

    def _step(self, name: str, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        m = self._m[name] if name in self._m else torch.zeros_like(delta)
        v = self._v[name] if name in self._v else torch.full_like(delta, self.tau ** 2)
        self._m[name] = m = server_opt.first_moment(m, delta, self.beta1)
        self._v[name] = v = self._second_moment(v, delta)
        return server_opt.adaptive_step(x, m, v, self.eta, self.tau)

    def _check_state(self, weights: Weights) -> None:
        if self._m or self._v:
            check_fits(self.kind, self._m, self.parameters_of(weights))
            check_fits(self.kind, self._v, self.parameters_of(weights))

    def state_dict(self) -> dict[str, Any]:
        if not self._m:
            return {}
        return {KIND: self.kind, **flatten("m", self._m), **flatten("v", self._v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restoring = check_kind(state, self.kind)
        self._m = tensors_under(state, "m") if restoring else {}
        self._v = tensors_under(state, "v") if restoring else {}


class FedAdagrad(_Adaptive):
    """FedAdagrad (Reddi et al. 2021): server Adagrad on the mean delta, v_t = v_{t-1} + d_t^2.

    Defaults eta=0.1, beta1=0.9, tau=1e-3 (no beta2). The full update is in _Adaptive's docstring.
    """

    kind = "fedadagrad"

    def __init__(self, *, eta: float = 0.1, eta_l: float | None = None, beta1: float = 0.9,
                 tau: float = 1e-3) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta1=beta1, beta2=0.0, tau=tau)

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return server_opt.adagrad_moment(v, delta)


class FedAdam(_Adaptive):
    """FedAdam (Reddi et al. 2021): server Adam on the mean delta, v_t = beta2 v_{t-1} + (1 - beta2) d_t^2.

    Defaults eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3. The full update is in _Adaptive's docstring.
    """

    kind = "fedadam"

    def __init__(self, *, eta: float = 0.1, eta_l: float | None = None, beta1: float = 0.9,
                 beta2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta1=beta1, beta2=beta2, tau=tau)

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return server_opt.adam_moment(v, delta, self.beta2)


class FedYogi(_Adaptive):
    """FedYogi (Reddi et al. 2021): server Yogi, v_t = v_{t-1} - (1 - beta2) d_t^2 sign(v_{t-1} - d_t^2).

    Defaults eta=0.01, beta1=0.9, beta2=0.99, tau=1e-3. The full update is in _Adaptive's docstring.
    """

    kind = "fedyogi"

    def __init__(self, *, eta: float = 0.01, eta_l: float | None = None, beta1: float = 0.9,
                 beta2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta1=beta1, beta2=beta2, tau=tau)

    def _second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return server_opt.yogi_moment(v, delta, self.beta2)
