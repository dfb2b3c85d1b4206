"""The default train and evaluate read any dataset a PyTorch user has: pairs, Datasets, DataLoaders."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import TrainConfig, TrainTask, decode_message, encode_message
from fedmq.worker import training
from fedmq.worker.data import size
from fedmq.worker.task import ShardSpec, Task, load_task


class Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A user's own map-style Dataset: rows of a pair, one at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def _digits() -> tuple[Task, nn.Module, torch.Tensor, torch.Tensor]:
    task = load_task("digits")
    x, y = task.load_shard(ShardSpec(0, 3))  # type: ignore[misc]
    torch.manual_seed(0)
    return task, task.build_model(), x, y


@pytest.mark.parametrize("wrap", [
    lambda x, y: TensorDataset(x, y),
    lambda x, y: Rows(x, y),
    lambda x, y: DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(0)),
], ids=["TensorDataset", "custom Dataset", "DataLoader"])
def test_default_train_learns_from_datasets_and_loaders(wrap) -> None:  # type: ignore[no-untyped-def]
    # Given the digits shard wrapped as a PyTorch user would hand it over
    task, model, x, y = _digits()
    dataset = wrap(x, y)
    before = task.evaluate(model, dataset)
    # When the task trains on it with the default trainer for ten epochs
    metrics = task.train(model, dataset, TrainConfig(lr=0.1, epochs=10, batch_size=32, seed=1))
    after = task.evaluate(model, dataset)
    # Then it learns, reports losses, counts every example, and evaluation matches the pair form
    assert after["eval_loss"] < 0.5 * before["eval_loss"] and after["eval_accuracy"] > 0.8
    assert metrics["train_loss"] < before["eval_loss"]
    assert task.num_examples(dataset) == len(y) == size(dataset)
    assert after["eval_loss"] == pytest.approx(task.evaluate(model, (x, y))["eval_loss"], rel=1e-5)


def test_a_dataset_is_shuffled_by_the_rounds_seed() -> None:
    # Given three copies of one model and the shard as a TensorDataset
    _, model, x, y = _digits()
    twin, other = copy.deepcopy(model), copy.deepcopy(model)
    dataset = TensorDataset(x, y)
    # When two train with seed 3 and one with seed 4
    for m, seed in ((model, 3), (twin, 3), (other, 4)):
        training.train(m, dataset, TrainConfig(lr=0.1, batch_size=16, seed=seed))
    # Then the seed-3 runs agree exactly and the seed-4 run differs
    assert torch.equal(model.state_dict()["0.weight"], twin.state_dict()["0.weight"])
    assert not torch.equal(model.state_dict()["0.weight"], other.state_dict()["0.weight"])


def test_items_that_are_not_pairs_are_refused_with_the_contract() -> None:
    # Given a dataset whose items are bare inputs
    task, model, x, _ = _digits()
    # When the default trainer reads it, then the error states what items must be
    with pytest.raises(TaskError, match=r"\(input, target\)"):
        task.train(model, TensorDataset(x), TrainConfig())
    with pytest.raises(TaskError, match="torch Dataset"):
        task.train(model, {"x": x}, TrainConfig())


def test_proximal_mu_keeps_local_weights_near_the_global_ones() -> None:
    # Given two copies of one model
    _, model, x, y = _digits()
    start = copy.deepcopy(model)
    prox = copy.deepcopy(model)
    # When one trains plainly and one with FedProx's proximal term mu = 1
    training.train(model, (x, y), TrainConfig(lr=0.1, epochs=3, seed=2))
    training.train(prox, (x, y), TrainConfig(lr=0.1, epochs=3, seed=2, options={"proximal_mu": 1.0}))
    # Then the proximal run moves strictly less far from the start
    def drift(m: nn.Module) -> float:
        return sum(float(((p.detach() - q.detach()) ** 2).sum()) for p, q in zip(m.parameters(), start.parameters(), strict=True))
    assert 0 < drift(prox) < drift(model)


def test_options_travel_in_a_train_task() -> None:
    # Given a train task whose config carries a strategy's options
    config = TrainConfig(lr=0.1, seed=5, options={"proximal_mu": 0.01, "clip": 1, "mode": "x", "on": True})
    task = TrainTask(job="job", round=1, task_id="t1", weights={"w": torch.zeros(2)}, config=config)
    # When it crosses the wire, then the options arrive unchanged
    decoded = decode_message(encode_message(task))
    assert isinstance(decoded, TrainTask) and decoded.config == config
