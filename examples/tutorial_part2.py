"""PySyft's "Part 2: Intro to Federated Learning", step by step, with fedmq.

    python examples/tutorial_part2.py                  # bob and alice in this process
    python examples/tutorial_part2.py --broker amqp://guest:guest@127.0.0.1:5672/

With --broker, bob and alice are `fedmq worker` processes, started first:

    fedmq worker --id bob --task toy --shard 0/2
    fedmq worker --id alice --task toy --shard 1/2

1. The toy model trained the normal way, all data here.
2. bob and alice each hold half the data. The model goes to each in turn, trains there, and
   comes back; only the model and the loss leave the workers.
3. The ending the tutorial proposes: both train from the same start at the same time, and the
   two models are averaged, weighted by their number of examples.

The losses of 2 and 3 are checked against the same loops run here from the same initial
weights: they must agree within 1e-6 (the exit code is 1 if they do not).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedmq.coordinator import Federation, RemoteModule, RemoteTensor, RemoteWorkerHandle

LR = 0.1
TOLERANCE = 1e-6
Pair = tuple[torch.Tensor, torch.Tensor]
Log = Callable[[str], None]


def toy_data() -> Pair:
    """The tutorial's four points and their targets."""
    data = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1.0]])  # (4, 2)
    target = torch.tensor([[0], [0], [1], [1.0]])  # (4, 1)
    return data, target


def fresh_model(initial: dict[str, torch.Tensor]) -> nn.Module:
    model = nn.Linear(2, 1)
    model.load_state_dict(initial)
    return model


def sgd_step(model: nn.Module, data: torch.Tensor, target: torch.Tensor) -> float:
    """One step of the tutorial's training logic, here; the loss before the step."""
    opt = torch.optim.SGD(params=model.parameters(), lr=LR)
    opt.zero_grad()  # 1) erase previous gradients
    pred = model(data)  # 2) make a prediction
    loss = ((pred - target) ** 2).sum()  # 3) calculate how much we missed
    loss.backward()  # 4) figure out which weights caused it
    opt.step()  # 5) change those weights
    return float(loss.item())


def centralized(initial: dict[str, torch.Tensor], iterations: int, log: Log) -> list[float]:
    """Part 1: the normal way, every example here."""
    data, target = toy_data()
    model = fresh_model(initial)
    losses = [sgd_step(model, data, target) for _ in range(iterations)]
    for loss in losses:
        log(f"  loss {loss:.6f}")
    return losses


def send_halves(workers: Sequence[RemoteWorkerHandle]) -> list[tuple[RemoteTensor, RemoteTensor]]:
    """Send each worker its part of the data; we keep only pointers."""
    data, target = toy_data()
    halves = zip(data.tensor_split(len(workers)), target.tensor_split(len(workers)), strict=True)
    return [(worker.send(x), worker.send(y)) for worker, (x, y) in zip(workers, halves, strict=True)]


def federated(workers: Sequence[RemoteWorkerHandle], initial: dict[str, torch.Tensor], iterations: int,
              log: Log) -> list[float]:
    """Part 2: send half the data to each worker; the model visits them in turn."""
    datasets = send_halves(workers)
    model = fresh_model(initial)
    losses = []
    for _ in range(iterations):
        for x, y in datasets:
            worker = x.location
            remote_model = worker.send(model)  # send the model to the worker that holds the data
            opt = worker.optimizer(torch.optim.SGD, remote_model, lr=LR)
            opt.zero_grad()
            pred = remote_model(x)
            loss = ((pred - y) ** 2).sum()
            loss.backward()
            opt.step()
            model = remote_model.get()  # get the model back (the data stays)
            losses.append(loss.get().item())
            log(f"  {worker.name:>5}: loss {losses[-1]:.6f}")
    return losses


def federated_here(parts: int, initial: dict[str, torch.Tensor], iterations: int) -> list[float]:
    """Part 2's loop run here: the same steps on the same halves, in the same order."""
    data, target = toy_data()
    halves = list(zip(data.tensor_split(parts), target.tensor_split(parts), strict=True))
    model = fresh_model(initial)
    return [sgd_step(model, x, y) for _ in range(iterations) for x, y in halves]


def averaged(workers: Sequence[RemoteWorkerHandle], initial: dict[str, torch.Tensor], rounds: int,
             log: Log) -> list[float]:
    """Part 3: every worker trains from the same start at once; the models are averaged."""
    datasets = send_halves(workers)
    model = fresh_model(initial)
    losses = []
    for _ in range(rounds):
        trained: list[tuple[RemoteModule, RemoteTensor, int]] = []
        for x, y in datasets:
            remote_model = x.location.send(model)
            opt = x.location.optimizer(torch.optim.SGD, remote_model, lr=LR)
            opt.zero_grad()
            loss = ((remote_model(x) - y) ** 2).sum()
            loss.backward()
            opt.step()
            trained.append((remote_model, loss, x.shape[0]))
        workers[0].federation.flush()  # every worker starts now, before we wait on the first
        models = [(remote.get(), loss.get().item(), n) for remote, loss, n in trained]
        model = fresh_model(weighted_average([(m.state_dict(), n) for m, _, n in models]))
        for (x, _), (_, loss_value, _) in zip(datasets, models, strict=True):
            losses.append(loss_value)
            log(f"  {x.location.name:>5}: loss {loss_value:.6f}")
    return losses


def averaged_here(parts: int, initial: dict[str, torch.Tensor], rounds: int) -> list[float]:
    """Part 3's loop run here."""
    data, target = toy_data()
    halves = list(zip(data.tensor_split(parts), target.tensor_split(parts), strict=True))
    state = initial
    losses = []
    for _ in range(rounds):
        models = []
        for x, y in halves:
            model = fresh_model(state)
            losses.append(sgd_step(model, x, y))
            models.append((model.state_dict(), x.shape[0]))
        state = weighted_average(models)
    return losses


def weighted_average(models: Sequence[tuple[dict[str, torch.Tensor], int]]) -> dict[str, torch.Tensor]:
    """FedAvg: each model's weights counted by its number of examples."""
    total = sum(n for _, n in models)
    return {key: sum(state[key] * (n / total) for state, n in models) for key in models[0][0]}  # type: ignore[misc]


def largest_difference(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def run(fed: Federation, workers: Sequence[RemoteWorkerHandle], iterations: int = 10,
        log: Log = print) -> dict[str, float]:
    """All three parts; the largest difference of parts 2 and 3 from the same loops run here."""
    torch.manual_seed(0)
    initial = {k: v.clone() for k, v in nn.Linear(2, 1).state_dict().items()}
    log("1. The toy model, trained the normal way:")
    centralized(initial, 2 * iterations, log)
    log(f"2. The model visits {' and '.join(w.name for w in workers)} in turn:")
    step_by_step = largest_difference(federated(workers, initial, iterations, log),
                                      federated_here(len(workers), initial, iterations))
    log("3. Both train at once, and the models are averaged:")
    parallel = largest_difference(averaged(workers, initial, iterations, log),
                                  averaged_here(len(workers), initial, iterations))
    log(f"largest difference from the same loops run here: {max(step_by_step, parallel):.1e}")
    return {"step_by_step": step_by_step, "averaged": parallel}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", help="amqp:// URL; bob and alice are then `fedmq worker` processes")
    parser.add_argument("--prefix", default="fedmq", help="the workers' --prefix")
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)
    with Federation(args.broker, prefix=args.prefix) as fed:
        if args.broker:  # running `fedmq worker` processes
            workers = [fed.worker("bob"), fed.worker("alice")]
        else:  # the tutorial's VirtualWorkers: threads of this process
            workers = [fed.spawn("bob", shard="0/2"), fed.spawn("alice", shard="1/2")]
        differences = run(fed, workers, args.iterations)
    return 0 if max(differences.values()) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
