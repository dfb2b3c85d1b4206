"""pika connection parameters from BrokerSettings: the URL, fedmq's timeouts, and TLS.

TLS: an `amqps://` URL verifies the broker's certificate against the system's CAs, or against
`tls_ca` when given; `tls_cert` and `tls_key` present a client certificate (for brokers that
set `ssl_options.fail_if_no_peer_cert`). The host name in the URL must match the broker's
certificate. TLS files given with a plain `amqp://` URL are a usage error, never ignored.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import pika

from fedmq.broker.addresses import broker_addresses
from fedmq.broker.settings import BrokerSettings
from fedmq.protocol.errors import BrokerError


def parameters_list(settings: BrokerSettings, shown: str) -> list[Any]:
    """pika's URLParameters for each address of `settings.url` (broker.addresses), in order."""
    try:
        urls = broker_addresses(settings.url)
    except ValueError as e:
        raise BrokerError(str(e)) from e
    return [parameters(settings, url, shown) for url in urls]


def parameters(settings: BrokerSettings, url: str, shown: str) -> Any:
    """pika's URLParameters for `url`, one address of `settings` (`shown`: the whole URL with its
    password redacted)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("amqp", "amqps"):
        raise BrokerError(
            f"{shown} is not a RabbitMQ URL: use amqp://user:pass@host:5672/vhost or amqps://"
        )
    try:
        params = pika.URLParameters(url)
    except ValueError as e:
        raise BrokerError(f"invalid RabbitMQ URL {shown}: {e}") from e
    params.connection_attempts = 1  # reconnecting is ours, with its own window
    params.socket_timeout = settings.connect_timeout_s
    params.stack_timeout = settings.connect_timeout_s
    if params.blocked_connection_timeout is None:
        # A broker short of memory or disk blocks publishers: fail (and retry) instead of hanging.
        params.blocked_connection_timeout = settings.reconnect_for_s
    properties = dict(params.client_properties or {})
    # Names the connection in the management UI and lets an operator close just this one.
    name = f"fedmq {settings.topology.prefix} {socket.gethostname()}:{os.getpid()}"
    properties.setdefault("connection_name", name)
    params.client_properties = properties
    if scheme == "amqps":
        params.ssl_options = pika.SSLOptions(tls_context(settings), params.host)
    elif settings.uses_tls_files:
        raise BrokerError(f"--tls-ca/--tls-cert/--tls-key need an amqps:// URL, not {shown}")
    return params


def tls_context(settings: BrokerSettings) -> ssl.SSLContext:
    """A client context that verifies the broker (and presents a certificate when given one)."""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca) if settings.tls_ca else None
        )
        if settings.tls_cert is not None:
            key = str(settings.tls_key) if settings.tls_key else None
            context.load_cert_chain(str(settings.tls_cert), key)
    except (OSError, ssl.SSLError) as e:
        raise BrokerError(f"cannot load the TLS files: {e}") from e
    return context


def connection_user(url: str) -> str | None:
    """The user named in an AMQP URL, which RabbitMQ will hold the connection's user_id to.

    None when the URL names none (pika then logs in as guest, or a certificate names the user
    under the EXTERNAL mechanism): fedmq then cannot know the user, and sets no user_id.
    """
    with contextlib.suppress(ValueError):  # a malformed list: connecting reports it
        url = broker_addresses(url)[0]  # a cluster's nodes share the login
    username = urlsplit(url).username
    return unquote(username) if username else None
