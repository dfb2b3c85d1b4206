"""A worker's answers to secure-aggregation stage requests, through the job's reply queue."""

from __future__ import annotations

import logging

from fedmq.broker.base import Broker, Delivery
from fedmq.protocol.errors import Unroutable, clip
from fedmq.protocol.messages import ErrorReply, encode_message
from fedmq.protocol.secagg import messages as m
from fedmq.worker.secagg.sessions import SecAggSessions

log = logging.getLogger("fedmq.worker")
STAGE_TASK_PREFIX = "secagg-"  # the task id of an ErrorReply to a stage request (coordinator.secagg.driver)


def answer_stage(broker: Broker, sessions: SecAggSessions, worker: str, delivery: Delivery, request: m.Request) -> None:
    """Answer one stage request from `worker`'s session, then ack it. A request the session
    refuses is answered with an ErrorReply saying why: the coordinator counts this worker out of
    the round. A stale or repeated one is acked unanswered. A reply the broker refuses
    (PublishRejected) propagates: WorkerService.take dead-letters the request."""
    outcome = sessions.answer(request)
    message: m.Reply | ErrorReply | None = outcome.reply
    if outcome.error is not None:
        message = ErrorReply(job=request.job, round=request.round, task_id=STAGE_TASK_PREFIX + request.stage.name.lower(),
                             worker=worker, reason=clip(outcome.error))
    if message is not None:
        try:
            broker.publish_reply(request.job, worker, encode_message(message))
        except Unroutable:
            log.warning("job %s has no reply queue (the job is gone); stage %s reply dropped", request.job,
                        request.stage.name)
    broker.ack(delivery)
