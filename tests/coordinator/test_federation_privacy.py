"""The privacy attacks of issue 8 (points 1 to 4) through the pointer API, against a spawned worker
with --allow-get none: what a client writes in plain torch must not bring private values back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedmq.coordinator import Federation
from fedmq.protocol.errors import RemotePermissionError
from fedmq.worker.task import ShardSpec, load_task


def test_an_alias_of_a_tensor_trained_on_a_private_row_cannot_be_fetched(fed: Federation) -> None:
    # Given a worker holding digits, which lets nothing computed from them leave
    bob = fed.spawn("bob", task="digits", shard="0/4", allow_get="none")
    x, _ = bob.dataset()
    # And the client's own tensor, with a detached view of it taken while it was public
    w = bob.send(torch.zeros(64, requires_grad=True))
    view = w.detach()
    # When one SGD step on -(x[0] . w) writes the first private row into w
    opt = bob.optimizer(torch.optim.SGD, w, lr=1.0)
    loss = -(x[0] * w).sum()
    loss.backward()
    opt.step()
    # Then neither w nor its view can be fetched
    with pytest.raises(RemotePermissionError):
        view.get()
    with pytest.raises(RemotePermissionError):
        w.get()


def test_an_embedding_that_renormalised_the_rows_of_private_labels_stays_behind(fed: Federation) -> None:
    # Given an Embedding whose max_norm rewrites each row it looks up, in eval mode too
    bob = fed.spawn("bob", task="digits", shard="0/4", allow_get="none")
    _, y = bob.dataset()
    net = nn.Embedding(10, 1, max_norm=1.0).eval()
    nn.init.constant_(net.weight, 100.0)
    remote = bob.send(net)
    # When it looks up the private labels
    remote(y[:8])
    # Then the module (whose rewritten rows would name the labels) cannot be fetched
    with pytest.raises(RemotePermissionError):
        remote.get()


def test_neither_a_private_count_nor_a_failing_index_tells_anything(fed: Federation) -> None:
    # Given private labels on a worker with --allow-get none
    bob = fed.spawn("bob", task="digits", shard="0/4", allow_get="none")
    _, y = bob.dataset()
    # When the client selects by a mask made from them and asks the shape (the count of 3s)
    threes = y[y == 3]
    with pytest.raises(RemotePermissionError, match="shape of its result would depend on the values"):
        _ = threes.shape
    # And indexes a 3-long table with the first label (out of range: it is 3 or more)
    assert int(load_task("digits").load_shard(ShardSpec(0, 4))[1][0]) >= 3  # type: ignore[index]
    picked = bob.send(torch.zeros(3))[y[:1]]
    # Then nothing fails, the shape is the index's, and the value stays behind
    assert picked.shape == (1,)
    with pytest.raises(RemotePermissionError):
        picked.get()
