"""The wire contract: messages, the tensor codec and the error tree."""

from protocol.errors import (
    BrokerError,
    BrokerUnreachable,
    ChunkError,
    DecodeError,
    FedmqError,
    TaskError,
    TrainingFailed,
    Unroutable,
    UnsupportedVersion,
)
from protocol.messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    EvaluateTask,
    Message,
    Reply,
    TrainConfig,
    TrainTask,
    decode_message,
    encode_message,
)

__all__ = [
    "PROTOCOL_VERSION",
    "BrokerError",
    "BrokerUnreachable",
    "ChunkError",
    "DecodeError",
    "ErrorReply",
    "EvaluateTask",
    "FedmqError",
    "Message",
    "Reply",
    "TaskError",
    "TrainConfig",
    "TrainTask",
    "TrainingFailed",
    "Unroutable",
    "UnsupportedVersion",
    "decode_message",
    "encode_message",
]
