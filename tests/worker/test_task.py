"""Tasks: shard specs, the built-in toy and digits tasks, and user modules named by dotted path."""

import sys
from pathlib import Path

import pytest
import torch

from fedmq.protocol.errors import TaskError
from fedmq.protocol.messages import TrainConfig
from fedmq.worker.task import ShardSpec, load_task
from fedmq.worker.tasks import digits

DIGITS_TOTAL, DIGITS_TEST = 1797, 360


# ShardSpec


@pytest.mark.parametrize(("text", "expected"), [
    ("0/4", ShardSpec(0, 4, "iid")),
    ("3/4", ShardSpec(3, 4, "iid")),
    (" 1 / 2 ", ShardSpec(1, 2, "iid")),
    ("0/1", ShardSpec(0, 1, "iid")),
])
def test_shard_spec_parses_i_of_n(text: str, expected: ShardSpec) -> None:
    # When a shard is parsed
    # Then it holds the index and count written, with the default partition
    assert ShardSpec.parse(text) == expected


def test_shard_spec_keeps_the_partition() -> None:
    assert ShardSpec.parse("1/3", partition="label") == ShardSpec(1, 3, "label")


@pytest.mark.parametrize(("text", "partition", "message"), [
    ("4/4", "iid", "out of range"),
    ("7/3", "iid", "use 0 to 2"),
    ("0/0", "iid", "at least 1"),
    ("-1/4", "iid", "i/n"),
    ("1", "iid", "i/n"),
    ("a/b", "iid", "i/n"),
    ("", "iid", "i/n"),
    ("0/2", "random", "not one of iid, label"),
])
def test_shard_spec_rejects_bad_input_saying_why(text: str, partition: str, message: str) -> None:
    # When a malformed or impossible shard is parsed
    # Then a ValueError says what is wrong
    with pytest.raises(ValueError, match=message):
        ShardSpec.parse(text, partition=partition)


# The toy task


def test_toy_shards_are_bobs_and_alices_halves() -> None:
    # Given the toy task
    toy = load_task("toy")
    # When it is cut in two
    bob_x, bob_y = toy.load_shard(ShardSpec(0, 2))  # type: ignore[misc]
    alice_x, alice_y = toy.load_shard(ShardSpec(1, 2))  # type: ignore[misc]
    # Then bob holds the first two rows and alice the last two, as in the tutorial
    assert bob_x.tolist() == [[0, 0], [0, 1]] and bob_y.tolist() == [[0], [0]]
    assert alice_x.tolist() == [[1, 0], [1, 1]] and alice_y.tolist() == [[1], [1]]
    assert bob_y.dtype == torch.float32


def test_toy_has_the_tutorial_lr_and_no_test_split() -> None:
    toy = load_task("toy")
    assert toy.default_lr == pytest.approx(0.1)
    assert not toy.has_test_split
    with pytest.raises(TaskError, match="no test split"):
        toy.load_test()


def test_toy_model_is_one_linear_layer() -> None:
    model = load_task("toy").build_model()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {"weight": [1, 2], "bias": [1]}


# The digits task


@pytest.mark.parametrize("partition", ["iid", "label"])
def test_digits_shards_partition_the_training_split_exactly(partition: str) -> None:
    # Given the digits training split cut into three shards
    _, labels, _, _ = digits._split()
    rows = [digits.shard_rows(labels, ShardSpec(i, 3, partition)) for i in range(3)]
    # Then together they hold every training row exactly once
    together = torch.cat(rows)
    assert len(together) == DIGITS_TOTAL - DIGITS_TEST
    assert torch.equal(together.sort().values, torch.arange(DIGITS_TOTAL - DIGITS_TEST))


def test_digits_test_split_is_held_out_of_every_shard() -> None:
    # Given the digits task, its test split and all rows of four shards
    task = load_task("digits")
    test_x, test_y = task.load_test()  # type: ignore[misc]
    shards = [task.load_shard(ShardSpec(i, 4))[0] for i in range(4)]  # type: ignore[index]
    shard_rows = {row.numpy().tobytes() for x in shards for row in x}
    # Then the test split is a fifth of the data, stratified, and no test image is in a shard
    assert len(test_x) == DIGITS_TEST and len(shard_rows) == DIGITS_TOTAL - DIGITS_TEST
    assert not shard_rows & {row.numpy().tobytes() for row in test_x}
    assert torch.bincount(test_y).min() >= 35  # stratified: every digit is in the test split
    assert test_x.dtype == torch.float32 and test_y.dtype == torch.int64
    assert 0 <= test_x.min() and test_x.max() == 1  # scaled by 1/16


def test_digits_iid_shards_hold_every_digit_and_label_shards_about_two() -> None:
    # Given five IID shards and five label shards of digits
    task = load_task("digits")

    def label_counts(spec: ShardSpec) -> torch.Tensor:  # rows per digit, most common first
        labels = task.load_shard(spec)[1]  # type: ignore[index]
        return torch.bincount(labels, minlength=10).sort(descending=True).values

    iid = [label_counts(ShardSpec(i, 5, "iid")) for i in range(5)]
    label = [label_counts(ShardSpec(i, 5, "label")) for i in range(5)]
    # Then every IID shard holds all ten digits, about evenly
    assert all(bool((counts > 0).all()) and counts[:2].sum() < 0.3 * counts.sum() for counts in iid)
    # And in every label shard two digits make up at least 95% of the rows (the cut's edges
    # may add a few rows of a third or fourth digit)
    assert all(counts[:2].sum() >= 0.95 * counts.sum() for counts in label), label
    assert all((counts > 0).sum() <= 5 for counts in label), label


def test_digits_shards_are_the_same_on_every_call() -> None:
    task = load_task("digits")
    first_x, first_y = task.load_shard(ShardSpec(1, 3, "label"))  # type: ignore[misc]
    again_x, again_y = task.load_shard(ShardSpec(1, 3, "label"))  # type: ignore[misc]
    assert torch.equal(first_x, again_x) and torch.equal(first_y, again_y)


def test_digits_label_cut_needs_two_rows_per_worker() -> None:
    with pytest.raises(TaskError, match="label shards"):
        load_task("digits").load_shard(ShardSpec(0, 1000, "label"))


def test_digits_model_is_a_64_64_10_mlp() -> None:
    model = load_task("digits").build_model()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"0.weight": [64, 64], "0.bias": [64], "2.weight": [10, 64], "2.bias": [10]}


# User modules


def test_a_user_module_loads_by_dotted_path_with_its_loss_and_lr() -> None:
    # Given the sample user module, which defines loss = MSE and no train()
    task = load_task("tests.worker.sample_task")
    shard = task.load_shard(ShardSpec(0, 4))
    model = task.build_model()
    x, y = shard  # type: ignore[misc]
    expected = torch.nn.functional.mse_loss(model(x), y).item()
    # When the default train runs with a learning rate of zero (the model does not move)
    metrics = task.train(model, shard, TrainConfig(lr=0.0, batch_size=64))
    # Then the reported loss is the module's MSE, not cross-entropy
    assert metrics["train_loss"] == pytest.approx(expected)
    assert task.num_examples(shard) == 4
    assert task.has_test_split and task.default_lr == pytest.approx(0.02)
    assert task.name == "tests.worker.sample_task"


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_a_module_without_build_model_is_a_task_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a module that defines only load_shard
    name = _module(tmp_path, monkeypatch, "no_model_task", "def load_shard(spec):\n    return []\n")
    # When it is loaded as a task
    # Then TaskError names what is missing
    with pytest.raises(TaskError, match="must define build_model"):
        load_task(name)


def test_an_unknown_task_is_a_task_error_naming_the_built_ins() -> None:
    with pytest.raises(TaskError, match="built-in tasks are toy, digits"):
        load_task("no.such.module_here")


def test_a_module_whose_import_fails_reports_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a module that imports a package that is not installed
    name = _module(tmp_path, monkeypatch, "needs_missing_dep", "import fedmq_missing_dependency\n")
    # Then the TaskError names the missing dependency, not the task module
    with pytest.raises(TaskError, match="fedmq_missing_dependency"):
        load_task(name)


CUSTOM = '''
import torch
from torch import nn

def build_model():
    return nn.Linear(3, 1)

def load_shard(spec):
    return [{"x": torch.ones(3)} for _ in range(5)]  # not a pair: the module trains it itself

def train(model, dataset, config):
    with torch.no_grad():
        model.bias.add_(config.lr)
    return {"train_loss": torch.tensor(0.25), "steps": len(dataset)}

def evaluate(model, dataset):
    return {"eval_loss": "bad"}
'''


def test_a_module_with_its_own_train_gets_it_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a module with its own train over a list dataset
    task = load_task(_module(tmp_path, monkeypatch, "custom_train_task", CUSTOM))
    model = task.build_model()
    dataset = task.load_shard(ShardSpec(0, 1))
    before = model.bias.item()
    # When fedmq trains through the task
    metrics = task.train(model, dataset, TrainConfig(lr=0.5))
    # Then the module's train ran, its metrics came back as floats, and len(dataset) counts examples
    assert model.bias.item() == pytest.approx(before + 0.5)
    assert metrics == {"train_loss": 0.25, "steps": 5.0}
    assert task.num_examples(dataset) == 5
    # And metrics that are not numbers are a TaskError
    with pytest.raises(TaskError, match="eval_loss"):
        task.evaluate(model, dataset)


def test_the_default_train_needs_a_pair_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a module without train whose shard is not an (inputs, targets) pair
    source = ("from torch import nn\n"
              "def build_model():\n    return nn.Linear(1, 1)\n"
              "def load_shard(spec):\n    return [1, 2, 3]\n")
    task = load_task(_module(tmp_path, monkeypatch, "not_a_pair_task", source))
    # Then training says the dataset must be a pair
    with pytest.raises(TaskError, match=r"pair \(inputs, targets\)"):
        task.train(task.build_model(), task.load_shard(ShardSpec(0, 1)), TrainConfig())
