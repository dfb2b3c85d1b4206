"""A worker's heartbeat for `fedmq status`: who it is, what it serves, what it last answered.

Beats go out at most every `interval_s` from the serve loop, and when the state changes
(training starts, a task is answered), so a long training shows as "training" rather than as
silence. A change within MIN_GAP_S of the last beat waits for the next `tick`: a host serving
many short tasks would otherwise publish two beats per task. Ticks also run while training, from
the connection's thread (Broker.run_beside_io). A failed beat is logged and dropped: presence
must never stop a worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from fedmq.broker.base import Broker
from fedmq.protocol.errors import BrokerError
from fedmq.protocol.presence import Presence, Role, WorkerState, encode_presence

log = logging.getLogger("fedmq.worker")
INTERVAL_S = 5.0
MIN_GAP_S = 1.0  # at most one beat per this many seconds for state changes


class Heartbeat:
    def __init__(self, broker: Broker, name: str, task: str, shard: str,
                 interval_s: float = INTERVAL_S, min_gap_s: float = MIN_GAP_S) -> None:
        self._broker = broker
        self._base = Presence(role=Role.WORKER, name=name, state=WorkerState.IDLE, at=0.0, task=task, shard=shard)
        self._interval_s = interval_s
        self._min_gap_s = min_gap_s
        self._state = WorkerState.IDLE
        self._job, self._round = "", 0
        self._last = -float("inf")  # time.monotonic() of the last beat
        self._next = 0.0  # time.monotonic() of the next beat

    def tick(self) -> None:
        """Beat if one is due (called on every turn of the serve loop, and while training)."""
        if time.monotonic() >= self._next:
            self._beat()

    def training(self) -> None:
        self._changed(WorkerState.TRAINING)

    def answered(self, job: str, round_: int) -> None:
        self._job, self._round = job, round_
        self._changed(WorkerState.IDLE)

    def _changed(self, state: WorkerState) -> None:
        self._state = state
        self._next = min(self._next, self._last + self._min_gap_s)
        self.tick()

    def _beat(self) -> None:
        self._last = time.monotonic()
        self._next = self._last + self._interval_s
        presence = replace(self._base, state=self._state, at=time.time(), job=self._job,
                           round=self._round)
        try:
            self._broker.publish_presence(encode_presence(presence))
        except BrokerError as e:  # the serve loop meets a real outage on its own next call
            log.debug("presence beat not sent: %s", e)
