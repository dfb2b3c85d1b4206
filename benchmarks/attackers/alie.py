""""A little is enough" attacker (Baruch, Baruch and Goldberg, NeurIPS 2019).

The paper's attackers send, coordinate by coordinate, mu_j - z * sigma_j, where mu and sigma are
the mean and standard deviation of the honest workers' updates and z is as large as it can be
while the poisoned value still has enough "supporters" among the honest ones:

    s = floor(n / 2 + 1) - f,     z = Phi^-1((n - s) / n)

(n workers, f of them attackers, Phi the standard normal CDF). With n=10: f=1 gives z=0 (the
attackers send the mean itself), f=3 gives z = Phi^-1(0.7) = 0.524.

Approximation: over fedmq an attacker never sees honest updates, so mu and sigma are estimated
from updates the attackers can compute themselves. The f colluding attackers pool their shards
(each loads all f, by the shard spec the benchmark passes in ATTACKERS_ENV) and train one update
from the round's global model on each of BOOTSTRAPS bootstrap resamples of each shard: f *
BOOTSTRAPS benign-looking updates. Under label skew the shards differ in which digits they hold,
so with f >= 2 the spread between shards stands in for the spread between honest workers; with
f=1 only the bootstrap spread remains, which is smaller than the real one. Every seed is fixed by
(shard, resample), never by the worker, so all colluders send the same vector, as in the paper.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import torch
from torch import nn

from benchmarks.attackers import DEFAULT_LR as DEFAULT_LR
from benchmarks.attackers import build_model as build_model
from benchmarks.attackers import load_test as load_test
from benchmarks.attackers import change, colluders, send_update, snapshot
from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training
from fedmq.worker.task import ShardSpec
from fedmq.worker.tasks import digits

BOOTSTRAPS = 4
_spec: list[ShardSpec] = []  # this worker's shard, remembered by load_shard for train


def load_shard(spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    _spec[:] = [spec]
    return digits.load_shard(spec)


def z_max(n: int, f: int) -> float:
    """The paper's z for n workers of which f attack: Phi^-1((n - s) / n), s = floor(n/2 + 1) - f."""
    supporters = math.floor(n / 2 + 1) - f
    share = (n - supporters) / n
    if not 0 < share < 1:
        raise TaskError(f"'a little is enough' has no z for n={n}, f={f}: (n - s)/n = {share} is outside (0, 1)")
    return statistics.NormalDist().inv_cdf(share)


def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
    if not _spec:
        raise TaskError("alie: train() before load_shard(): the worker should load its shard first")
    spec = _spec[0]
    shards = colluders(spec.index)
    start = snapshot(model)
    samples = [_benign_update(model, start, ShardSpec(index, spec.count, spec.partition), resample, config)
               for index in shards for resample in range(BOOTSTRAPS)]
    z = z_max(spec.count, len(shards))
    poisoned = {}
    for name in start:
        stack = torch.stack([sample[name] for sample in samples])  # (samples, *shape)
        poisoned[name] = stack.mean(dim=0) - z * stack.std(dim=0)
    send_update(model, start, poisoned)
    return {"alie_z": z}


def _benign_update(model: nn.Module, start: dict[str, torch.Tensor], shard: ShardSpec, resample: int,
                   config: TrainConfig) -> dict[str, torch.Tensor]:
    """The update honest training from `start` makes on one bootstrap resample of `shard`."""
    inputs, targets = digits.load_shard(shard)  # (M, 64), (M,)
    seed = 1000 * shard.index + resample  # shared by all colluders: they compute the same samples
    rows = torch.randint(len(targets), (len(targets),), generator=torch.Generator().manual_seed(seed))
    model.load_state_dict(start)
    training.train(model, (inputs[rows], targets[rows]), replace(config, seed=seed))
    return change(model, start)
