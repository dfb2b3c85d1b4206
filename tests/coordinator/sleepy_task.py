"""digits, whose local training first sleeps $FEDMQ_TEST_TRAIN_SLEEP_S seconds (none by default)
and then waits while the file $FEDMQ_TEST_PAUSE_FILE exists.

Fault tests set the sleep for one worker process to make it a straggler, or to kill it while it
is surely training (it prints a marker line when training starts); the pause file holds a run
mid-way, deterministically, while a fault is staged.
"""

import os
import sys
import time

from torch import nn

from fedmq.protocol.messages import TrainConfig
from fedmq.worker import training
from fedmq.worker.tasks.digits import DEFAULT_LR, build_model, load_shard, load_test  # noqa: F401 - the task contract

SLEEP_ENV = "FEDMQ_TEST_TRAIN_SLEEP_S"
PAUSE_ENV = "FEDMQ_TEST_PAUSE_FILE"
STARTED = "sleepy task: training starts"


def train(model: nn.Module, dataset: tuple, config: TrainConfig) -> dict[str, float]:  # type: ignore[type-arg]
    print(STARTED, file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
    pause = os.environ.get(PAUSE_ENV)
    while pause and os.path.exists(pause):
        time.sleep(0.05)
    return training.train(model, dataset, config, nn.functional.cross_entropy)
