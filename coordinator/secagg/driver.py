"""Secure aggregation over a broker: the coordinator relays each stage of a SecAggRound
(coordinator.secagg.round) between the workers that trained this round.

Each stage's requests go to the workers' task queues (expiring with the stage); their replies
come back through the job's reply queues and are handed to the round with the sender the broker
vouches for (the queue a reply came through, and its AMQP user_id when senders are verified). A
stage closes when every expected worker answered or its timeout passed; fewer than the threshold
fail the round with TooFewSurvivors. What no honest worker sends (bytes that do not decode, a
forged or replayed stage message) is dead-lettered with the reason, that message's failure
only; late answers to this round's train tasks are acknowledged and counted as dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from fedmq.broker.base import Broker, Delivery
from fedmq.coordinator.async_barrier import read_reply
from fedmq.coordinator.secagg.round import SecAggResult, SecAggRound
from fedmq.protocol.errors import BrokerError, clip
from fedmq.protocol.messages import ErrorReply, Reply, encode_message
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.errors import Rejected
from fedmq.worker.secagg.relay import STAGE_TASK_PREFIX

log = logging.getLogger("fedmq.coordinator")
REPLIES = (m.AdvertiseReply, m.ShareReply, m.MaskedInputReply, m.UnmaskReply)
MAX_REASON = 1000  # characters of a dead letter's reason


@dataclass
class Relayed:
    """What relaying the stages saw besides the answers the round used."""

    dropped: int = 0  # late answers to this round's train tasks (acked, not used)
    refused: dict[str, str] = field(default_factory=dict)  # worker -> why it left the round (its ErrorReply)
    dead_lettered: int = 0  # stage messages no honest worker sends
    silent: dict[str, list[str]] = field(default_factory=dict)  # stage -> workers that did not answer


class StageRelay:
    """Runs one SecAggRound to its end over `broker` for job `job`."""

    def __init__(self, broker: Broker, secure: SecAggRound, *, stage_timeout_s: float,
                 verify_senders: bool = False) -> None:
        self._broker = broker
        self._round = secure
        self._timeout_s = stage_timeout_s
        self._verify_senders = verify_senders
        self.relayed = Relayed()

    def run(self) -> SecAggResult:
        """The unmasked sum; TooFewSurvivors when a stage ends below the threshold."""
        requests = self._round.start()
        while not self._round.done:
            self._send(requests)
            self._collect(time.monotonic() + self._timeout_s)
            requests = self._round.advance()
        assert self._round.result is not None
        return self._round.result

    def _send(self, requests: dict[str, m.Request]) -> None:
        """One publish per distinct request: ADVERTISE, SHARE and UNMASK say the same to every
        worker (the roster, every public key), so they go out once for all (Broker.
        publish_shared_task) and the coordinator's bytes grow with N, not N squared; MASKED_INPUT
        requests carry each worker's own routed shares."""
        groups: dict[int, tuple[m.Request, list[str]]] = {}
        for worker, request in requests.items():
            groups.setdefault(id(request), (request, []))[1].append(worker)
        for request, workers in groups.values():
            body = encode_message(request)
            try:
                failed = self._broker.publish_shared_task(workers, body, self._timeout_s)
            except BrokerError as e:  # a lost connection is raised again by receive
                failed = dict.fromkeys(workers, e)
            for worker, error in failed.items():  # that worker's dropout
                log.warning("secure aggregation: worker %s did not get its %s request: %s", worker,
                            request.stage.name, error)

    def _collect(self, deadline: float) -> None:
        stage = self._round.stage
        while self._round.expected - self._round.answered:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delivery = self._broker.receive(timeout=min(remaining, 1.0))
            if delivery is not None:
                self._handle(delivery)
        silent = sorted(self._round.expected - self._round.answered)
        if silent and stage is not None:
            self.relayed.silent[stage.name] = silent
            log.warning("secure aggregation, stage %s: no answer from %s", stage.name, ", ".join(silent))

    def _handle(self, delivery: Delivery) -> None:
        message, refusal = read_reply(delivery, verify_senders=self._verify_senders,
                                      kinds=(Reply, ErrorReply, *REPLIES))
        if message is None:
            self._dead_letter(delivery, refusal)
            return
        if isinstance(message, (Reply, ErrorReply)) and message.job == self._round.job \
                and message.worker == delivery.source and message.round <= self._round.round:
            self._other_answer(message)
            self._broker.ack(delivery)
            return
        if not isinstance(message, REPLIES):  # a Reply or ErrorReply that is no answer of this round
            self._dead_letter(delivery, f"a {type(message).__name__} for another job, worker or round during "
                                        "secure aggregation")
            return
        try:
            self._round.receive(message, sender=delivery.source)
        except Rejected as e:
            self._dead_letter(delivery, str(e))
            return
        self._broker.ack(delivery)

    def _other_answer(self, message: Reply | ErrorReply) -> None:
        """A worker's refusal to go on with this round (it leaves it: no need to wait for it),
        or a late answer to a train task (dropped)."""
        if isinstance(message, ErrorReply) and message.round == self._round.round \
                and message.task_id.startswith(STAGE_TASK_PREFIX) and message.worker in self._round.expected:
            self.relayed.refused[message.worker] = clip(message.reason, MAX_REASON)
            self._round.withdraw(message.worker)  # its stage need not wait for it
            log.warning("secure aggregation: worker %s left the round: %s", message.worker, message.reason)
        else:
            self.relayed.dropped += 1

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        reason = clip(reason, MAX_REASON)
        log.warning("dead-lettering a reply from %s's queue: %s", delivery.source, reason)
        self.relayed.dead_lettered += 1
        self._broker.dead_letter(delivery, reason)
