"""Peak RSS growth while a worker's executor meets one remote-op memory bomb, in a fresh process.

    python -m tests.worker.op_bomb_rss BOMB [CAP_MIB]

prints one JSON object: the bomb, the outcome (the error kind, or "ran"), and the peak RSS
growth in MiB (resource.getrusage's ru_maxrss after the batch minus before it). A fresh process,
so that nothing an earlier test allocated hides or inflates the figure. Each bomb is a few small
tensors or a small module whose op would allocate about 1 GiB (broadcasts, intermediates, a
layer's output), far past the cap (64 MiB by default).
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Callable

import torch
from torch import nn

from fedmq.protocol.commands import Op
from fedmq.protocol.operands import ModuleSpec, Ref
from fedmq.worker.remote.context import Context
from fedmq.worker.remote.executor import Executor
from fedmq.worker.remote.layers import describe
from fedmq.worker.remote.store import ALLOW_GET, Limits, ObjectStore
from fedmq.worker.task import ShardSpec, load_task


def _send(object_id: int, tensor: torch.Tensor) -> Op:
    return Op("send", (tensor,), {}, (object_id,))


def _module(object_id: int, net: nn.Module) -> Op:
    return Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (object_id,))


def _col_max_row() -> list[Op]:  # (N, 1).max((1, N)): an elementwise max over the broadcast N x N
    n = 16_000
    return [_send(1, torch.ones(n, 1)), _send(2, torch.ones(1, n)), Op("Tensor.max", (Ref(1), Ref(2)), {}, (3,))]


def _masked_select() -> list[Op]:  # a (N, 1) source under a (1, N) mask: up to N x N, plus the indices
    n = 8_000
    return [_send(1, torch.ones(n, 1)), _send(2, torch.ones(1, n, dtype=torch.bool)),
            Op("Tensor.masked_select", (Ref(1), Ref(2)), {}, (3,))]


def _broadcast_loss() -> list[Op]:  # a scalar result, after an N x N difference and its square
    n = 12_000
    return [_send(1, torch.ones(n, 1)), _send(2, torch.ones(1, n)), Op("F.mse_loss", (Ref(1), Ref(2)), {}, (3,))]


def _conv_transpose() -> list[Op]:  # a 30-long input, a stride of 10**7: a 2.9e8-long output
    net = nn.ConvTranspose1d(1, 1, kernel_size=1, stride=10 ** 7, bias=False)
    return [_module(1, net), _send(2, torch.ones(1, 1, 30)), Op("forward", (Ref(1), Ref(2)), {}, (3,))]


def _adaptive_pool() -> list[Op]:  # 16 maps of 2 x 2, pooled up to 4096 x 4096 each
    net = nn.AdaptiveAvgPool2d(4096)
    return [_module(1, net), _send(2, torch.ones(4, 4, 2, 2)), Op("forward", (Ref(1), Ref(2)), {}, (3,))]


# A small op and a small forward, run first: the first meta run of each kind imports torch code
# worth tens of MiB, a one-off cost of the process that is not the bomb's.
_WARM_UP = [_send(90, torch.ones(2, 1)), Op("Tensor.max", (Ref(90), Ref(90)), {}, (91,)),
            _module(92, nn.Identity()), Op("forward", (Ref(92), Ref(90)), {}, (93,)), Op("free", (90, 91, 92, 93))]

BOMBS: dict[str, Callable[[], list[Op]]] = {
    "col.max(row)": _col_max_row, "masked_select": _masked_select, "broadcast_loss": _broadcast_loss,
    "conv_transpose_stride": _conv_transpose, "adaptive_pool": _adaptive_pool,
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(bomb: str, cap_mib: int) -> dict[str, object]:
    task = load_task("toy")
    cap = cap_mib << 20
    store = ObjectStore("bob", Limits(max_bytes=cap, max_client_bytes=cap) if hasattr(Limits, "max_client_bytes")
                        else Limits(max_bytes=cap))
    executor = Executor(Context("bob", store, torch.device("cpu"), task, task.load_shard(ShardSpec(0, 1)),
                                ALLOW_GET["none"]))
    opened = getattr(store, "open", None)  # the store's API before and after sessions had owners
    if opened is not None:
        from fedmq.worker.remote.store import Owner
        session = opened("c-bomb", Owner("ab" * 16, None))
    else:
        session = store.session("c-bomb")  # type: ignore[attr-defined,unused-ignore]
    ops = BOMBS[bomb]()
    executor.run(session, ops[:-1])  # the small operands
    executor.run(session, _WARM_UP)  # torch's lazily imported meta and functorch code
    before = _peak_mib()
    serving = getattr(store, "serving", None)
    if serving is not None:
        with serving(session):
            outcome = executor.run(session, ops[-1:])
    else:
        outcome = executor.run(session, ops[-1:])
    growth = _peak_mib() - before
    return {"bomb": bomb, "outcome": outcome.error.kind if outcome.error else "ran",
            "peak_growth_mib": round(growth, 1), "cap_mib": cap_mib}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64)))
