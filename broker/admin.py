"""Applying definitions to a running RabbitMQ through its management HTTP API.

`fedmq broker provision --apply http://admin:secret@host:15672` POSTs the definitions to
/api/definitions (the management plugin must be enabled; an `https://` URL verifies the
server's certificate). Without the plugin, `rabbitmqctl import_definitions FILE` on the broker's
machine does the same. The admin's password is never printed.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit

from fedmq.protocol.errors import BrokerError, BrokerUnreachable

TIMEOUT_S = 30.0


def apply_definitions(url: str, definitions: dict[str, Any]) -> None:
    """POST `definitions` to the management API at `url`; BrokerError saying why it failed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BrokerError(f"--apply needs the management API's URL, http(s)://admin:password@host:15672, "
                          f"not {_shown(url)}")
    base = parts._replace(netloc=parts.netloc.rpartition("@")[2], path=parts.path.rstrip("/"))
    request = urllib.request.Request(
        f"{base.geturl()}/api/definitions", data=json.dumps(definitions).encode(), method="POST",
        headers={"Content-Type": "application/json", **_authorization(parts.username, parts.password)})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode(errors="replace")
        raise BrokerError(f"the management API at {_shown(url)} refused the definitions: "
                          f"{e.code} {e.reason} {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise BrokerUnreachable(f"cannot reach the management API at {_shown(url)}: {e}. Enable it "
                                f"(rabbitmq-plugins enable rabbitmq_management) or import "
                                f"definitions.json with rabbitmqctl import_definitions") from e


def _authorization(user: str | None, password: str | None) -> dict[str, str]:
    if not user:
        return {}
    token = base64.b64encode(f"{unquote(user)}:{unquote(password or '')}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
