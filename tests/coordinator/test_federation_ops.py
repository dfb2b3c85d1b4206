"""Remote ops give what local torch gives, family by family, on random inputs, on both brokers.

Each case is one function applied to local tensors and to their remote twins: operator
overloads and torch's __torch_function__ make the same code run either way.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedmq.coordinator import Federation

Case = Callable[..., object]  # (a, b, labels) -> a tensor, or a tuple whose [0] is compared

FAMILIES: dict[str, list[Case]] = {
    "arithmetic": [
        lambda a, b, _: a + b, lambda a, b, _: a - 2, lambda a, b, _: 2 - a, lambda a, b, _: a * b,
        lambda a, b, _: 3 * a, lambda a, b, _: a / (b.abs() + 1), lambda a, b, _: 1 / (a.abs() + 1),
        lambda a, b, _: a // 0.5, lambda a, b, _: a % 1.5, lambda a, b, _: a ** 2, lambda a, b, _: 2 ** a,
        lambda a, b, _: -a, lambda a, b, _: abs(a), lambda a, b, _: a + torch.ones(4),
        lambda a, b, _: torch.maximum(a, b), lambda a, b, _: torch.clamp(a, min=-0.5, max=0.5),
        lambda a, b, _: a.exp().log1p().sqrt(),
    ],
    "comparisons": [
        lambda a, b, _: a < b, lambda a, b, _: a <= 0, lambda a, b, _: a > b, lambda a, b, _: a >= 0,
        lambda a, b, _: a == a, lambda a, b, _: a != b, lambda a, b, _: (a > 0) & (b > 0),
        lambda a, b, _: (a > 0) | (b > 0), lambda a, b, _: ~(a > 0), lambda a, b, _: (a > 0) ^ (b > 0),
        lambda a, b, _: torch.where(a > b, a, b), lambda a, b, _: torch.isfinite(a / 0),
    ],
    "reductions": [
        lambda a, b, _: a.sum(), lambda a, b, _: a.mean(dim=0), lambda a, b, _: a.prod(1),
        lambda a, b, _: a.max(), lambda a, b, _: a.max(dim=1)[0], lambda a, b, _: a.max(1)[1],
        lambda a, b, _: a.argmax(), lambda a, b, _: a.std(), lambda a, b, _: torch.logsumexp(a, 1),
        lambda a, b, _: a.cumsum(0), lambda a, b, _: a.sort(dim=1)[0], lambda a, b, _: a.topk(2)[1],
        lambda a, b, _: a.norm(), lambda a, b, _: torch.amax(a, 0), lambda a, b, _: (a > 0).any(),
    ],
    "matmul": [
        lambda a, b, _: a @ b.t(), lambda a, b, _: torch.matmul(a, b.t()), lambda a, b, _: a.mm(b.t()),
        lambda a, b, _: torch.einsum("ij,kj->ik", a, b), lambda a, b, _: torch.outer(a[0], b[0]),
        lambda a, b, _: a.t() @ b, lambda a, b, _: torch.ones(2, 3) @ a,
    ],
    "indexing": [
        lambda a, b, _: a[0], lambda a, b, _: a[1:3], lambda a, b, _: a[:, ::2], lambda a, b, _: a[..., 0],
        lambda a, b, _: a[None], lambda a, b, _: a[[0, 2]], lambda a, b, _: a[a > 0],
        lambda a, b, _: a[0, 1], lambda a, b, _: a[-1], lambda a, b, _: a[torch.tensor([2, 0])],
        lambda a, b, _: a[1:, [0, 3]], lambda a, b, labels: a[torch.arange(3), labels],
    ],
    "shapes": [
        lambda a, b, _: a.reshape(4, 3), lambda a, b, _: a.view(-1), lambda a, b, _: a.permute(1, 0),
        lambda a, b, _: a.flatten(), lambda a, b, _: a.unsqueeze(0), lambda a, b, _: torch.cat([a, b]),
        lambda a, b, _: torch.stack([a, b], 1), lambda a, b, _: a.transpose(0, 1).contiguous(),
        lambda a, b, _: a.double(), lambda a, b, _: a.to(torch.float16), lambda a, b, _: a.repeat(2, 1),
        lambda a, b, _: a.expand(2, 3, 4), lambda a, b, _: a.flip(0), lambda a, b, _: a.tril(),
    ],
    "functional": [
        lambda a, b, _: F.relu(a), lambda a, b, _: F.softmax(a, dim=1), lambda a, b, _: F.log_softmax(a, 1),
        lambda a, b, _: F.mse_loss(a, b), lambda a, b, labels: F.cross_entropy(a, labels),
        lambda a, b, _: F.linear(a, b[:2]), lambda a, b, _: F.gelu(a), lambda a, b, _: torch.sigmoid(a),
        lambda a, b, _: F.pad(a, (1, 1)), lambda a, b, _: F.normalize(a),
        lambda a, b, _: F.conv1d(a[None], b[None, :, :2]), lambda a, b, labels: F.one_hot(labels, 5),
        lambda a, b, _: F.dropout(a, p=0.5, training=False), lambda a, b, _: F.leaky_relu(a, 0.2),
    ],
    "creation": [
        lambda a, b, _: torch.zeros_like(a), lambda a, b, _: torch.ones_like(a, dtype=torch.int32),
        lambda a, b, _: torch.full_like(a, 7.0),
    ],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_op_family_matches_local_torch(fed: Federation, family: str) -> None:
    # Given random tensors here and their twins on a worker
    torch.manual_seed(sorted(FAMILIES).index(family))
    local = (torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 3, 1]))
    bob = fed.spawn("bob")
    remote = tuple(bob.send(t) for t in local)
    for number, case in enumerate(FAMILIES[family]):
        # When the same code runs on each
        expected, got = case(*local), case(*remote)
        # Then the worker's result is local torch's, value and dtype
        if isinstance(expected, tuple):
            expected, got = expected[0], got[0]  # type: ignore[index]
        torch.testing.assert_close(got.get(), expected, msg=lambda m, n=number: f"{family} case {n}: {m}")  # type: ignore[union-attr]


def test_creation_functions_run_on_the_worker(fed: Federation) -> None:
    bob = fed.spawn("bob")
    assert torch.equal(bob.torch.zeros(2, 3).get(), torch.zeros(2, 3))
    assert torch.equal(bob.torch.arange(5, dtype=torch.int64).get(), torch.arange(5))
    assert torch.equal(bob.torch.eye(3).get(), torch.eye(3))
    assert torch.equal(bob.torch.full((2,), 4.5).get(), torch.full((2,), 4.5))


def test_gradients_and_optimizers_match_local_torch(fed: Federation) -> None:
    # Given weights that require grad, and a small MLP, here and on a worker
    torch.manual_seed(7)
    x, w = torch.randn(5, 3), torch.randn(3, 2, requires_grad=True)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    bob = fed.spawn("bob")
    rx, rw, rnet = bob.send(x), bob.send(w), bob.send(net)
    # When a loss is backpropagated and Adam takes two steps, remotely and here
    ((rx @ rw) ** 2).sum().backward()
    ((x @ w) ** 2).sum().backward()  # type: ignore[no-untyped-call]
    ropt = bob.optimizer(torch.optim.Adam, rnet, lr=0.01, betas=(0.8, 0.9))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.8, 0.9))
    for _ in range(2):
        ropt.zero_grad()
        F.mse_loss(rnet(rx), torch.ones(5, 1)).backward()
        ropt.step()
        opt.zero_grad()
        F.mse_loss(net(x), torch.ones(5, 1)).backward()  # type: ignore[no-untyped-call]
        opt.step()
    # Then the gradient and the trained weights are local torch's
    assert w.grad is not None
    torch.testing.assert_close(rw.grad.get(), w.grad)
    trained = rnet.get()
    for (name, got), expected in zip(trained.state_dict().items(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(got, expected, msg=name)
