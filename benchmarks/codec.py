"""Codec speed: encode and decode a 256 MB state dict (target >= 1 GB/s each way).

Both directions write the payload once into memory the process has not touched yet (msgpack's
buffer, the decoded bins), so on a machine whose page faults are slow they are bound by that:
the table shows a bare copy of the same bytes into fresh memory, measured in the same run, as
the floor. The coordinator reads large replies without that copy (protocol.stream: tensors
viewed in the received parts), shown as the streamed row.
"""

from __future__ import annotations

import torch

from benchmarks.table import Row, median_seconds
from fedmq.protocol.messages import Reply, decode_message, encode_message
from fedmq.protocol.stream import StreamedReply, read_reply

MODEL_BYTES = 256 << 20
CHUNK = 8 << 20


def state_dict(total_bytes: int, tensors: int = 32) -> dict[str, torch.Tensor]:
    per = total_bytes // tensors // 4
    return {f"layer{i}.weight": torch.randn(per) for i in range(tensors)}


def _read_streamed(parts: list[bytes]) -> int:
    reply = read_reply(parts)
    assert isinstance(reply, StreamedReply)
    update = reply.update
    return sum(piece.numel() for name in update.shapes() for _, piece in update.pieces(name))


def run() -> list[Row]:
    update = state_dict(MODEL_BYTES)
    reply = Reply(job="bench", round=1, task_id="t", worker="w", update=update, num_examples=1, metrics={})
    encoded = encode_message(reply)
    gb = len(encoded) / 1e9
    encode_s = median_seconds(lambda: encode_message(reply), repeats=5)
    decode_s = median_seconds(lambda: decode_message(encoded), repeats=5)
    whole = bytes(encoded)
    # The parts as a chunked delivery holds them (broker.chunks): cut once, outside the timing.
    parts = [whole[i:i + CHUNK] for i in range(0, len(whole), CHUNK)]
    del whole

    def decode_chunked() -> None:
        decode_message(list(parts))  # a fresh list: the decoder consumes the one it is given

    chunked_s = median_seconds(decode_chunked, repeats=5)
    streamed_s = median_seconds(lambda: _read_streamed(parts), repeats=5)
    source = bytearray(len(encoded))
    copy_s = median_seconds(lambda: bytes(source), repeats=5)
    note = f"{len(encoded) >> 20} MiB, {len(update)} tensors, median of 5"
    return [
        Row("codec encode", gb / encode_s, "GB/s", ">= 1.0", note),
        Row("codec decode", gb / decode_s, "GB/s", ">= 1.0", note),
        Row("codec decode, 8 MiB parts", gb / chunked_s, "GB/s", ">= 1.0", "as a chunked delivery arrives: its parts"),
        Row("codec decode, streamed from 8 MiB parts", gb / streamed_s, "GB/s", ">= 1.0",
            "the coordinator's read of a large reply: every tensor piece, no copy"),
        Row("the floor: copying the same bytes into fresh memory", gb / copy_s, "GB/s", ">= 0",
            "page faults included, as in the rows above"),
    ]
