"""The wire form of the stage messages: exact round trips, and DecodeError on anything else."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import torch

from fedmq.protocol.codec import pack, unpack
from fedmq.protocol.errors import DecodeError
from fedmq.protocol.messages import PROTOCOL_VERSION
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg import wire
from fedmq.protocol.secagg.params import SecAggParams

KEYS = m.PublicKeys(c_public=b"c" * 32, s_public=b"s" * 32)
SEALED = b"x" * m.SEALED_BYTES
MESSAGES: list[m.SecAggMessage] = [
    m.AdvertiseRequest(job="job", round=3, params=SecAggParams(num_workers=3, threshold=2, neighbours=2, clip=0.5),
                       nonce=b"n" * 32, roster=("a", "b", "c")),
    m.AdvertiseReply(job="job", round=3, sender=1, keys=KEYS),
    m.ShareRequest(job="job", round=3, keys={0: KEYS, 2: KEYS}),
    m.ShareReply(job="job", round=3, sender=0, sealed={1: SEALED, 2: SEALED}),
    m.MaskedInputRequest(job="job", round=3, recipient=2, shared=(0, 2), sealed={0: SEALED}),
    m.UnmaskRequest(job="job", round=3, survivors=(0, 1), dropped=(2,)),
    m.UnmaskReply(job="job", round=3, sender=1, seed_shares={0: 5, 1: 2**256}, key_shares={2: 7}),
]


def test_the_envelope_version_is_the_protocol_s() -> None:
    assert wire.PROTOCOL_VERSION == PROTOCOL_VERSION


@pytest.mark.parametrize("message", MESSAGES, ids=lambda msg: type(msg).__name__)
def test_every_message_round_trips(message: m.SecAggMessage) -> None:
    assert wire.decode(wire.encode(message)) == message


def test_a_masked_input_round_trips_its_ring_elements_and_dtype() -> None:
    masked = torch.tensor([[0, 1, 2], [255, 255, 255]], dtype=torch.uint8)
    back = wire.decode(wire.encode(m.MaskedInputReply(job="j", round=1, sender=0, masked=masked)))
    assert isinstance(back, m.MaskedInputReply) and torch.equal(back.masked, masked)


def _wire(message: m.SecAggMessage, **changes: Any) -> bytes:
    obj = {"v": PROTOCOL_VERSION} | wire.to_wire(message)
    obj.update(changes)
    return bytes(pack(obj))


@pytest.mark.parametrize(("index", "changes"), [
    (1, {"c": b"c" * 31}),  # a short key
    (1, {"sender": 1 << 16}),  # an index beyond the limit
    (1, {"sender": True}),  # a bool for an int
    (1, {"round": -1}),
    (1, {"job": "bad name!"}),
    (1, {"kind": "secagg.nope"}),
    (1, {"v": 99}),
    (0, {"roster": ["a", "a", "b"]}),
    (0, {"nonce": b"n" * 31}),
    (0, {"params": {"num_workers": 3, "threshold": 1, "neighbours": 2, "quant_bits": 16, "clip": 1.0,
                    "max_examples": 10}}),  # a minority threshold
    (0, {"params": {"num_workers": 3, "threshold": 2, "neighbours": 2, "quant_bits": 16, "clip": float("nan"),
                    "max_examples": 10}}),
    (2, {"keys": [[0, b"c" * 32, b"s" * 32], [0, b"c" * 32, b"s" * 32]]}),  # a repeated index
    (3, {"sealed": [[1, b"x" * 10]]}),  # a short ciphertext
    (4, {"shared": [0, 0]}),
    (6, {"seed": [[0, (2**256 + 297).to_bytes(33, "big")]]}),  # a share outside the field
    (6, {"key": [[0, b"y" * 33, b"extra"]]}),
])
def test_malformed_fields_are_decode_errors(index: int, changes: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        wire.decode(_wire(MESSAGES[index], **changes))


@pytest.mark.parametrize("masked", [{"dtype": "float32", "shape": [1, 4], "data": b"\0" * 16},
                                    {"dtype": "uint8", "shape": [0, 4], "data": b""},
                                    {"dtype": "uint8", "shape": [63, 1], "data": b"\0" * 63},
                                    {"dtype": "uint8", "shape": [8], "data": b"\0" * 8},
                                    {"dtype": "uint8", "shape": [2], "data": b"\0" * 8}])
def test_a_masked_input_must_be_1_to_62_bit_planes(masked: dict[str, Any]) -> None:
    reply = m.MaskedInputReply(job="j", round=1, sender=0, masked=torch.zeros(1, 4, dtype=torch.uint8))
    with pytest.raises(DecodeError):
        wire.decode(_wire(reply, masked=masked))


def test_random_corruption_is_a_decode_error_or_a_valid_message_never_a_crash() -> None:
    # Given every message, each with random bytes overwritten, 200 times
    rng = random.Random(7)
    for _ in range(200):
        data = bytearray(wire.encode(rng.choice(MESSAGES)))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        # When decoded / Then the result is a message or a DecodeError, nothing else
        try:
            message = wire.decode(bytes(data))
        except DecodeError:
            continue
        assert dataclasses.is_dataclass(message)


def test_a_list_of_too_many_workers_is_refused_before_it_is_walked() -> None:
    obj = unpack(wire.encode(MESSAGES[5]))
    obj["survivors"] = list(range((1 << 16) + 1))
    with pytest.raises(DecodeError, match="more than"):
        wire.decode(bytes(pack(obj)))
