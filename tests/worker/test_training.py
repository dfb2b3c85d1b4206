"""The default train and evaluate: they learn, they are deterministic, they report what they say."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training
from fedmq.worker.task import ShardSpec, load_task
from fedmq.worker.tasks import toy


def _digits_shard() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    task = load_task("digits")
    torch.manual_seed(0)
    x, y = task.load_shard(ShardSpec(0, 3))  # type: ignore[misc]
    return task.build_model(), x, y


def test_default_train_reduces_digits_loss() -> None:
    # Given a fresh digits MLP and a third of the training data
    model, x, y = _digits_shard()
    before = training.evaluate(model, (x, y))["eval_loss"]
    # When it trains for ten epochs
    metrics = training.train(model, (x, y), TrainConfig(lr=0.1, epochs=10, batch_size=32, seed=1))
    after = training.evaluate(model, (x, y))
    # Then the loss on that data falls well below where it started, and accuracy is reported
    assert after["eval_loss"] < 0.5 * before
    assert metrics["train_loss"] < before
    assert after["eval_accuracy"] > 0.8


def test_same_seed_and_weights_give_the_same_result() -> None:
    # Given two copies of one model
    model, x, y = _digits_shard()
    twin, other = copy.deepcopy(model), copy.deepcopy(model)
    # When both train with seed 7, and a third with seed 8
    first = training.train(model, (x, y), TrainConfig(lr=0.1, batch_size=16, seed=7))
    second = training.train(twin, (x, y), TrainConfig(lr=0.1, batch_size=16, seed=7))
    training.train(other, (x, y), TrainConfig(lr=0.1, batch_size=16, seed=8))
    # Then the seed-7 runs end with identical weights and loss; the seed-8 run differs
    assert first == second
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert not torch.equal(model.state_dict()["0.weight"], other.state_dict()["0.weight"])


def _reference_epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                      mu: float = 0.0) -> float:
    """The loop as torch's documentation writes it: torch.optim.SGD, zero_grad, backward, step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    start = [p.detach().clone() for p in model.parameters()]
    shuffle = torch.Generator().manual_seed(config.seed)
    total = torch.zeros((), dtype=torch.float64)
    for _ in range(config.epochs):
        total.zero_()
        order = torch.randperm(x.shape[0], generator=shuffle)
        for first in range(0, x.shape[0], config.batch_size):
            rows = order[first:first + config.batch_size]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            proximal = sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True))
            (loss + mu / 2 * proximal if mu else loss).backward()
            optimizer.step()
            total += loss.detach().to(torch.float64) * rows.numel()
    return total.item() / x.shape[0]


class _WithUnused(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.unused = net, nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_training_is_bit_for_bit_torch_optim_sgd(mu: float) -> None:
    # Given a digits MLP with one parameter the loss never reaches, and a twin of it
    net, x, y = _digits_shard()
    model = _WithUnused(net)
    twin = copy.deepcopy(model)
    unused_before = model.unused.weight.detach().clone()
    config = TrainConfig(lr=0.1, epochs=2, batch_size=32, seed=3, options={training.PROXIMAL_MU: mu})
    # When fedmq's default train runs on one and torch.optim.SGD's documented loop on the other
    metrics = training.train(model, (x, y), config)
    reference_loss = _reference_epochs(twin, x, y, config, mu)
    # Then the weights and the reported loss are the same to the last bit, and the unused layer stayed put
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))
    assert metrics["train_loss"] == reference_loss
    assert torch.equal(model.unused.weight, unused_before)


def test_sparse_gradients_step_as_torch_optim_sgd_steps_them() -> None:
    # Given a bag-of-embeddings classifier whose embedding has sparse gradients, and a twin
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4, sparse=True), nn.Flatten(), nn.Linear(12, 3))
    twin, start = copy.deepcopy(model), model[0].weight.detach().clone()
    x, y = torch.randint(0, 20, (40, 3)), torch.randint(0, 3, (40,))
    config = TrainConfig(lr=0.2, epochs=1, batch_size=8, seed=1)
    # When fedmq's default train runs on one and torch.optim.SGD's loop on the other
    training.train(model, (x, y), config)
    _reference_epochs(twin, x, y, config)
    # Then both moved, to the same bits
    assert not torch.equal(model[0].weight, start)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))


def test_a_batch_that_gives_no_parameter_a_gradient_steps_nothing() -> None:
    # Given a frozen model, and a loss with a term from a tensor outside it that does want gradients
    model = nn.Linear(2, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    outside = torch.ones(1, requires_grad=True)

    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((prediction - target) ** 2).sum() + outside.sum()

    # When it trains
    metrics = training.train(model, (torch.randn(4, 2), torch.randn(4, 1)), TrainConfig(lr=0.1, batch_size=2), loss)
    # Then it reports a loss and the model has not moved, as torch.optim.SGD would leave it
    assert metrics["train_loss"] > 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.values(), strict=True))


def test_train_loss_is_the_batch_size_weighted_mean() -> None:
    # Given 479 rows in batches of 50 (the last one of 29) and a learning rate of zero
    model, x, y = _digits_shard()
    expected = F.cross_entropy(model(x), y).item()
    # When it trains (without moving)
    metrics = training.train(model, (x, y), TrainConfig(lr=0.0, batch_size=50))
    # Then the reported loss is the mean over all rows, as if in one batch
    assert metrics["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_toy_loss_is_the_summed_squared_error() -> None:
    # Given the toy model set to predict 0 everywhere, and alice's half (targets 1, 1)
    model = toy.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x, y = toy.load_shard(ShardSpec(1, 2))
    # When it trains one batch of both rows without moving
    metrics = training.train(model, (x, y), TrainConfig(lr=0.0, batch_size=2), toy.loss)
    # Then the loss is (0-1)^2 + (0-1)^2 = 2, summed, not the mean 1
    assert metrics["train_loss"] == pytest.approx(2.0)


def test_toy_training_with_the_tutorial_lr_fits_the_data() -> None:
    # Given the toy model and all four points
    torch.manual_seed(0)
    model = toy.build_model()
    x, y = toy.load_shard(ShardSpec(0, 1))
    start = training.evaluate(model, (x, y), toy.loss)["eval_loss"]
    # When it trains for twenty epochs at lr 0.1
    training.train(model, (x, y), TrainConfig(lr=toy.DEFAULT_LR, epochs=20, batch_size=4), toy.loss)
    end = training.evaluate(model, (x, y), toy.loss)
    # Then the summed squared error falls, and float targets get no accuracy
    assert end["eval_loss"] < start and end["eval_loss"] < 0.5
    assert "eval_accuracy" not in end


def test_evaluate_counts_argmax_hits_for_class_indices() -> None:
    # Given a "model" that returns its inputs as scores, and targets that match 3 of 4 argmaxes
    scores = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 5.0]])
    targets = torch.tensor([0, 1, 0, 0])
    # When it is evaluated
    metrics = training.evaluate(nn.Identity(), (scores, targets))
    # Then accuracy is 3/4 and the loss is the mean cross-entropy
    assert metrics["eval_accuracy"] == pytest.approx(0.75)
    assert metrics["eval_loss"] == pytest.approx(F.cross_entropy(scores, targets).item(), rel=1e-6)


def test_a_loss_of_one_element_in_any_shape_is_reported_as_a_number() -> None:
    # Given a task whose loss comes back shaped (1, 1), which backward accepts
    torch.manual_seed(0)
    x, y = torch.randn(10, 2), torch.randn(10, 1)

    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction, target).reshape(1, 1)

    # When it trains at lr 0 (the model stays put)
    model = nn.Linear(2, 1)
    metrics = training.train(model, (x, y), TrainConfig(lr=0.0, batch_size=10), loss)
    # Then the reported loss is that one number
    assert metrics["train_loss"] == pytest.approx(F.mse_loss(model(x), y).item(), rel=1e-6)


def test_empty_data_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        training.train(nn.Linear(2, 1), (torch.empty(0, 2), torch.empty(0, 1)), TrainConfig())
