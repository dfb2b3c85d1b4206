"""What the RabbitMQ transport keeps of a received message: tags, pieces, user ids, dead letters.

No pika here: these are plain records of what pika handed over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from fedmq.broker.base import DeadLetter, Delivery
from fedmq.protocol.errors import BrokerError

REASON = "x-fedmq-reason"
SOURCE = "x-fedmq-source"


class Piece(NamedTuple):
    tag: int  # pika's delivery tag, valid on the channel of `generation`
    redelivered: bool
    user_id: str | None  # the publisher's user_id, verified by RabbitMQ


@dataclass(frozen=True)
class Tag:
    """Delivery.tag: the delivery tags of every piece, and the channel they belong to."""

    generation: int
    pieces: tuple[Piece, ...]


@dataclass(frozen=True)
class Raw:
    """A message as it left pika, before chunk reassembly."""

    queue: str
    source: str
    piece: Piece
    headers: dict[str, object]
    body: bytes


def raw(queue: str, source: str, method: Any, properties: Any, body: bytes) -> Raw:  # noqa: ANN401
    """A Raw from pika's method frame and properties."""
    user_id = properties.user_id if isinstance(properties.user_id, str) else None
    piece = Piece(method.delivery_tag, method.redelivered, user_id)
    return Raw(queue, source, piece, dict(properties.headers or {}), body)


def common_user(pieces: Iterable[Piece]) -> str | None:
    """The user_id every piece of a message carries; None when any lacks it or they differ.

    A chunked message spliced from two publishers' pieces must not pass as either's.
    """
    users = {piece.user_id for piece in pieces}
    return users.pop() if len(users) == 1 else None


def tag_of(delivery: Delivery) -> Tag:
    if not isinstance(delivery.tag, Tag):
        raise BrokerError("this delivery did not come from a RabbitMQ broker")
    return delivery.tag


def letter(delivery: Delivery) -> DeadLetter:
    """A dead letter, from fedmq's headers or, when RabbitMQ dead-lettered it, from its own."""
    headers = delivery.headers
    reason = headers.get(REASON) or headers.get("x-first-death-reason") or "unknown"
    source = headers.get(SOURCE) or ""
    return DeadLetter(delivery.body(), _text(reason), _text(source))


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
