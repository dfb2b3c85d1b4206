"""Peak RSS growth while a real worker meets one attack on what its store used not to count.

    python -m tests.worker.remote_budget_rss ATTACK [CLIENT_CAP_MIB]

A WorkerService serves on the memory broker in a thread of a fresh process (so nothing an
earlier test allocated hides or inflates the figure); the attacker's batches go through its task
queue like any client's. Prints one JSON object: the attack, the first error kind the answers
report ("ran" when none), whether the worker still answers afterwards, and the peak RSS growth
in MiB (ru_maxrss after minus before). The batches are built on the wire API alone, so the
same script measures a checkout from before the fix.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import threading
from collections.abc import Callable

import torch
from torch import nn

from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.protocol.commands import CommandBatch, CommandResult, Op
from fedmq.protocol.messages import decode_message, encode_message
from fedmq.protocol.operands import ModuleSpec, Plain, Ref
from fedmq.worker.remote.layers import describe
from fedmq.worker.service import WorkerService
from fedmq.worker.settings import WorkerSettings
from fedmq.worker.task import ShardSpec

CLIENT, TOKEN, WORKER = "c-attacker", "ab" * 16, "bob"
Batches = list[list[Op]]


def _send(object_id: int, tensor: torch.Tensor, **kwargs: object) -> Op:
    return Op("send", (tensor,), dict(kwargs), (object_id,))  # type: ignore[arg-type]


def autograd_chain() -> Batches:
    """x.sin().sin()... keeping only the last result: each sin saves its 4 MiB input for backward."""
    ops = [_send(1, torch.randn(1 << 20), requires_grad=True)]
    for k in range(2, 302):
        ops += [Op("Tensor.sin", (Ref(k - 1),), {}, (k,))] + ([Op("free", (k - 1,))] if k > 2 else [])
    return [ops]


def optimizer_state() -> Batches:
    """One 4 MiB model, a gradient, then 40 Adam optimizers over it, each stepped once (8 MiB of state each)."""
    net = nn.Linear(1024, 1024)
    ops = [Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (1,)), _send(2, torch.ones(1, 1024)),
           Op("forward", (Ref(1), Ref(2)), {}, (3,)), Op("Tensor.sum", (Ref(3),), {}, (4,)), Op("backward", (Ref(4),))]
    for k in range(40):
        ops += [Op("optimizer", ("Adam", [Ref(1)]), {"lr": 0.1}, (10 + k,)), Op("step", (Ref(10 + k),))]
    return [ops]


def gets() -> Batches:
    """One 16 MiB tensor fetched 40 times in one batch: a copy per get, held until the answer."""
    return [[_send(1, torch.ones(4 << 20))] + [Op("get", (Ref(1),)) for _ in range(40)]]


def lost_ids() -> Batches:
    """Batches whose first op fails, then 499 ops of 16 result ids each: every id is remembered as lost."""
    return [[Op("get", (Ref(1),))] + [Op("torch.zeros", (1,), {}, tuple(range(b * 10**5 + 16 * i, b * 10**5 + 16 * i + 16)))
                                      for i in range(1, 500)] for b in range(1, 61)]


def layers() -> Batches:
    """A module of 100,000 parameterless layers (a 4 MB structure, padded with a 16 MiB tensor so
    that the decoder's value budget lets it through), built with nothing counted."""
    inner: Plain = {"layer": "Sequential", "children": [[str(i), {"layer": "ReLU", "args": {}, "train": True}]
                                                 for i in range(4000)], "train": True}
    spec: Plain = {"layer": "Sequential", "children": [[str(i), inner] for i in range(25)], "train": True}
    return [[_send(2, torch.zeros(4 << 20)), Op("module", (ModuleSpec(spec, {}),), {}, (1,))]]


ATTACKS: dict[str, Callable[[], Batches]] = {
    "autograd_chain": autograd_chain, "optimizer_state": optimizer_state, "gets": gets, "lost_ids": lost_ids,
    "layers": layers,
}


def _batch(seq: int, ops: list[Op]) -> bytes:
    fields = {field.name for field in dataclasses.fields(CommandBatch)}
    extra = {"token": TOKEN} if "token" in fields else {}
    return bytes(encode_message(CommandBatch(CLIENT, seq, tuple(ops), **extra)))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(attack: str, cap_mib: int) -> dict[str, object]:
    hub = MemoryHub()
    client = MemoryBroker(hub)
    client.declare_worker(WORKER)
    client.declare_job(CLIENT, [WORKER])
    client.consume_replies(CLIENT, [WORKER])
    caps = {"max_client_bytes": cap_mib << 20, "max_object_bytes": 4 * cap_mib << 20}
    known = {field.name for field in dataclasses.fields(WorkerSettings)}
    settings = WorkerSettings(WORKER, "toy", ShardSpec(0, 1), poll_s=0.05,
                              **{key: value for key, value in caps.items() if key in known})  # type: ignore[arg-type]
    worker = MemoryBroker(hub)
    stop = threading.Event()
    thread = threading.Thread(target=WorkerService(worker, settings).serve, args=(stop,), daemon=True)
    thread.start()
    batches = ATTACKS[attack]()

    def answer() -> CommandResult:
        delivery = client.receive(timeout=120)
        assert delivery is not None, "the worker did not answer"
        client.ack(delivery)
        message = decode_message(delivery.body())
        assert isinstance(message, CommandResult)
        return message

    client.publish_task(WORKER, _batch(1, [_send(900, torch.ones(2)), Op("Tensor.sin", (Ref(900),), {}, (901,)),
                                           Op("free", (900, 901))]))
    answer()  # warm: torch's lazily loaded code is not the attack's
    before = _peak_mib()
    errors = []
    for seq, ops in enumerate(batches, start=2):
        client.publish_task(WORKER, _batch(seq, ops))
        result = answer()
        errors.append(result.error.kind if result.error else "ran")
        del result
    growth = _peak_mib() - before
    client.publish_task(WORKER, _batch(len(batches) + 2, [Op("info")]))
    serving = answer().error is None
    stop.set()
    thread.join(30)
    first = next((kind for kind in errors if kind != "ran"), "ran") if attack != "lost_ids" else errors[-1]
    return {"attack": attack, "outcome": first, "still_serving": serving, "peak_growth_mib": round(growth, 1),
            "client_cap_mib": cap_mib}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64)))
