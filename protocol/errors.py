"""One exception tree for fedmq. Third-party errors are translated at the boundary."""

MAX_REASON = 2000  # characters: a reason travels in headers, replies and logs; a traceback need not


def clip(reason: str, limit: int = MAX_REASON) -> str:
    """`reason` cut to `limit` characters, marked with "..." when cut: hostile input must not put
    megabytes into a header, a reply or a log line."""
    return reason if len(reason) <= limit else reason[:max(limit - 3, 0)] + "..."


class FedmqError(Exception):
    """Root of every error fedmq raises on purpose."""


class DecodeError(FedmqError):
    """Bytes that are not a valid fedmq message: malformed, hostile, or of an unknown version."""


class UnsupportedVersion(DecodeError):
    """A message of a protocol version this build does not speak."""


class BrokerError(FedmqError):
    """The transport failed: connection, channel, publish or consume."""


class BrokerUnreachable(BrokerError):
    """No broker answered at the configured URL."""


class Unroutable(BrokerError):
    """A mandatory publish found no queue (for example, a worker that never started)."""


class PublishRejected(BrokerError):
    """The broker refused one publish (a nack, a full queue, a 403 on an exchange); the
    connection still works. That message's failure: log it, settle the delivery, keep serving."""


class ChunkError(BrokerError):
    """A chunked payload could not be reassembled: corrupt, missing or expired chunks."""


class StoreError(BrokerError):
    """A stored part (a chunk spilled to disk) could not be read back: this machine's fault,
    never the sender's, so no message is dead-lettered for it."""


class TaskError(FedmqError):
    """A task definition (model and data) could not be loaded or does not fit a request."""


class TrainingFailed(FedmqError):
    """A federated training run could not continue (for example, too few replies)."""


class StrategyError(FedmqError):
    """A strategy could not be built or restored: an unknown name or option, a value out of
    range, a checkpointed state that does not fit; the message lists what is valid."""


class RemoteError(FedmqError):
    """A remote operation failed on its worker; the message names the op, the worker and why."""


class OpNotAllowed(RemoteError):
    """The worker refused an operation that is not on its allowlist."""


class RemotePermissionError(RemoteError, PermissionError):
    """The worker refused to let an object leave it (its --allow-get policy)."""


class StoreFull(RemoteError):
    """The worker's object store is at its cap (objects or bytes)."""
