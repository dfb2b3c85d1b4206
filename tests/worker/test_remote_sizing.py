"""Every remote op is sized on meta tensors before it runs, intermediates included (issue 8, point 11).

Before sizing covered every op, each bomb below (a few small tensors or a small module, the
op allocating about 1 GiB) went past a 64 MiB cap: peak RSS grew by 977 MiB (col.max(row)),
1222 MiB (masked_select), 622 MiB (a loss over broadcast shapes, which even ran: its result is
a scalar), 1108 MiB (ConvTranspose with a stride of 10**7) and 1025 MiB (adaptive pooling to
4096 x 4096), each measured with tests/worker/op_bomb_rss.py on the code before the change.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from fedmq.protocol.commands import Op
from fedmq.protocol.operands import Ref
from tests.coordinator.conftest import ROOT
from tests.worker.op_bomb_rss import BOMBS
from tests.worker.remote_rig import Worker, call, get, module, send
from fedmq.worker.remote import allowlist, sizing
from fedmq.worker.remote.store import Limits

CAP = 64 << 20
MARGIN_MIB = 16.0  # allocator noise and the refusal's own small objects: a bomb's 1 GiB would not fit


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_memory_bomb_is_refused_and_peak_rss_stays_within_the_margin(bomb: str) -> None:
    # Given a fresh worker process with a 64 MiB cap and the bomb's small operands
    # When the bomb's op arrives
    run = subprocess.run([sys.executable, "-m", "tests.worker.op_bomb_rss", bomb, str(CAP >> 20)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(figures)
    # Then it is refused for capacity, and the process's peak memory barely moved
    assert figures["outcome"] == "capacity"
    assert figures["peak_growth_mib"] <= MARGIN_MIB


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_refused_bomb_leaves_the_worker_holding_what_it_held(bomb: str) -> None:
    # Given a worker with a 64 MiB cap holding a bomb's small operands
    worker = Worker(task="toy", limits=Limits(max_bytes=CAP, max_client_bytes=CAP))
    *operands, op = BOMBS[bomb]()
    worker.value(*operands, Op("info"))
    held = (worker.store.objects, worker.store.bytes)
    # When the bomb's op runs
    error = worker.error(op)
    # Then it is a capacity error naming the cap, and nothing was stored for it
    assert error.kind == "capacity" and "cap" in error.reason
    assert (worker.store.objects, worker.store.bytes) == held and op.outs[0] not in worker.session.objects


@pytest.mark.parametrize("op", [
    call("torch.zeros", Ref(1), out=2),  # a tensor as a size: only its value, which meta lacks, says how big
    call("torch.arange", Ref(1), out=2),
    call("Tensor.expand", Ref(3), Ref(1), 4, out=2),
    call("torch.where", Ref(4), out=2),  # one argument: the indices of the true elements
])
def test_an_op_whose_memory_cannot_be_worked_out_in_advance_is_refused(op: Op) -> None:
    # Given the client's own tensors (public: nothing private is at stake here)
    worker = Worker(allow_get="all", task="toy")
    worker.value(send(1, torch.tensor(10 ** 9)), send(3, torch.ones(1, 4)), send(4, torch.ones(3) > 0), Op("info"))
    # When an op whose result's size depends on a value arrives
    error = worker.error(op)
    # Then it is refused up front, saying why, and nothing was made
    assert error.kind == "refused" and "cannot be worked out before running it" in error.reason
    assert 2 not in worker.session.objects


def test_a_forward_is_sized_with_its_intermediates_before_it_runs() -> None:
    # Given layers whose output is small but whose middle is large: 16 x (1 -> 4096) widening then
    # a mean back to 1 (each hidden output is 2 MiB for 128 rows; with a 16 MiB cap they do not fit)
    hidden = [layer for _ in range(16) for layer in (nn.Linear(1, 4096), nn.Linear(4096, 1))]
    worker = Worker(task="toy", limits=Limits(max_bytes=16 << 20, max_client_bytes=16 << 20))
    worker.value(module(1, nn.Sequential(*hidden)), send(2, torch.ones(128, 1)), Op("info"))
    # When the client calls it
    error = worker.error(Op("forward", (Ref(1), Ref(2)), {}, (3,)))
    # Then it is refused for capacity before any layer ran
    assert error.kind == "capacity" and 3 not in worker.session.objects


def test_ops_that_fit_still_run_and_agree_with_local_torch() -> None:
    # Given small tensors that broadcast
    worker = Worker(allow_get="all", task="toy", limits=Limits(max_bytes=CAP, max_client_bytes=CAP))
    col, row = torch.arange(3.0).reshape(3, 1), torch.arange(4.0).reshape(1, 4)
    # When a broadcast max, a broadcast loss and a masked selection run
    got = [worker.value(send(1, col), send(2, row), call("Tensor.max", Ref(1), Ref(2), out=3), get(3)),
           worker.value(call("F.mse_loss", Ref(1), Ref(2), out=4), get(4)),
           worker.value(send(5, row > 1), call("Tensor.masked_select", Ref(1), Ref(5), out=6), get(6))]
    # Then they give what torch gives here
    expected = [col.max(row), torch.nn.functional.mse_loss(col, row.expand(3, 4)), col.masked_select(row > 1)]
    for value, want in zip(got, expected, strict=True):
        assert isinstance(value, torch.Tensor)
        torch.testing.assert_close(value, want)


SIZED = [
    ("op.add", (torch.ones(3, 1, dtype=torch.int8), 1.5), {}),  # int8 + a float: float32
    ("op.truediv", (torch.ones(2, 3, dtype=torch.int64), torch.ones(3)), {}),
    ("torch.maximum", (torch.ones(4, 1), torch.ones(1, 5, dtype=torch.float64)), {}),
    ("Tensor.clamp", (torch.ones(2, 3),), {"min": torch.zeros(3)}),
    ("op.lt", (torch.ones(3, 1), torch.ones(1, 3)), {}),
    ("torch.where", (torch.ones(2, 1) > 0, torch.ones(1, 3), 0.0), {}),  # three arguments: sized on meta
    ("Tensor.sort", (torch.ones(3, 4),), {"dim": 1}),
    ("F.mse_loss", (torch.ones(3, 4), torch.ones(3, 4)), {}),
]


@pytest.mark.parametrize(("name", "args", "kwargs"), SIZED, ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(SIZED)])
def test_the_predicted_results_are_the_real_ones(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    # Given an op sized before it runs (quickly for elementwise ops, on meta tensors otherwise)
    fn = allowlist.function(name)
    size = sizing.size_call(name, fn, args, kwargs)
    # When it runs for real
    result = fn(*args, **kwargs)
    real = list(sizing.tensors_in(result))
    # Then the predicted shapes and dtypes (what stand-ins are made of) are the real ones, and the
    # predicted bytes cover the results
    assert size.outputs == [(t.shape, t.dtype) for t in real]
    assert size.nbytes >= sum(t.numel() * t.element_size() for t in real)
