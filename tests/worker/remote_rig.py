"""A remote-op executor on a real task's shard, for attack tests: ops in, outcomes out."""

from __future__ import annotations

import torch
from torch import nn

from fedmq.protocol.commands import Op, OpError
from fedmq.protocol.operands import ModuleSpec, Ref, Value
from fedmq.worker.remote.context import Context
from fedmq.worker.remote.executor import Executor, Outcome
from fedmq.worker.remote.layers import describe
from fedmq.worker.remote.store import ALLOW_GET, Limits, ObjectStore, Owner
from fedmq.worker.task import Dataset, ShardSpec, load_task

CLIENT, TOKEN = "c-attacker", "ab" * 16
FIRST_QUARTER = ShardSpec(0, 4)


class Worker:
    """Worker "bob" with a task's shard (or the shard given), serving one client's session."""

    def __init__(self, allow_get: str = "none", task: str = "digits", shard: Dataset | None = None,
                 limits: Limits | None = None, spec: ShardSpec = FIRST_QUARTER) -> None:
        loaded = load_task(task)
        self.shard = shard if shard is not None else loaded.load_shard(spec)
        self.store = ObjectStore("bob", limits or Limits())
        self.executor = Executor(Context("bob", self.store, torch.device("cpu"), loaded, self.shard,
                                         ALLOW_GET[allow_get]))
        self.session = self.store.open(CLIENT, Owner(TOKEN, None))

    def run(self, *ops: Op) -> Outcome:
        with self.store.serving(self.session):
            return self.executor.run(self.session, ops)

    def value(self, *ops: Op) -> Value:
        """The value the last op fetched; fails the test on any error."""
        outcome = self.run(*ops)
        assert outcome.error is None, outcome.error
        return outcome.values[len(ops) - 1]

    def error(self, *ops: Op) -> OpError:
        outcome = self.run(*ops)
        assert outcome.error is not None, "the ops were expected to fail"
        return outcome.error


def send(object_id: int, tensor: torch.Tensor, **kwargs: object) -> Op:
    return Op("send", (tensor,), dict(kwargs), (object_id,))  # type: ignore[arg-type]


def module(object_id: int, net: nn.Module) -> Op:
    return Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (object_id,))


def call(name: str, *args: object, out: int, **kwargs: object) -> Op:
    return Op(name, args, kwargs, (out,))  # type: ignore[arg-type]


def get(object_id: int) -> Op:
    return Op("get", (Ref(object_id),))


def dataset(inputs: int, targets: int) -> Op:
    return Op("dataset", (), {}, (inputs, targets))
