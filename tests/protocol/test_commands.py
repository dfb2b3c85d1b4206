"""Remote commands on the wire: every operand kind round trips; hostile maps are DecodeErrors."""

import msgpack
import pytest
import torch

from fedmq.protocol.commands import CommandBatch, CommandResult, Op, OpError
from fedmq.protocol.errors import DecodeError
from fedmq.protocol.messages import decode_message, encode_message
from fedmq.protocol.operands import ModuleSpec, Ref, StoreInfo, TensorMeta

TOKEN = "ab" * 32
LAYERS = {"layer": "Linear", "args": {"in_features": 2, "out_features": 1, "bias": True}, "train": True}


def test_a_batch_with_every_operand_kind_round_trips() -> None:
    # Given a batch whose ops use every kind of operand
    weights = {"weight": torch.randn(1, 2), "bias": torch.zeros(1, dtype=torch.float64)}
    args = (Ref(3), None, True, 7, 2.5, "sum", torch.arange(6).reshape(2, 3), torch.float16,
            slice(1, None, 2), Ellipsis, (0, [1, 2]), ModuleSpec(LAYERS, weights), weights)
    batch = CommandBatch("c-1", 4, (Op("op.getitem", args, {"dim": Ref(9)}, (10, 11)), Op("free", (1, 2))),
                         TOKEN)
    # When it is encoded and decoded
    decoded = decode_message(encode_message(batch))
    # Then every field and operand survives, tensors value for value
    assert isinstance(decoded, CommandBatch)
    assert (decoded.client, decoded.seq, decoded.token, len(decoded.ops)) == ("c-1", 4, TOKEN, 2)
    op = decoded.ops[0]
    assert (op.name, op.kwargs, op.outs) == ("op.getitem", {"dim": Ref(9)}, (10, 11))
    assert op.args[:6] == (Ref(3), None, True, 7, 2.5, "sum")
    assert torch.equal(op.args[6], args[6]) and op.args[6].dtype == torch.int64  # type: ignore[union-attr]
    assert op.args[7:11] == (torch.float16, slice(1, None, 2), Ellipsis, (0, [1, 2]))
    module, loose = op.args[11], op.args[12]
    assert isinstance(module, ModuleSpec) and module.layers == LAYERS
    assert all(torch.equal(module.weights[k], v) and module.weights[k].dtype == v.dtype for k, v in weights.items())
    assert isinstance(loose, dict) and loose.keys() == weights.keys()
    assert decoded.ops[1].args == (1, 2)


def test_a_result_with_every_value_kind_and_an_error_round_trips() -> None:
    # Given a result carrying each kind of fetched value and an error
    values = {0: torch.ones(2, dtype=torch.bfloat16), 1: {"w": torch.zeros(3)},
              2: TensorMeta((2, 0, 5), "int8", True), 3: StoreInfo(4, 128)}
    result = CommandResult("c-1", 2, "alice", values, OpError(5, "op.matmul", "shapes differ", "failed"))
    # When it is encoded and decoded
    decoded = decode_message(encode_message(result))
    # Then the values and the error are the same
    assert isinstance(decoded, CommandResult)
    assert (decoded.client, decoded.seq, decoded.worker, decoded.error) == ("c-1", 2, "alice", result.error)
    assert torch.equal(decoded.values[0], values[0])  # type: ignore[arg-type]
    assert torch.equal(decoded.values[1]["w"], torch.zeros(3))  # type: ignore[index]
    assert (decoded.values[2], decoded.values[3]) == (values[2], values[3])


def _batch(**changes: object) -> bytes:
    base: dict[str, object] = {"v": 1, "kind": "commands", "client": "c-1", "seq": 1, "token": TOKEN,
                               "ops": [["op.add", [{"ref": 1}, 2], {}, [2]]]}
    base.update(changes)
    return msgpack.packb({k: v for k, v in base.items() if v is not None}, use_bin_type=True)


def _op(name: object = "op.add", args: object = None, kwargs: object = None, outs: object = None) -> bytes:
    return _batch(ops=[[name, [] if args is None else args, {} if kwargs is None else kwargs,
                        [] if outs is None else outs]])


@pytest.mark.parametrize(("data", "message"), [
    (_batch(client="../etc"), "'client'"),
    (_batch(seq=-1), "'seq'"),
    (_batch(seq=True), "'seq'"),
    (_batch(token="not hex at all, and too short"), "'token'"),
    (_batch(token="ab" * 8), "'token'"),
    (_batch(seq=0), "counts from 1"),
    (_batch(ops={"a": 1}), "'ops'"),
    (_batch(ops=[["op.add", [], {}]]), "[name, args, kwargs, outs]"),
    (_op(name="os.system('rm')"), "not a valid op name"),
    (_op(name=7), "not a valid op name"),
    (_op(kwargs={"__class__": 1}), "keyword '__class__'"),
    (_op(kwargs={"_private": 1}), "keyword '_private'"),
    (_op(outs=[0]), "object id"),
    (_op(outs=[1 << 60]), "object id"),
    (_op(outs=list(range(1, 20))), "at most 16"),
    (_op(args=[{"ref": "1"}]), "object id"),
    (_op(args=[{"eval": "1+1"}]), "unknown argument tag 'eval'"),
    (_op(args=[{"ref": 1, "tensor": 2}]), "map of one tag"),
    (_op(args=[b"raw bytes"]), "scalar, a list or a map"),
    (_op(args=[{"dtype": "complex128"}]), "dtype 'complex128' is not allowed"),
    (_op(args=[{"slice": [1, "x", None]}]), "slice bounds"),
    (_op(args=[{"ellipsis": 1}]), "ellipsis"),
    (_op(args=[{"tensor": {"dtype": "float32", "shape": [2], "data": b"\x00" * 3}}]), "needs 8 bytes"),
    (_op(args=[[[[[[[[[[[1]]]]]]]]]]]), "deeper than 8"),
    (_op(args=[{"module": {"layers": {"layer": b"x"}, "weights": {}}}]), "scalars, lists and maps"),
    (_op(args=[{"module": {"layers": None}}]), "exactly layers and weights"),
])
def test_hostile_batches_are_decode_errors_naming_the_fault(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        decode_message(data)


@pytest.mark.parametrize(("changes", "message"), [
    ({"values": {"0": 1}}, "'values'"),
    ({"values": [[-1, {"tensor": None}]]}, "op index"),
    ({"values": [[0, {"pickle": b""}]]}, "unknown or malformed value"),
    ({"values": [[0, {"meta": {"shape": [-1], "dtype": "int8", "requires_grad": False}}]]}, "shape"),
    ({"values": [[0, {"store": {"objects": -1, "bytes": 0}}]]}, "non-negative"),
    ({"error": {"index": 0, "op": "x", "reason": "y", "kind": "panic"}}, "error kind 'panic'"),
    ({"error": "boom"}, "'error'"),
    ({"worker": ""}, "'worker'"),
])
def test_hostile_results_are_decode_errors(changes: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"v": 1, "kind": "results", "client": "c-1", "seq": 1, "worker": "bob",
                               "values": [], "error": None}
    base.update(changes)
    with pytest.raises(DecodeError, match=message):
        decode_message(msgpack.packb(base, use_bin_type=True))


def test_an_operand_that_cannot_travel_is_refused_when_encoding() -> None:
    # A complex dtype and an object are not operands: the client learns it before sending.
    with pytest.raises(ValueError, match="cannot travel"):
        encode_message(CommandBatch("c-1", 1, (Op("Tensor.to", (torch.complex64,)),), TOKEN))
    with pytest.raises(ValueError, match="cannot be an argument"):
        encode_message(CommandBatch("c-1", 1, (Op("op.add", (object(),)),), TOKEN))  # type: ignore[arg-type]
