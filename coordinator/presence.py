"""The coordinator's heartbeat for `fedmq status`: its job's progress, once per round, and how it ended.

Best effort like the workers' beats: a beat that cannot be sent is logged and dropped, since
status must never fail a training run.
"""

from __future__ import annotations

import logging
import time

from fedmq.broker.base import Broker
from fedmq.protocol.errors import BrokerError
from fedmq.protocol.presence import JobState, Presence, Role, encode_presence

log = logging.getLogger("fedmq.coordinator")


def announce(broker: Broker, job: str, task: str, round_: int, rounds: int, state: JobState) -> None:
    """Tell watchers that `job` completed `round_` of `rounds` and is now `state`."""
    presence = Presence(role=Role.COORDINATOR, name=job, state=state, at=time.time(), task=task,
                        job=job, round=round_, rounds=rounds)
    try:
        broker.publish_presence(encode_presence(presence))
    except BrokerError as e:
        log.debug("presence beat not sent: %s", e)
