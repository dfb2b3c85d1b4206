"""The pika side of the RabbitMQ transport: one connection with one confirmed channel,
reopened after a loss, and connection errors told in words a user can act on.

Several addresses (the nodes of a cluster, broker.addresses): the first connection goes to the
first that answers; after a loss the others are tried first, starting with the next in the
list, so a client leaves a dead node at once instead of waiting for it. Every pass over the
list is one attempt of the reconnect backoff. A login refused by one node is refused by all
(users are cluster-wide), so it is reported at once.

Publishes go out on a channel of their own: RabbitMQ answers a publish it refuses (403 on an
exchange, 404, 406) by closing the channel it came on, and the main channel holds the consumers
and the unacknowledged deliveries. A refused publish costs only the publish channel, reopened
on the next publish, and raises PublishRejected; the connection and the delivery in hand stay.

pika's BlockingConnection is not thread-safe: a Link is used only from the thread that
connected it (the I/O thread). `run_beside` runs long work on a second thread (one for the Link's life), which touches
pika only through its one thread-safe method, `add_callback_threadsafe`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import pika
import pika.exceptions as px
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from fedmq.broker.rabbitmq_errors import describe, failures, redact, unreachable
from fedmq.broker.rabbitmq_params import parameters_list
from fedmq.broker.settings import BrokerSettings
from fedmq.protocol.errors import BrokerError, BrokerUnreachable, PublishRejected

log = logging.getLogger("fedmq.broker")
R = TypeVar("R")
Channel = Any  # pika ships no type hints

# A channel closed with these codes means the request itself was wrong (missing queue,
# mismatched arguments, permissions): a retry cannot help, so they surface at once.
REFUSALS = {403, 404, 405, 406}
# Everything pika raises when the connection or channel is gone; AMQPConnectorException and
# OSError escape the connect workflow unwrapped (timeouts, unknown hosts).
LOST = (
    px.AMQPConnectionError,
    px.ChannelClosed,
    px.ChannelWrongStateError,
    AMQPConnectorException,
    OSError,
)
WORK_SLICE_S = 1.0  # bounds a run_beside wait should a wake-up be lost to a reconnect


class Link:
    """A BlockingConnection and its channel; `call` reruns an operation after a reconnect."""

    def __init__(self, settings: BrokerSettings, on_channel: Callable[[Channel], None]) -> None:
        self.url = redact(settings.url)
        self.generation = 0  # one per channel: delivery tags of an older channel are void
        self.reconnects = 0
        self._settings = settings
        self._params = parameters_list(settings, self.url)
        self._current = 0  # index in _params of the address connected (or last connected) to
        self._failures: list[tuple[str, BaseException]] = []  # the last _open's, per address
        self._on_channel = on_channel  # declares topology and starts consumers on a new channel
        self._connection: Any = None
        self._channel: Channel = None
        self._publisher: Channel = None  # confirmed channel for publishes only (module doc)
        self._closed = False
        self._work: ThreadPoolExecutor | None = None  # run_beside's thread, started on first use

    def connect(self) -> None:
        """The first connection: BrokerUnreachable, in one line, when it fails."""
        try:
            self._open()
        except (px.AMQPConnectionError, AMQPConnectorException, OSError) as e:
            self._discard()
            raise BrokerUnreachable(
                unreachable(self.url, e, self._settings.connect_timeout_s, self._failures)
            ) from e
        except px.AMQPError as e:
            self._discard()
            raise BrokerError(
                f"RabbitMQ at {self.url} refused the fedmq topology: {describe(e)}"
            ) from e
        except BrokerError:
            self._discard()  # the topology was refused (rabbitmq_topology): close, then tell
            raise

    def call(self, op: Callable[[Channel], R], publishing: bool = False) -> R:
        """op(channel); after a lost connection, reconnect and run it again (within the window).

        `publishing`: op publishes, on the publish channel; a refusal raises PublishRejected.
        """
        deadline: float | None = None
        while True:
            if self._closed:
                raise BrokerError("this RabbitMQ broker connection is closed")
            try:
                return op(self._current_publisher() if publishing else self._current_channel())
            except px.ChannelClosedByBroker as e:
                if e.reply_code in REFUSALS:
                    # The refusal closed the channel it was made on, which may be a side channel
                    # (presence): only a closed channel is replaced. Dropping the open main
                    # channel would strand its unacknowledged delivery.
                    self._forget_closed_channels()
                    if publishing:
                        raise PublishRejected(f"RabbitMQ refused a publish: {describe(e)}") from e
                    raise BrokerError(f"RabbitMQ refused the request: {describe(e)}") from e
                cause: BaseException = e
            except LOST as e:
                cause = e
            if deadline is None:
                deadline = time.monotonic() + self._settings.reconnect_for_s
            elif (
                time.monotonic() >= deadline
            ):  # reconnects succeed, yet the operation keeps failing
                raise BrokerError(
                    f"RabbitMQ at {self.url} kept dropping the connection for "
                    f"{self._settings.reconnect_for_s:g}s: {describe(cause)}"
                ) from cause
            self._reconnect(cause, deadline)

    def serve(self, seconds: float) -> None:
        """Service the connection (heartbeats, deliveries) for up to `seconds`.

        pika's process_data_events returns early as soon as a delivery is dispatched or a
        threadsafe callback runs (`_wake`), so waiting here adds no latency to either.
        """
        self.call(lambda _channel: self._connection.process_data_events(time_limit=seconds))

    def run_beside(self, work: Callable[[], R], between: Callable[[], None] | None = None) -> R:
        """Run `work` on the work thread while this (the I/O) thread services the connection,
        calling `between` (if given) here after each slice of servicing.

        BlockingConnection sends no heartbeats unless its thread is inside pika. The work
        thread never touches pika except to wake this one (`add_callback_threadsafe`), which
        makes process_data_events return at once: no polling latency when the work ends. The
        work thread lives as long as the Link: a host serving many short tasks would otherwise
        pay a thread start per task.
        """
        if self._work is None:
            self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedmq-work")
        done = self._work.submit(work)
        done.add_done_callback(lambda _done: self._wake())
        try:
            while not done.done():
                self.serve(WORK_SLICE_S)
                if between is not None and not done.done():
                    between()
        except BrokerError:
            wait([done])  # the connection is gone for good: still never orphan the work
            raise
        return done.result()

    def _wake(self) -> None:
        """Thread-safe: end the I/O thread's current `serve` now."""
        connection = self._connection
        # Closed or being replaced by a reconnect: `serve`'s time limit covers the lost wake-up.
        with contextlib.suppress(Exception):
            connection.add_callback_threadsafe(_nothing)

    def queue_exists(self, queue: str) -> bool:
        """Whether `queue` exists, asked on a throwaway channel.

        RabbitMQ closes a channel that asks about a missing queue; the main channel holds the
        consumers and unacknowledged deliveries, so it must never be the one to ask.
        """

        def ask(_channel: Channel) -> bool:
            side = self._connection.channel()
            try:
                side.queue_declare(queue, passive=True)
                return True
            except px.ChannelClosedByBroker as e:
                if e.reply_code == 404:
                    return False
                raise BrokerError(
                    f"RabbitMQ refused to look up queue {queue}: {describe(e)}"
                ) from e
            finally:
                if side.is_open:
                    side.close()

        return self.call(ask)

    def close(self) -> None:
        self._closed = True
        self._discard()
        if self._work is not None:
            self._work.shutdown(wait=False)

    def _current_channel(self) -> Channel:
        if self._channel is None or not self._channel.is_open:
            if self._connection is None or not self._connection.is_open:
                raise px.ConnectionWrongStateError("the connection is closed")
            if self._channel is not None:
                # Closed by the broker, e.g. consumer_timeout: RabbitMQ requeued what it held.
                reason = getattr(self._channel, "_closing_reason", None)
                log.warning("RabbitMQ at %s closed the channel (%s); reopening it", self._where(self.address),
                            describe(reason) if reason else "no reason given")
            self._open_channel()
        return self._channel

    def _forget_closed_channels(self) -> None:
        """The next call reopens whichever of the main and publish channels the broker closed."""
        if self._publisher is not None and not self._publisher.is_open:
            self._publisher = None
        if self._channel is not None and not self._channel.is_open:
            self._channel = None

    def drop_publisher(self) -> None:
        """Close the publish channel; the next publish opens a fresh one. A channel's view of a
        quorum queue can keep pointing at a lost leader, so a nacked publish retries on a new one."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None and publisher.is_open:
            with contextlib.suppress(px.AMQPError, OSError):
                publisher.close()

    def _current_publisher(self) -> Channel:
        if self._publisher is None or not self._publisher.is_open:
            self._current_channel()  # the connection is alive and the topology declared
            publisher = self._connection.channel()
            publisher.confirm_delivery()
            self._publisher = publisher
        return self._publisher

    @property
    def address(self) -> str:
        """The node connected to (or last connected to), as host:port."""
        params = self._params[self._current]
        return f"{params.host}:{params.port}"

    def _open(self, after_loss: bool = False) -> None:
        """Connect to the first address that answers (after a loss: starting after the lost one)."""
        count = len(self._params)
        start = (self._current + 1) % count if after_loss else 0
        self._failures = []
        for index in [(start + i) % count for i in range(count)]:
            params = self._params[index]
            try:
                self._connection = pika.BlockingConnection(params)
                self._current = index
                self._open_channel()  # inside the try: a node that connects but cannot serve is skipped too
            except (px.ProbableAuthenticationError, px.AuthenticationError, px.ProbableAccessDeniedError):
                raise  # users and vhosts are the cluster's: another node would refuse it too
            except LOST as e:
                self._failures.append((f"{params.host}:{params.port}", e))
                self._discard()
                continue
            return
        raise self._failures[-1][1]

    def _open_channel(self) -> None:
        channel = self._connection.channel()
        channel.confirm_delivery()
        # Not global: each consumer (one per queue) holds at most one unacked delivery.
        channel.basic_qos(prefetch_count=1)
        self.generation += 1
        self._on_channel(channel)
        self._channel = channel

    def _reconnect(self, cause: BaseException, deadline: float) -> None:
        lost = self.address
        log.warning("lost the connection to RabbitMQ at %s (%s); reconnecting", self._where(lost),
                    describe(cause))
        self._discard()
        delay = 0.05
        after_loss = True  # the first pass starts after the lost node; later passes from the top
        while True:
            try:
                self._open(after_loss)
                self.reconnects += 1
                log.warning("reconnected to RabbitMQ at %s after: %s", self._where(self.address),
                            describe(cause))
                return
            except LOST as e:
                self._discard()
                last: BaseException = e
            after_loss = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"lost the connection to RabbitMQ at {self.url} ({describe(cause)}) and could not "
                    f"reconnect within {self._settings.reconnect_for_s:g}s: "
                    f"{failures(last, self._failures)}"
                ) from last
            time.sleep(min(delay, remaining))  # nothing to service: there is no connection
            delay = min(delay * 2, 2.0)

    def _where(self, address: str) -> str:
        """The URL, and with several addresses the node meant."""
        return self.url if len(self._params) == 1 else f"{self.url} (node {address})"

    def _discard(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._publisher = None
        if connection is not None and connection.is_open:
            # Already broken, maybe: the broker requeues its unacked deliveries either way.
            with contextlib.suppress(px.AMQPError, OSError):
                connection.close()


def _nothing() -> None:
    """A callback whose only effect is to make process_data_events return."""


__all__ = ["Channel", "Link", "describe", "redact", "unreachable"]  # the errors' old home


