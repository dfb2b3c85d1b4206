"""Nested-container bombs: small msgpack payloads that decode to huge Python object trees.

Each builder returns about `size` bytes of valid msgpack whose every byte or two opens a container
(an empty map costs CPython 64 bytes, a one-entry map 184): before the decoder budgeted its values
8 MiB of them took hundreds of MiB. `wrap_*` put a bomb where each decoder looks first, so the
decode gets past the envelope's first checks only if the bomb is accepted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import msgpack
from hypothesis import strategies as st

from fedmq.protocol.messages import PROTOCOL_VERSION

MAX_ARRAY = 1 << 16  # items per container: well under every per-container limit, so only a budget on
# the whole message stops the bomb


def _array(items: bytes, count: int) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + items


def _str(text: str) -> bytes:
    data = text.encode()
    return bytes([0xA0 | len(data)]) + data


def wide(size: int, item: bytes) -> bytes:
    """Arrays of up to MAX_ARRAY copies of one small `item`, in one outer array: about `size` bytes."""
    total = size // len(item)
    inner = [min(MAX_ARRAY, total - start) for start in range(0, total, MAX_ARRAY)]
    return _array(b"".join(_array(item * n, n) for n in inner), len(inner))


def empty_maps(size: int) -> bytes:
    return wide(size, b"\x80")


def empty_lists(size: int) -> bytes:
    return wide(size, b"\x90")


def one_entry_maps(size: int) -> bytes:
    return wide(size, b"\x81\xa0\xc0")  # {"": None}: a one-entry map, 184 bytes, from 3


def deep_chains(size: int, depth: int = 100) -> bytes:
    """Chains of maps nested `depth` deep ({"": {"": ...}}), side by side."""
    chain = b"\x81\xa0" * depth + b"\x80"
    return wide(size, chain)


def too_deep(size: int) -> bytes:
    """Chains nested 1,000 deep: msgpack itself allows 1,023, and printing one overflows Python's stack."""
    return deep_chains(size, 1000)


def short_strings(size: int) -> bytes:
    return wide(size, b"\xa2ab")  # a 2-character str: 51 bytes from 3


BOMBS: dict[str, Callable[[int], bytes]] = {
    "empty maps": empty_maps, "empty lists": empty_lists, "one-entry maps": one_entry_maps,
    "deep chains": deep_chains, "too deep": too_deep, "short strings": short_strings,
}


def as_task(bomb: bytes) -> bytes:
    """A train task whose job field is the bomb: tasks, replies and commands all decode this far."""
    return b"\x83" + _str("v") + bytes([PROTOCOL_VERSION]) + _str("kind") + _str("train") + _str("job") + bomb


def as_commands(bomb: bytes) -> bytes:
    """A command batch whose op list is the bomb."""
    head = {"v": bytes([PROTOCOL_VERSION]), "kind": _str("commands"), "client": _str("c"), "seq": b"\x01",
            "token": _str("ab" * 15)}
    return bytes([0x80 | (len(head) + 1)]) + b"".join(_str(k) + v for k, v in head.items()) + _str("ops") + bomb


def as_presence(bomb: bytes) -> bytes:
    return b"\x82" + _str("kind") + _str("presence") + _str("role") + bomb


WRAPPERS: dict[str, Callable[[bytes], bytes]] = {"task": as_task, "commands": as_commands, "presence": as_presence}


def count_values(obj: object) -> tuple[int, int]:
    """(values, nesting depth) of a decoded msgpack object, counted the way the codec's budget counts."""
    if isinstance(obj, list):
        inner = [count_values(item) for item in obj]
        return 1 + sum(v for v, _ in inner), 1 + max((d for _, d in inner), default=0)
    if isinstance(obj, dict):
        inner = [count_values(item) for item in obj.values()]
        return 1 + len(obj) + sum(v for v, _ in inner), 1 + max((d for _, d in inner), default=0)
    return 1, 0


_leaves: st.SearchStrategy[object] = st.sampled_from([None, 0, 1000, 1.5, "", "ab", b"", [], {}])
# Small values rich in containers: a bomb repeats one of them until the payload is full.
bomb_items = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=3)), max_leaves=8)


@st.composite
def nested_bombs(draw: st.DrawFn, sizes: tuple[int, ...] = (1 << 10, 16 << 10)) -> tuple[str, bytes]:
    """(decoder, bomb): one small container-rich item repeated, wrapped for that decoder."""
    item = msgpack.packb(draw(bomb_items), use_bin_type=True)
    depth = draw(st.sampled_from([0, 0, 50, 130, 1000]))  # some chains past the nesting limit
    item = b"\x91" * depth + item
    wrapper = draw(st.sampled_from(sorted(WRAPPERS)))
    return wrapper, WRAPPERS[wrapper](wide(draw(st.sampled_from(sizes)), item))


def bomb_payloads() -> st.SearchStrategy[bytes]:
    """Small nested bombs as message bodies, for the decoder and live fuzz campaigns."""
    return nested_bombs().map(lambda bomb: bomb[1])
