"""The decoder's budget: values and nesting in proportion to the payload, on every decoder.

Nested-container bombs (tests/fuzz/bombs.py) are DecodeErrors on the task, reply, command and
presence decoders, within a stated memory margin measured in a fresh process; legitimate messages
at the edges of the budget still decode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import torch

from fedmq.protocol.codec import BASE_VALUES, MAX_DEPTH, unpack, value_budget
from fedmq.protocol.errors import DecodeError
from fedmq.protocol.messages import Reply, TrainConfig, TrainTask, decode_message, encode_message
from fedmq.protocol.presence import decode_presence
from tests.fuzz.bombs import BOMBS, WRAPPERS

ROOT = Path(__file__).resolve().parents[2]
DECODERS: dict[str, Callable[[bytes], object]] = {
    "task": decode_message, "commands": decode_message, "presence": decode_presence}
BOMB_BYTES = 8 << 20
# Peak RSS growth allowed while refusing a bomb: 8x the payload plus 16 MiB (the floor of the
# budget, BASE_VALUES, at up to ~100 bytes a value). Before the budget: 70x to 95x the payload
# (8 MiB of empty maps: +590 MiB; of maps nested 1,000 deep: +790 MiB).
MARGIN_X = 8
MARGIN_BASE = 16 << 20
REFUSED = "values|nest|exceeds max_"  # the budget, the nesting limit, or a container longer than the budget


def _nested(depth: int) -> object:
    obj: object = []
    for _ in range(depth - 1):
        obj = [obj]
    return obj


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_nested_container_bomb_is_a_decode_error_on_every_decoder(bomb: str, wrapper: str) -> None:
    # Given a 2 MiB bomb (about two million values, eight times the budget) where a decoder looks first
    payload = WRAPPERS[wrapper](BOMBS[bomb](2 << 20))
    # When the decoder meets it, whole or as the parts of a chunked delivery
    # Then it is refused for its values or its nesting, before the first envelope check
    with pytest.raises(DecodeError, match=REFUSED):
        DECODERS[wrapper](payload)
    if wrapper != "presence":  # presence beats are never chunked
        with pytest.raises(DecodeError, match=REFUSED):
            decode_message([payload[i:i + 65536] for i in range(0, len(payload), 65536)])


def _measure(bomb: str, wrapper: str, parts: bool = False) -> dict[str, object]:
    command = [sys.executable, "-m", "tests.fuzz.bomb_rss", bomb, wrapper, str(BOMB_BYTES)] + (["parts"] if parts else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("bomb, wrapper, parts", [
    ("empty maps", "task", False), ("empty maps", "task", True), ("empty maps", "commands", False),
    ("deep chains", "task", False), ("deep chains", "commands", False), ("one-entry maps", "task", False),
    ("short strings", "task", False), ("too deep", "task", False),
    ("empty maps", "presence", False), ("deep chains", "presence", False),
])
def test_refusing_an_8_mib_bomb_stays_within_the_memory_margin(bomb: str, wrapper: str, parts: bool) -> None:
    # Given a fresh process holding an 8 MiB bomb for one decoder
    # When the decoder meets it
    figures = _measure(bomb, wrapper, parts)
    # Then it is a DecodeError, and peak RSS grew by at most the stated margin
    assert figures["outcome"] == "DecodeError", figures
    growth = int(figures["growth_kb"]) * 1024  # type: ignore[call-overload]
    limit = MARGIN_X * int(figures["payload_bytes"]) + MARGIN_BASE  # type: ignore[call-overload]
    if wrapper == "presence":  # a beat is 21 values: the budget is 64, whatever the size
        limit = 4 << 20
    assert growth <= limit, figures


def test_a_model_of_twenty_thousand_named_scalars_still_decodes() -> None:
    # Given the densest tensor message there is: 20,000 scalar tensors with short names,
    # more values than BASE_VALUES, each paid for by its bytes
    weights = {f"l{i}.b": torch.tensor(i) for i in range(20_000)}
    data = bytes(encode_message(TrainTask(job="job", round=1, task_id="t", weights=weights, config=TrainConfig())))
    assert 8 * len(weights) > BASE_VALUES
    # When it is decoded, whole and in parts
    for payload in (data, [data[i:i + 4096] for i in range(0, len(data), 4096)]):
        task = decode_message(payload)
        # Then every tensor arrives
        assert isinstance(task, TrainTask) and len(task.weights) == len(weights)
        assert torch.equal(task.weights["l19999.b"], torch.tensor(19_999))


def test_the_budget_grows_with_the_payload() -> None:
    # Given a reply with one large tensor and a message of the same size made of values
    big = bytes(encode_message(Reply(job="job", round=1, task_id="t", worker="w", update={"w": torch.zeros(1 << 20)}, num_examples=1, metrics={})))
    # Then the budget admits the reply, and is the floor plus one value per 16 bytes
    assert isinstance(decode_message(big), Reply)
    assert value_budget(len(big)) == BASE_VALUES + len(big) // 16


def test_nesting_is_refused_one_level_past_the_limit() -> None:
    # Given maps holding lists nested exactly MAX_DEPTH deep, and one level deeper
    at_limit = msgpack.packb({"a": _nested(MAX_DEPTH - 1)})
    too_deep = msgpack.packb({"a": _nested(MAX_DEPTH)})
    # When decoded, Then the first decodes and the second is refused, whole and byte by byte
    assert unpack(at_limit)["a"] == _nested(MAX_DEPTH - 1)
    for data in (too_deep, [bytes([b]) for b in too_deep]):
        with pytest.raises(DecodeError, match=f"deeper than {MAX_DEPTH}"):
            unpack(data)


def test_a_kind_nested_a_thousand_deep_is_a_decode_error_not_a_recursion_error() -> None:
    # Given a task and a beat whose kind is a list nested 1,000 deep (msgpack allows 1,023):
    # quoting it in the error message overflowed Python's stack before the nesting limit
    deep = b"\x91" * 999 + b"\x90"
    task = (b"\x85\xa1v\x01\xa3job\xa1j\xa5round\x01\xa7task_id\xa1t\xa4kind" + deep)
    beat = b"\x81\xa4kind" + deep
    # When the task decoder and `fedmq status` decode them, Then each is a DecodeError
    with pytest.raises(DecodeError, match="nest"):
        decode_message(task)
    with pytest.raises(DecodeError, match=REFUSED):
        decode_presence(beat)


def test_a_map_that_repeats_a_key_is_refused() -> None:
    # Given a map whose second "job" would silently replace the first (and hide what it built)
    data = b"\x82\xa3job\x91\x90\xa3job\xa1j"
    # When decoded, Then it is a DecodeError naming the repeated key
    with pytest.raises(DecodeError, match="repeats a key"):
        unpack(data)


def test_a_stream_of_top_level_scalars_in_parts_is_refused_at_the_second() -> None:
    # Given parts holding a map followed by a million one-byte integers (no container to count)
    parts = [b"\x80", b"\x01" * (1 << 20)]
    # When decoded, Then it is refused as more than one object
    with pytest.raises(DecodeError, match="one msgpack object"):
        unpack(parts)
