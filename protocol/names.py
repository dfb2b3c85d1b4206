"""Names that end up in queue names and routing keys: jobs, workers, remote clients."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # safe in queue names and keys


def check_name(kind: str, name: str) -> str:
    """`name` if it is a valid job or worker name; ValueError naming the rule otherwise."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{kind} name {name!r} must be 1-64 letters, digits, '-' or '_', starting with a letter or digit")
    return name
