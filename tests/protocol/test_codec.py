"""The tensor codec: exact round trips, and hostile bytes refused with DecodeError."""

import msgpack
import pytest
import torch

from fedmq.protocol.codec import DTYPES, pack, tensor_from_wire, tensor_to_wire, unpack
from fedmq.protocol.errors import DecodeError


@pytest.mark.parametrize("dtype", list(DTYPES.values()))
def test_every_allowed_dtype_round_trips_exactly(dtype: torch.dtype) -> None:
    # Given a tensor of an allowed dtype (bfloat16 included), non-contiguous
    original = (torch.randn(4, 6) * 10).to(dtype).t()
    # When it is encoded and decoded
    decoded = tensor_from_wire(unpack(pack({"t": tensor_to_wire(original)}))["t"])
    # Then dtype, shape and values are identical
    assert decoded.dtype == dtype and decoded.shape == original.shape
    assert torch.equal(decoded, original)


def test_scalars_and_empty_tensors_round_trip() -> None:
    for original in (torch.tensor(2.5), torch.zeros(0, 3)):
        decoded = tensor_from_wire(unpack(pack({"t": tensor_to_wire(original)}))["t"])
        assert decoded.shape == original.shape and torch.equal(decoded, original)


def test_parts_decode_like_the_whole() -> None:
    # Given a payload split into parts as a chunked transfer delivers it
    data = bytes(pack({"t": tensor_to_wire(torch.arange(100_000, dtype=torch.float32))}))
    parts = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    # When the parts are decoded
    decoded = tensor_from_wire(unpack(parts)["t"])
    # Then the tensor is whole, and the parts were consumed (freed as read)
    assert torch.equal(decoded, torch.arange(100_000, dtype=torch.float32))
    assert parts == []


def test_empty_pieces_among_a_tensors_pieces_add_nothing() -> None:
    # Given a tensor sent as pieces, some of them empty bins (legal msgpack, as a live fuzz sent)
    wire = {"dtype": "float32", "shape": [2], "data": [b"", bytes(torch.tensor([1.5]).numpy().data), b"",
                                                         bytes(torch.tensor([-2.0]).numpy().data), b""]}
    # When it is decoded; then it is the tensor of the bytes there are
    assert torch.equal(tensor_from_wire(unpack(pack({"t": wire}))["t"]), torch.tensor([1.5, -2.0]))


def test_an_unsupported_dtype_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="complex64"):
        tensor_to_wire(torch.zeros(2, dtype=torch.complex64))


def _wire(dtype: object = "float32", shape: object = (2,), data: object = b"\0" * 8) -> bytes:
    return msgpack.packb({"t": {"dtype": dtype, "shape": shape, "data": data}}, use_bin_type=True)


@pytest.mark.parametrize("payload, message", [
    (_wire(dtype="object"), "not allowed"),
    (_wire(dtype="complex128"), "not allowed"),
    (_wire(shape=[3]), "needs 12 bytes"),
    (_wire(shape=[-1]), "non-negative"),
    (_wire(shape=[1] * 40), "at most"),
    (_wire(shape=[True, 2]), "non-negative integers"),
    (_wire(data="text"), "bin"),
])
def test_lying_tensors_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        tensor_from_wire(unpack(payload)["t"])


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",  # never-used msgpack byte
    msgpack.packb({"a": 1})[:-1],  # truncated
    b"\xdb\xff\xff\xff\xff" + b"x" * 10,  # str declaring 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin declaring 4 GiB
    msgpack.packb(msgpack.ExtType(5, b"boom")),
    msgpack.packb([1, 2, 3]),  # not a map
    msgpack.packb({1: 2}),
])
def test_malformed_msgpack_is_one_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        unpack(payload)
