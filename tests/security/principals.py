"""Server-side powers the provisioned tests need beyond tests.security.conftest: changing a
test principal's permissions, adding one, counting a queue's messages. Only on the test's own
users and vhost, never on guest or the default vhost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from fedmq.broker.provision import Credentials, login_url
from tests.conftest import BrokerAdmin

WAIT_S = 60.0


def ctl_of(admin: BrokerAdmin) -> Callable[[list[str]], str]:
    assert admin.ctl is not None, "these tests need rabbitmqctl next to the broker"
    return admin.ctl


def set_permissions(admin: BrokerAdmin, who: Credentials, configure: str, write: str, read: str) -> None:
    ctl_of(admin)(["set_permissions", "-p", who.vhost, who.user, configure, write, read])


@contextmanager
def extra_principal(admin: BrokerAdmin, like: Credentials, name: str, write: str, read: str
                    ) -> Iterator[Credentials]:
    """A user `name` on `like`'s vhost with these permissions (configure nothing); deleted after."""
    ctl = ctl_of(admin)
    password = f"pw-{name}"
    ctl(["add_user", name, password])
    try:
        ctl(["set_permissions", "-p", like.vhost, name, "^$", write, read])
        parts = urlsplit(like.url)
        endpoint = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        yield Credentials(name, password, "worker", like.vhost, like.prefix,
                          login_url(endpoint, name, password, like.vhost))
    finally:
        ctl(["delete_user", name])


def depth(admin: BrokerAdmin, vhost: str, queue: str) -> int:
    listing = ctl_of(admin)(["-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "messages"])
    counts = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
    return int(counts.get(queue, "0").strip())


def wait_for_depth(admin: BrokerAdmin, vhost: str, queue: str, at_least: int) -> int:
    deadline = time.monotonic() + WAIT_S
    while (found := depth(admin, vhost, queue)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return found
