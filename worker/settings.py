"""A worker's settings, built once at the CLI edge, and its torch threading.

Threads: several workers often share one machine (a demo, a simulation, a small cluster node),
and torch's default of one intra-op thread per core makes them fight over the cores. With 2
intra-op threads per process on 2 busy cores, one training step of the digits MLP measured 100x
slower (14.5 ms against 0.16 ms): threads spin waiting for cores another process holds. Small
models gain nothing from intra-op parallelism anyway, so the default is 1 intra-op thread per
worker process; `torch_threads` (`--threads`) raises it for a large model on a machine of its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum

import torch

from fedmq.protocol.messages import check_name
from fedmq.worker.task import ShardSpec

__all__ = ["AllowGet", "ShardSpec", "WorkerSettings", "apply_torch_threads", "release_large_buffers"]


class AllowGet(StrEnum):
    """--allow-get: the most private results a remote client may fetch (see worker.remote.store)."""

    NONE = "none"  # the client's own objects and values computed from them alone
    DERIVED = "derived"  # also values computed from the shard: losses, gradients, trained models
    ALL = "all"  # everything, the shard included: for data you may share


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str  # the name of its task queue; letters, digits, '-' and '_'
    task: str  # "toy", "digits" or a dotted module path (see worker.task)
    shard: ShardSpec
    device: str = "cpu"  # "cpu" or "cuda" ("cuda:1" ...); cuda must be available
    torch_threads: int = 1  # intra-op threads: see the module doc
    poll_s: float = 0.5  # how often the serve loop looks at its stop event while idle
    # Remote objects (worker.remote): what may leave, and how much a worker holds for clients.
    allow_get: AllowGet = AllowGet.DERIVED
    max_objects: int = 10_000  # remote objects held for all clients together
    max_object_bytes: int = 1 << 30  # their bytes, for all clients together
    client_ttl_s: float = 600.0  # a client silent this long is gone: its objects are freed
    max_client_objects: int = 5_000  # remote objects held for one client
    max_client_bytes: int = 512 << 20  # their bytes, autograd's saved tensors included
    max_clients: int = 64  # clients with a session at once
    remote_batch_seconds: float = 10.0  # compute budget of one remote batch (worker.remote.meter)
    remote_share: float = 0.5  # of the worker's time remote batches may take while it trains
    # AMQP users whose tasks and commands this worker runs (None: anyone who can reach its
    # queue, the guest/dev setup). With credentials: the provisioned coordinator plus
    # --task-senders; RabbitMQ vouches for each message's user_id.
    task_senders: frozenset[str] | None = None
    # Simulated slow site (tests, benchmarks): local training's wall time is stretched by this
    # factor, by sleeping (slowdown - 1) x the measured training time after training. A process's
    # first training is not stretched: it carries one-off start-up costs (lazy initialisation,
    # seconds on a busy machine) that a factor of 10 would turn into minutes.
    slowdown: float = 1.0

    def __post_init__(self) -> None:
        check_name("worker", self.worker_id)
        if self.allow_get not in AllowGet.__members__.values():
            raise ValueError(f"allow_get must be one of {', '.join(AllowGet)}, got {self.allow_get!r}")
        object.__setattr__(self, "allow_get", AllowGet(self.allow_get))  # "none" -> AllowGet.NONE
        if self.max_objects < 1 or self.max_object_bytes < 1 or not self.client_ttl_s > 0:
            raise ValueError("max_objects, max_object_bytes and client_ttl_s must be positive")
        if min(self.max_client_objects, self.max_client_bytes, self.max_clients) < 1:
            raise ValueError("max_client_objects, max_client_bytes and max_clients must be positive")
        if not self.remote_batch_seconds > 0 or not 0 < self.remote_share <= 1:
            raise ValueError("remote_batch_seconds must be positive and remote_share in (0, 1]")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {self.torch_threads}")
        if self.task_senders is not None and not self.task_senders:
            raise ValueError("task_senders must name at least one user (or be None: anyone)")
        if not self.poll_s > 0:
            raise ValueError(f"poll_s must be positive, got {self.poll_s}")
        if not 1.0 <= self.slowdown <= 1000.0:
            raise ValueError(f"--slowdown must be between 1 and 1000, got {self.slowdown}")


_interop_set = False


def apply_torch_threads(n: int) -> None:
    """Use `n` intra-op threads and 1 inter-op thread in this process; call it at process start.

    torch accepts the inter-op count only once, before any parallel work, and raises after that;
    later calls (a second worker in the same process, tests) keep what was set first.
    """
    global _interop_set
    if n < 1:
        raise ValueError(f"torch threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    if not _interop_set:
        _interop_set = True
        # Workers run one task at a time: no inter-op parallelism. If inter-op work already ran
        # in this process its pool is fixed and torch raises, which is harmless.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def release_large_buffers(threshold: int = 1 << 20) -> None:
    """Have glibc return every freed buffer above `threshold` bytes to the OS at once.

    Payloads pass through a process in megabyte pieces (chunks, tensor pieces). glibc's default
    raises its mmap threshold as large blocks are freed, after which those pieces come from the
    heap and stay resident after being freed: a coordinator folding in 16 replies of a 64 MB
    model kept ~1.5x the model more than it used. A fixed threshold keeps peak memory at what is
    actually live. No effect where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has its own policy
