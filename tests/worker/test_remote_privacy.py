"""Attacks on the shard's privacy under --allow-get none (issue 8, points 1 to 4).

Each test is an attack that recovered private rows or labels exactly before the fix. It runs
first where --allow-get lets private data out ("all"), to show that the attack recovers the
shard's values, then under "none", where nothing of them may come out.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from fedmq.protocol.commands import Op
from fedmq.protocol.operands import Ref, TensorMeta, Value
from tests.worker.remote_rig import Worker, call, dataset, get, module, send
from fedmq.worker.remote import sizing


def _outcome_value(worker: Worker, *ops: Op) -> Value | str:
    """The last op's value, or the error kind that stopped the ops."""
    outcome = worker.run(*ops)
    if outcome.error is not None:
        return outcome.error.kind
    return outcome.values[len(ops) - 1]


# Point 1: taint follows storage. The attack trains a public tensor w on one private row (the
# gradient of -(x0 . w) is -x0, so one SGD step with lr 1 writes x0 into w), then fetches an
# alias of w made while w was still public.
ALIASES = {
    "detach": call("Tensor.detach", Ref(1), out=2),
    "view": call("Tensor.view", Ref(1), 8, 8, out=2),
    "slice": call("op.getitem", Ref(1), slice(0, 32, None), out=2),
    "reshape": call("Tensor.reshape", Ref(1), 64, out=2),
}


def _steal_row(worker: Worker, alias: Op, *, free_w: bool) -> Value | str:
    steps = [send(1, torch.zeros(64), requires_grad=True), alias, dataset(3, 4), call("op.getitem", Ref(3), 0, out=5),
             Op("optimizer", ("SGD", [Ref(1)]), {"lr": 1.0}, (6,)), call("op.mul", Ref(5), Ref(1), out=7),
             call("Tensor.sum", Ref(7), out=8), call("op.neg", Ref(8), out=9)]
    if free_w:  # the pointer to w is gone; the optimizer and the alias still hold its memory
        steps.append(Op("free", (1,)))
    return _outcome_value(worker, *steps, Op("backward", (Ref(9),)), Op("step", (Ref(6),)), get(2))


@pytest.mark.parametrize("free_w", [False, True], ids=["w-held", "w-freed"])
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_an_alias_of_a_trained_tensor_is_as_private_as_what_trained_it(alias: str, free_w: bool) -> None:
    # Given the attack works where private data may leave: the alias holds the shard's first row
    open_worker = Worker(allow_get="all")
    stolen = _steal_row(open_worker, ALIASES[alias], free_w=free_w)
    row = open_worker.shard[0][0]  # type: ignore[index]
    assert isinstance(stolen, torch.Tensor) and torch.equal(stolen.flatten(), row[:stolen.numel()])
    # When the same attack runs on a worker with --allow-get none
    worker = Worker(allow_get="none")
    outcome = _steal_row(worker, ALIASES[alias], free_w=free_w)
    # Then the alias is refused: no row comes out
    assert outcome == "permission"


def test_a_view_of_the_shard_made_by_a_module_stays_private() -> None:
    # Given a module that returns its input (Identity): its output is the shard's own memory
    worker = Worker(allow_get="derived")
    # When it runs on the shard and the client asks for the output
    outcome = _outcome_value(worker, dataset(1, 2), module(3, nn.Identity()), Op("forward", (Ref(3), Ref(1)), {}, (4,)),
                             get(4))
    # Then the output is private data, not a derived value: it is refused
    assert outcome == "permission"


# Point 2: a module that changes itself in forward. Embedding(max_norm) renormalises the rows it
# looks up, in eval mode too: fetching the module after a forward over private labels tells
# which labels occur (and, one example at a time, each example's label).
def _labels_seen(worker: Worker) -> Value | str:
    net = nn.Embedding(10, 1, max_norm=1.0)
    nn.init.constant_(net.weight, 100.0)
    net.eval()
    return _outcome_value(worker, dataset(1, 2), call("op.getitem", Ref(2), slice(0, 8, None), out=3), module(4, net),
                          Op("forward", (Ref(4), Ref(3)), {}, (5,)), get(4))


def test_a_module_that_renormalised_rows_over_private_labels_stays_behind() -> None:
    # Given the attack works where private data may leave: the renormalised rows are the labels
    open_worker = Worker(allow_get="all")
    weights = _labels_seen(open_worker)
    assert isinstance(weights, dict)
    touched = {int(i) for i in (weights["weight"].flatten() <= 1.0).nonzero().flatten()}
    assert touched == {int(label) for label in open_worker.shard[1][:8]}  # type: ignore[index]
    # When it runs under --allow-get none
    # Then the module cannot be fetched
    assert _labels_seen(Worker(allow_get="none")) == "permission"


def test_any_forward_over_private_inputs_taints_the_module_whatever_its_layers() -> None:
    # Given a plain linear model (nothing in it changes in forward) on a worker that lets nothing out
    worker = Worker(allow_get="none")
    # When it runs once on the shard
    outcome = _outcome_value(worker, dataset(1, 2), module(3, nn.Linear(64, 10)),
                             Op("forward", (Ref(3), Ref(1)), {}, (4,)), get(3))
    # Then it is held back all the same: what a forward writes is not guessed, it is assumed
    assert outcome == "permission"


# Point 3: torch's error text spells out values.
ERRORS = {
    "cross_entropy": [send(5, torch.zeros(8, 5)), call("op.getitem", Ref(2), slice(0, 8, None), out=6),
                      call("F.cross_entropy", Ref(5), Ref(6), out=7)],  # "Target 7 is out of bounds."
    "getitem": [send(5, torch.zeros(3)), call("op.getitem", Ref(5), Ref(2), out=7)],  # "index 6 is out of bounds"
    "gather": [send(5, torch.zeros(1, 3)), call("op.getitem", Ref(2), slice(0, 1, None), out=6),
               call("Tensor.unsqueeze", Ref(6), 0, out=8), call("Tensor.gather", Ref(5), 1, Ref(8), out=7)],
}


@pytest.mark.parametrize("attack", sorted(ERRORS))
def test_a_failure_on_private_values_is_neither_spelled_out_nor_told(attack: str) -> None:
    # Given ops that fail because of the values in private labels (indices out of range)
    ops = [dataset(1, 2), *ERRORS[attack]]
    # When they run where private data may leave, torch's text tells the offending value
    told = Worker(allow_get="all").error(*ops)
    assert "out of bounds" in told.reason or "out of range" in told.reason
    # And under --allow-get none
    worker = Worker(allow_get="none")
    outcome = worker.run(*ops, Op("meta", (Ref(7),)), get(7))
    # Then the batch runs on as if the op had worked (its result is a stand-in of the right
    # shape), and the result stays behind like any private value: no text, not even the failure
    assert outcome.error is not None and (outcome.error.op, outcome.error.kind) == ("get", "permission")
    assert isinstance(outcome.values[len(ops)], TensorMeta)


def test_where_derived_values_may_leave_a_failure_is_told_without_the_values() -> None:
    # Given a loss over private labels that fails (5 classes, labels up to 9), on a worker that
    # lets derived values out: whether it fails is derived from the labels, its text is not
    worker = Worker(allow_get="derived")
    # When it runs
    error = worker.error(dataset(1, 2), *ERRORS["cross_entropy"])
    # Then the failure is told, with the exception's type and nothing of torch's text
    assert error.op == "F.cross_entropy" and error.reason.startswith("IndexError (torch's message is withheld")
    assert "Target" not in error.reason and "bounds" not in error.reason


def _bisect_label(worker: Worker) -> list[bool]:
    """For C = 1..10, whether indexing a C-long table with the first label failed: the label is
    the first C for which it did not."""
    label = call("op.getitem", Ref(2), slice(0, 1, None), out=3)
    return [worker.run(dataset(1, 2), label, send(4, torch.zeros(classes)), call("op.getitem", Ref(4), Ref(3), out=5),
                       Op("free", (1, 2, 3, 4, 5))).error is not None for classes in range(1, 11)]


def test_whether_an_op_fails_on_private_values_does_not_tell_them() -> None:
    # Given the bisection works where private data may leave: it finds the first label
    label = int(Worker().shard[1][0])  # type: ignore[index]
    assert _bisect_label(Worker(allow_get="all")) == [classes <= label for classes in range(1, 11)]
    # When it runs under --allow-get none
    # Then no op fails: there is nothing to bisect
    assert _bisect_label(Worker(allow_get="none")) == [False] * 10


def test_a_failure_without_a_stand_in_tells_only_the_op_and_the_error_type() -> None:
    # Given a backward from a non-scalar tensor computed from private data (torch refuses it)
    worker = Worker(allow_get="none")
    error = worker.error(dataset(1, 2), send(3, torch.ones(64), requires_grad=True),
                         call("op.mul", Ref(1), Ref(3), out=4), Op("backward", (Ref(4),)))
    # Then the error names the op and the exception's type only
    assert error.op == "backward" and error.reason.startswith("RuntimeError (torch's message is withheld")


# Point 4: data-dependent shapes. Each attack makes a tensor whose shape would encode private
# values (a count of labels equal to 3, the first label as a length), to read it with `meta`.
SHAPES = {
    "masked_select": [call("op.eq", Ref(2), 3, out=3), call("Tensor.masked_select", Ref(2), Ref(3), out=9)],
    "bool-index": [call("op.eq", Ref(2), 3, out=3), call("op.getitem", Ref(1), Ref(3), out=9)],
    "bool-index-in-tuple": [call("op.gt", Ref(1), 0.5, out=3),
                            call("op.getitem", Ref(1), (Ref(3),), out=9)],
    "where-one-argument": [call("op.eq", Ref(2), 3, out=3), call("torch.where", Ref(3), out=9)],
    "zeros-of-a-label": [call("op.getitem", Ref(2), 0, out=3), call("torch.zeros", Ref(3), out=9)],
    "arange-to-a-label": [call("op.getitem", Ref(2), 0, out=3), call("torch.arange", Ref(3), out=9)],
    "narrow-by-a-label": [call("op.getitem", Ref(2), 0, out=3), call("Tensor.narrow", Ref(2), 0, 0, Ref(3), out=9)],
    "repeat-by-a-label": [call("op.getitem", Ref(2), 0, out=3), call("Tensor.repeat", Ref(2), Ref(3), out=9)],
}


@pytest.mark.parametrize("attack", sorted(SHAPES))
def test_no_shape_encodes_private_values(attack: str) -> None:
    # Given a worker that lets nothing out, and an op whose result's shape would follow private values
    worker = Worker(allow_get="none")
    # When the attack runs and asks for the result's shape
    outcome = worker.run(dataset(1, 2), *SHAPES[attack], Op("meta", (Ref(9),)))
    # Then the op is refused (as a permission or as unsizable), and no shape is answered
    assert outcome.error is not None and outcome.error.kind in ("permission", "refused")
    assert outcome.error.op == SHAPES[attack][-1].name and 9 not in worker.session.objects
    assert not any(isinstance(value, TensorMeta) for value in outcome.values.values())


def test_a_public_mask_over_private_data_is_allowed_and_its_shape_is_the_masks() -> None:
    # Given the client's own mask: its count is the client's to know
    worker = Worker(allow_get="none")
    mask = torch.zeros(64, dtype=torch.bool)
    mask[:5] = True
    # When it selects from a private row and asks for the shape
    shape = worker.value(dataset(1, 2), call("op.getitem", Ref(1), 0, out=3), send(4, mask),
                         call("Tensor.masked_select", Ref(3), Ref(4), out=5), Op("meta", (Ref(5),)))
    # Then the selection runs, its shape is the mask's count, and its values stay behind
    assert isinstance(shape, TensorMeta) and shape.shape == (5,)
    assert worker.error(get(5)).kind == "permission"


@pytest.mark.parametrize("mask", [call("op.eq", Ref(2), 3, out=3), call("Tensor.bool", Ref(2), out=3)],
                         ids=["derived-mask", "private-mask"])
def test_a_mask_from_private_data_selects_where_derived_values_may_leave(mask: Op) -> None:
    # Given a worker that lets derived values out: a count of labels is derived, whether the
    # mask is computed from them (== 3) or is them (nonzero labels)
    worker = Worker(allow_get="derived")
    labels = worker.shard[1]  # type: ignore[index]
    selected = labels == 3 if mask.name == "op.eq" else labels.bool()
    # When the mask selects from the client's own tensor
    shape = worker.value(dataset(1, 2), mask, send(4, torch.ones(len(labels))),
                         call("Tensor.masked_select", Ref(4), Ref(3), out=5), Op("meta", (Ref(5),)))
    # Then the selection runs and its length is the count
    assert isinstance(shape, TensorMeta) and shape.shape == (int(selected.sum()),)


def test_a_result_whose_shape_was_not_predicted_is_refused_when_its_operands_are_private(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given sizing that mispredicts a shape, as it would for an op whose shape follows values
    # and that nobody knew of
    real = sizing.size_call

    def mispredicted(name: str, *args: Any) -> sizing.Size:  # noqa: ANN401
        size = real(name, *args)
        return sizing.Size(nbytes=size.nbytes, outputs=[(torch.Size([1]), dtype) for _, dtype in size.outputs or []])
    monkeypatch.setattr(sizing, "size_call", mispredicted)
    worker = Worker(allow_get="none")
    # When such an op runs on private data, and on the client's own
    private = worker.error(dataset(1, 2), call("Tensor.exp", Ref(1), out=3))
    public = worker.value(send(4, torch.zeros(3)), call("Tensor.exp", Ref(4), out=5), get(5))
    # Then the first is refused, its result not kept; the second runs
    assert private.kind == "refused" and "not the one its operands' shapes predict" in private.reason
    assert 3 not in worker.session.objects
    assert isinstance(public, torch.Tensor) and torch.equal(public, torch.ones(3))


def test_one_hot_labels_are_as_private_as_the_labels() -> None:
    # Given a worker that lets derived values out, but not the raw shard
    worker = Worker(allow_get="derived")
    # When the client re-encodes the private labels one-hot (which loses nothing of them)
    error = worker.error(dataset(1, 2), call("F.one_hot", Ref(2), 10, out=3), get(3))
    # Then they are refused like the labels themselves
    assert error.kind == "permission" and "it is private data" in error.reason
