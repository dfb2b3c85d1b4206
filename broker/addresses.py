"""Several broker addresses in one URL: `amqp://user:pass@h1,h2:5673,h3/vhost?heartbeat=10`.

A RabbitMQ cluster is several nodes sharing users, vhosts and queues, so one login and one vhost
serve them all; only the host differs. fedmq keeps such a list as ONE URL string, hosts separated
by commas, so it travels unchanged through --broker, $FEDMQ_BROKER, credentials files and the
command lines of subprocesses. Clients connect to the first host that answers and, when the
connection is lost, try the others in turn (broker.rabbit_connection). No pika here: the CLI
parses and joins without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_HOSTS = 64  # a cluster is a handful of nodes: a longer list is a mistake, not a cluster


@dataclass(frozen=True, kw_only=True)
class SplitUrl:
    """An AMQP URL cut around its hosts: scheme://userinfo@HOSTS/tail."""

    scheme: str
    userinfo: str  # "user:pass", "" when the URL names none
    hosts: tuple[str, ...]  # "host", "host:port", "[::1]:5672"
    tail: str  # "/vhost?query#fragment", possibly ""

    def url(self, hosts: Sequence[str]) -> str:
        login = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{login}{','.join(hosts)}{self.tail}"

    @property
    def shared(self) -> tuple[str, str, str]:
        """What every address of one list must have in common."""
        return self.scheme, self.userinfo, self.tail


def split_url(url: str) -> SplitUrl:
    """`url` cut around its comma-separated hosts; ValueError when a host is empty."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{_shown(url)} is not a URL: use amqp://user:pass@host:5672/vhost")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, _, hostlist = netloc.rpartition("@")
    hosts = tuple(host.strip() for host in hostlist.split(","))
    if any(not host for host in hosts):
        raise ValueError(f"{_shown(url)} has an empty host in its list (amqp://user:pass@h1,h2,h3/vhost)")
    if len(hosts) > MAX_HOSTS:
        raise ValueError(f"{_shown(url)} lists {len(hosts)} hosts; at most {MAX_HOSTS}")
    return SplitUrl(scheme=scheme, userinfo=userinfo, hosts=hosts, tail=tail)


def broker_addresses(url: str) -> tuple[str, ...]:
    """One URL per host, in the order given: `amqp://u:p@a,b/v` -> (`amqp://u:p@a/v`, `amqp://u:p@b/v`).

    A URL with one host comes back unchanged, whatever it looks like (pika judges it later).
    """
    if "," not in url:
        return (url,)
    split = split_url(url)
    return tuple(split.url([host]) for host in split.hosts)


def join_broker_urls(urls: Sequence[str]) -> str:
    """Several --broker URLs as one: their hosts in order (duplicates dropped), the rest shared.

    ValueError when they differ in scheme, login, vhost or options: a cluster's nodes share
    them, and one connection's settings cannot follow two logins.
    """
    if len(urls) == 1:
        return urls[0]
    if not urls:
        raise ValueError("no broker URL given")
    if any(url.partition("://")[0] not in ("amqp", "amqps") for url in urls):
        raise ValueError("several --broker URLs must all be amqp:// or amqps:// (memory:// is one process)")
    splits = [split_url(url) for url in urls]
    if len({split.shared for split in splits}) != 1:
        raise ValueError("several --broker URLs must share the scheme, user, password, vhost and options "
                         "(they name nodes of one cluster); only the hosts may differ")
    hosts = list(dict.fromkeys(host for split in splits for host in split.hosts))
    return splits[0].url(hosts)


def _shown(url: str) -> str:
    """`url` with any password replaced by *** (this module reports URLs in its errors)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{after}"
