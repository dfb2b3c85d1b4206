"""Byzantine workers for the robustness benchmark (benchmarks/robust.py), as ordinary task modules.

Each attacker is a task module that `fedmq worker --task benchmarks.attackers.NAME` runs like any
user's task: it delegates `build_model`, `load_shard` and `load_test` to the digits task and
defines its own `train(model, dataset, config)`, which leaves in `model` the weights it wants the
coordinator to see. fedmq sends back their change from the round's global model, as for any task,
so the core has no attack switches: an attacker is just a worker running other code.

    signflip   the honest update times -5
    gaussian   N(0, 1) noise in place of an update
    labelflip  honest training on labels mapped y -> 9 - y
    alie       "a little is enough" (Baruch et al. 2019): mean - z * std of benign-looking updates

The benchmark tells the attackers who their colluders are through the environment
(`ATTACKERS_ENV`: the shard indices of all attacking workers); only `alie` uses it.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from fedmq.worker.task import ShardSpec
from fedmq.worker.tasks import digits

Weights = dict[str, torch.Tensor]
ATTACKERS_ENV = "FEDMQ_BENCH_ATTACKERS"  # comma-separated shard indices of the colluding attackers
DEFAULT_LR = digits.DEFAULT_LR


def build_model() -> nn.Module:
    return digits.build_model()


def load_shard(spec: ShardSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.load_shard(spec)


def load_test() -> tuple[torch.Tensor, torch.Tensor]:
    return digits.load_test()


def snapshot(model: nn.Module) -> Weights:
    """A copy of the model's state dict (the round's global weights, before training)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def send_update(model: nn.Module, start: Weights, update: Weights) -> None:
    """Leave start + update in `model`: fedmq then sends `update` as this worker's change."""
    model.load_state_dict({name: start[name] + update[name].to(start[name].dtype) for name in start})


def change(model: nn.Module, start: Weights) -> Weights:
    """What training did to the model: trained - start, per entry."""
    return {name: value.detach() - start[name] for name, value in model.state_dict().items()}


def colluders(own: int) -> list[int]:
    """The shard indices of every attacker in the run (from ATTACKERS_ENV), else just `own`."""
    text = os.environ.get(ATTACKERS_ENV, "").strip()
    return sorted({int(part) for part in text.split(",") if part.strip()} | {own}) if text else [own]
