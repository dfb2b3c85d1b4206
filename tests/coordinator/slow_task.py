"""The toy task with local training that takes longer than two heartbeat intervals."""

import logging
import time

from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker.tasks import toy
from fedmq.worker.tasks.toy import build_model, load_shard, loss  # noqa: F401 - the task contract

TRAIN_SECONDS = 3.5


def train(model: nn.Module, dataset: object, config: TrainConfig) -> dict[str, float]:
    logging.getLogger("fedmq.worker").info("slow task: training starts")
    time.sleep(TRAIN_SECONDS)  # stands in for a long epoch
    return {"train_loss": float(toy.loss(model(dataset[0]), dataset[1]))}  # type: ignore[index]
