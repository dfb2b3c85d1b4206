"""Connection errors in words a user can act on: one line, where, what, and what to do;
URLs always shown with their password replaced by ***."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pika.exceptions as px
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

START_HINT = (
    "Start it (`rabbitmq-server -detached`, or `docker run -d -p 127.0.0.1:5672:5672 "
    "rabbitmq:3-management`) or pass --broker / set FEDMQ_BROKER. The compose broker has no "
    "guest user: run fedmq beside it, `docker compose run --rm coordinator fedmq ...`."
)


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}").geturl()


def unreachable(url: str, error: BaseException, timeout_s: float,
                tried: list[tuple[str, BaseException]] | None = None) -> str:
    """One line: where, what went wrong (at each address tried, when several), and what to do."""
    why = describe(error, timeout_s)
    if why.startswith("access"):
        return f"cannot log in to RabbitMQ at {url}: {why} (pass --broker / set FEDMQ_BROKER)."
    return f"cannot reach RabbitMQ at {url}: {failures(error, tried, timeout_s)}. {START_HINT}"


def failures(error: BaseException, tried: list[tuple[str, BaseException]] | None,
             timeout_s: float | None = None) -> str:
    """`error` described; with several addresses tried, each one's failure: "h1:5672: ...; h2: ..."."""
    if not tried or len(tried) < 2:
        return describe(error, timeout_s)
    return "; ".join(f"{address}: {describe(e, timeout_s)}" for address, e in tried)


def describe(error: BaseException, timeout_s: float | None = None) -> str:
    """A short, one-line account of a pika or socket error."""
    error = _innermost(error)
    if isinstance(error, (px.ProbableAuthenticationError, px.AuthenticationError)):
        return "access refused: check the user and password"
    if isinstance(error, px.ProbableAccessDeniedError):
        return "access to the virtual host refused: check that it exists and the user may use it"
    if isinstance(error, (px.ConnectionClosedByBroker, px.ChannelClosedByBroker)):
        return f"{error.reply_code} {error.reply_text}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"unknown host ({error.strerror})"
    if isinstance(error, (AMQPConnectorStackTimeout, TimeoutError)):
        return f"no answer within {timeout_s:g}s" if timeout_s else "timed out"
    if isinstance(error, px.IncompatibleProtocolError):
        return "the server did not complete the AMQP handshake (is this a RabbitMQ port?)"
    if isinstance(error, px.StreamLostError):
        return "the connection was lost"
    return " ".join((str(error) or type(error).__name__).split())[:300]


def _innermost(error: BaseException) -> BaseException:
    """The exception at the bottom of pika's connect-workflow wrappers."""
    while True:
        if isinstance(error, AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(error, AMQPConnectorPhaseErrorBase):
            error = error.exception
        elif (
            type(error) is px.AMQPConnectionError
            and error.args
            and isinstance(error.args[0], BaseException)
        ):
            error = error.args[0]
        else:
            return error
