"""Fuzzing --allow-get none as non-interference: what a client sees must not depend on the shard.

Random programs of remote ops (aliases of trained tensors, masks and selections over private
data, tensors used as sizes, ops that fail on private indices, modules that change themselves,
training steps, and many get/meta/info observations) run twice, on two workers whose shards
have the same shapes and label range but different rows. Under --allow-get none everything that
comes back to the client, fetched values, shapes, store sizes, error kinds and messages, must be
the same in both runs: any difference is a private value that got out. Switching each of issue
8's fixes off makes programs differ (of the first 48 seeds): taint following storage 16, a forward
tainting its module 4, stand-ins for failures on private values 2, refusing selections by a
private mask 14.

FEDMQ_FUZZ_SCALE multiplies the number of programs (benchmarks/fuzz.py runs longer campaigns).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from fedmq.protocol.commands import Op
from fedmq.protocol.operands import Arg, ModuleSpec, Ref, Value
from tests.fuzz.live import SCALE
from tests.worker.remote_rig import Worker
from fedmq.worker.remote.layers import describe
from fedmq.worker.task import ShardSpec, load_task

PROGRAMS, ACTIONS = 24 * SCALE, 40
Shape = tuple[int, ...]


@dataclass
class Program:
    """Batches of ops, drawn from a seed alone: the same whatever the worker answers."""

    rng: random.Random
    rows: int
    batches: list[list[Op]] = field(default_factory=list)
    tensors: dict[int, tuple[Shape, str]] = field(default_factory=dict)  # id -> (shape, "f"/"l"/"b")
    modules: dict[int, str] = field(default_factory=dict)  # id -> what it takes: "rows" or "labels"
    trainable: list[int] = field(default_factory=list)
    aliases: list[int] = field(default_factory=list)  # views of trainable tensors: what a step writes into
    next_id: int = 3  # 1 and 2: the shard's inputs and targets

    def new(self, shape: Shape | None = None, kind: str = "f") -> int:
        self.next_id += 1
        if shape is not None:
            self.tensors[self.next_id] = (shape, kind)
        return self.next_id

    def pick(self, kind: str | None = None, ndim: int | None = None) -> tuple[int, Shape]:
        found = [(i, shape) for i, (shape, k) in self.tensors.items()
                 if (kind is None or k == kind) and (ndim is None or len(shape) == ndim)]
        return self.rng.choice(found) if found else (1, (self.rows, 64))

    def op(self, name: str, *args: object, shape: Shape | None = None, kind: str = "f", **kwargs: object) -> int:
        out = self.new(shape, kind)
        self.batches.append([Op(name, args, kwargs, (out,))])  # type: ignore[arg-type]
        return out


def _literal(program: Program, shape: Shape) -> torch.Tensor:
    generator = torch.Generator().manual_seed(program.rng.randrange(1 << 30))
    return torch.randn(shape, generator=generator)


def _private(p: Program) -> None:
    i, k = p.rng.randrange(p.rows - 8), p.rng.randint(2, 8)
    choice = p.rng.randrange(4)
    if choice == 0:
        p.op("op.getitem", Ref(1), slice(i, i + k, None), shape=(k, 64))
    elif choice == 1:
        p.op("op.getitem", Ref(1), i, shape=(64,))
    elif choice == 2:
        p.op("op.getitem", Ref(2), i, shape=(), kind="l")
    else:
        p.op("op.getitem", Ref(2), slice(i, i + k, None), shape=(k,), kind="l")


def _send(p: Program) -> None:
    shape: Shape = p.rng.choice([(64,), (p.rng.randint(2, 8), 64)])
    grad = p.rng.random() < 0.5
    out = p.op("send", _literal(p, shape), shape=shape, requires_grad=grad)
    if grad:
        p.trainable.append(out)


def _alias(p: Program) -> None:
    i, shape = p.pick()
    if p.trainable and p.rng.random() < 0.5:
        i = p.rng.choice(p.trainable)
        shape = p.tensors[i][0]
    numel = 1
    for size in shape:
        numel *= size
    name, args, result = p.rng.choice([
        ("Tensor.detach", (), shape), ("Tensor.view", (-1,), (numel,)), ("Tensor.reshape", (numel,), (numel,)),
        ("Tensor.flatten", (), (numel,)), ("Tensor.contiguous", (), shape), ("Tensor.float", (), shape)])
    out = p.op(name, Ref(i), *args, shape=result, kind=p.tensors.get(i, ((), "f"))[1])
    if i in p.trainable:
        p.aliases.append(out)


def _math(p: Program) -> None:
    i, shape = p.pick("f")
    same = [j for j, (s, k) in p.tensors.items() if s == shape and k == "f"] or [i]
    name = p.rng.choice(["op.add", "op.mul", "op.sub", "Tensor.max", "torch.maximum"])
    if p.rng.random() < 0.3:
        p.op(p.rng.choice(["Tensor.sigmoid", "Tensor.exp", "Tensor.abs"]), Ref(i), shape=shape)
    else:
        p.op(name, Ref(i), Ref(p.rng.choice(same)), shape=shape)


def _reduce(p: Program) -> None:
    i, _ = p.pick()
    p.op(p.rng.choice(["Tensor.sum", "Tensor.amax", "Tensor.float"]), Ref(i), shape=(), kind="f")


def _mask(p: Program) -> None:
    if p.rng.random() < 0.5:
        i, shape = p.pick("f")
        p.op("op.gt", Ref(i), p.rng.choice([0.1, 0.3, 0.5]), shape=shape, kind="b")
    else:
        i, shape = p.pick("l")
        p.op("op.eq", Ref(i), p.rng.randrange(10), shape=shape, kind="b")


def _select(p: Program) -> None:
    mask, shape = p.pick("b")
    source = [j for j, (s, k) in p.tensors.items() if s == shape and k != "b"] or [2]
    name = p.rng.choice(["Tensor.masked_select", "op.getitem", "torch.where"])
    if name == "torch.where":
        p.op(name, Ref(mask), shape=None)
    else:
        p.op(name, Ref(p.rng.choice(source)), Ref(mask), shape=None)


def _size_from_value(p: Program) -> None:
    scalar, _ = p.pick("l", ndim=0)
    i, _ = p.pick(ndim=1)
    name, *args = p.rng.choice([("torch.zeros", Ref(scalar)), ("torch.arange", Ref(scalar)),
                                ("Tensor.repeat", Ref(i), Ref(scalar)), ("Tensor.narrow", Ref(i), 0, 0, Ref(scalar))])
    p.op(str(name), *args)


def _out_of_bounds(p: Program) -> None:
    labels, shape = p.pick("l", ndim=1)
    classes = p.rng.randint(3, 12)
    logits = p.op("send", torch.zeros(shape[0], classes), shape=(shape[0], classes))
    if p.rng.random() < 0.5:
        p.op("F.cross_entropy", Ref(logits), Ref(labels), shape=())
    else:
        table = p.op("send", torch.zeros(classes), shape=(classes,))
        p.op("op.getitem", Ref(table), Ref(labels), shape=shape)


def _module(p: Program) -> None:
    embedding = nn.Embedding(10, 2, max_norm=1.0)
    nn.init.constant_(embedding.weight, 5.0)  # every row it looks up is renormalised: which, tells the labels
    net, takes = p.rng.choice([(nn.Linear(64, 3), "rows"), (nn.BatchNorm1d(64), "rows"), (nn.Identity(), "rows"),
                               (nn.Sequential(nn.Linear(64, 4), nn.ReLU()), "rows"), (embedding, "labels")])
    net.train(p.rng.random() < 0.5)
    out = p.new()
    p.modules[out] = takes
    p.batches.append([Op("module", (ModuleSpec(describe(net), net.state_dict()),), {}, (out,))])


def _forward(p: Program) -> None:
    if not p.modules:
        return _module(p)
    net = p.rng.choice(list(p.modules))
    i, _ = p.pick("l", ndim=1) if p.modules[net] == "labels" else p.pick("f", ndim=2)
    p.op("forward", Ref(net), Ref(i), shape=None)
    return None


def _train(p: Program, w: int | None = None) -> None:
    """One SGD step on a trainable tensor (`w` if given) or a module, from a loss over private rows."""
    row = p.op("op.getitem", Ref(1), p.rng.randrange(p.rows), shape=(64,))
    if w is not None or (p.trainable and p.rng.random() < 0.5):
        w = w if w is not None else p.rng.choice(p.trainable)
        target: list[Arg] = [Ref(w)]
        loss = [Op("op.mul", (Ref(row), Ref(w)), {}, (p.new(),))]
    elif p.modules:
        net = p.rng.choice(list(p.modules))
        target = [Ref(net)]
        loss = [Op("forward", (Ref(net), Ref(1)), {}, (p.new(),))]
    else:
        return
    opt = p.new()
    loss += [Op("Tensor.sum", (Ref(loss[-1].outs[0]),), {}, (p.new(),)), Op("op.neg", (Ref(p.next_id),), {}, (p.new(),))]
    p.batches.append([Op("optimizer", ("SGD", target), {"lr": p.rng.choice([0.5, 1.0])}, (opt,)), *loss,
                      Op("backward", (Ref(p.next_id),)), Op("step", (Ref(opt),))])


def _alias_then_train(p: Program) -> None:
    """The alias class whole: a view of a trainable tensor, a step on private data, a look at the view."""
    if not p.trainable:
        return _send(p)
    w = p.rng.choice(p.trainable)
    numel = 1
    for size in p.tensors[w][0]:
        numel *= size
    name, args = p.rng.choice([("Tensor.detach", ()), ("Tensor.view", (-1,)), ("Tensor.reshape", (numel,)),
                               ("op.getitem", (slice(0, 1, None),))])
    alias = p.op(name, Ref(w), *args, shape=None)
    _train(p, w)
    p.batches.append([Op(p.rng.choice(["get", "meta"]), (Ref(alias),))])
    return None


def _forward_then_look(p: Program) -> None:
    """The self-changing module class whole: a fresh module, a forward on private data, a look at it."""
    _module(p)
    net = p.next_id
    i, _ = p.pick("l", ndim=1) if p.modules[net] == "labels" else p.pick("f", ndim=2)
    p.op("forward", Ref(net), Ref(i), shape=None)
    p.batches.append([Op("get", (Ref(net),))])


def _observe(p: Program) -> None:
    ids = p.aliases if p.aliases and p.rng.random() < 0.5 else [1, 2, *p.tensors, *p.modules]
    what = p.rng.choice(["get", "get", "meta", "info"])
    p.batches.append([Op("info")] if what == "info" else [Op(what, (Ref(p.rng.choice(ids)),))])


ACTIONS_TABLE = [(_private, 3), (_send, 2), (_alias, 3), (_math, 3), (_reduce, 2), (_mask, 2), (_select, 2),
                 (_size_from_value, 1), (_out_of_bounds, 1), (_module, 1), (_forward, 2), (_train, 3), (_alias_then_train, 2),
                 (_forward_then_look, 1), (_observe, 8)]


def draw(seed: int, rows: int) -> Program:
    torch.manual_seed(seed)  # the modules' initial weights: a failing seed replays exactly
    program = Program(random.Random(seed), rows)
    program.batches.append([Op("dataset", (), {}, (1, 2))])
    program.tensors.update({1: ((rows, 64), "f"), 2: ((rows,), "l")})
    actions, weights = zip(*ACTIONS_TABLE, strict=True)
    for _ in range(ACTIONS):
        program.rng.choices(actions, weights)[0](program)
    return program


def _seen(value: Value) -> object:
    """What the client sees of a value, comparable with ==."""
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), tuple(value.shape), value.tolist())
    if isinstance(value, dict):
        return sorted((key, _seen(item)) for key, item in value.items())
    return repr(value)


def transcript(worker: Worker, program: Program, seed: int) -> tuple[list[object], Counter[str]]:
    torch.manual_seed(seed)
    seen: list[object] = []
    kinds: Counter[str] = Counter()
    for batch in program.batches:
        outcome = worker.run(*batch)
        error = outcome.error
        seen.append(([(i, _seen(v)) for i, v in sorted(outcome.values.items())],
                     None if error is None else (error.index, error.op, error.kind, error.reason)))
        kinds[error.kind if error else "ok"] += 1
        if error is None and batch[0].name == "get":
            kinds["fetched"] += 1
    return seen, kinds


@pytest.fixture(scope="module")
def shards() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    digits = load_task("digits")
    first, second = digits.load_shard(ShardSpec(1, 4)), digits.load_shard(ShardSpec(2, 4))
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert first[0].shape == second[0].shape and not torch.equal(first[0], second[0])
    assert first[1].unique().tolist() == second[1].unique().tolist() == list(range(10))
    return first, second


@pytest.mark.parametrize("seed", range(PROGRAMS))
def test_under_allow_get_none_nothing_the_client_sees_depends_on_the_shard(
        seed: int, shards: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
    # Given two workers with --allow-get none whose shards differ only in their values
    first, second = shards
    program = draw(seed, len(first[1]))
    # When the same random program runs on both
    seen_first, kinds = transcript(Worker(allow_get="none", shard=first), program, seed)
    seen_second, _ = transcript(Worker(allow_get="none", shard=second), program, seed)
    # Then the client saw exactly the same things: values, shapes, sizes, errors and their text
    for index, (a, b) in enumerate(zip(seen_first, seen_second, strict=True)):
        assert a == b, f"seed {seed}, batch {index} ({program.batches[index][0].name}) differs between shards"
    # And the program did something: some batches worked, some were refused
    assert kinds["ok"] > 0 and kinds["permission"] + kinds["refused"] > 0, kinds
