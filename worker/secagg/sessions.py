"""A worker's secure-aggregation sessions, by (job, round), and what to do with each request.

The worker service opens a session when a secure round's training ends (the update stays here,
never sent in the clear) and hands every stage request to `answer`. The outcome says what to
send: a reply; an error reason for an ErrorReply (the worker leaves that round: a request that
would leak, a share that does not authenticate; the coordinator counts it out); or nothing (a
stale or repeated request, which an at-least-once broker may deliver). Sessions are few and
short-lived: a newer round of a job drops the older ones with their secrets, and at most `limit`
are kept. No broker here: worker.service publishes and acks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.errors import Rejected, SecAggError
from fedmq.worker.secagg.session import State, WorkerSession

log = logging.getLogger("fedmq.worker")


@dataclass(frozen=True)
class Outcome:
    """What to send for one request: `reply`, or an ErrorReply with `error`, or nothing."""

    reply: m.Reply | None = None
    error: str | None = None


class SecAggSessions:
    def __init__(self, worker: str, *, limit: int = 4) -> None:
        self.worker = worker
        self.limit = limit
        self._sessions: dict[tuple[str, int], WorkerSession] = {}

    def open(self, *, job: str, round_: int, update: Mapping[str, torch.Tensor], num_examples: int) -> None:
        """Keeps a trained update for the round's secure aggregation; earlier rounds of the job
        (never finished: their coordinator moved on) are dropped with their secrets."""
        for key in [key for key in self._sessions if key[0] == job and key[1] <= round_]:
            del self._sessions[key]
        while len(self._sessions) >= self.limit:
            del self._sessions[next(iter(self._sessions))]  # the oldest opened
        self._sessions[(job, round_)] = WorkerSession(job=job, round_=round_, name=self.worker,
                                                      update=update, num_examples=num_examples)

    def answer(self, request: m.Request) -> Outcome:
        key = (request.job, request.round)
        session = self._sessions.get(key)
        if session is None:
            return Outcome(error=f"no secure-aggregation session for job {request.job} round {request.round} "
                                 f"(stage {request.stage.name}): this worker did not train it, or dropped it")
        try:
            reply = session.handle(request)
        except Rejected as e:
            log.warning("job %s round %d: ignored a stage %s request: %s", request.job, request.round,
                     request.stage.name, e)
            return Outcome()
        except SecAggError as e:
            del self._sessions[key]
            log.warning("job %s round %d: left secure aggregation at stage %s: %s", request.job,
                        request.round, request.stage.name, e)
            return Outcome(error=f"secure aggregation, stage {request.stage.name}: {e}")
        except Exception as e:  # noqa: BLE001 - a peer's hostile share must not end this worker
            del self._sessions[key]
            log.exception("job %s round %d: secure aggregation failed at stage %s", request.job, request.round,
                          request.stage.name)
            return Outcome(error=f"secure aggregation, stage {request.stage.name}: {type(e).__name__}: {e}")
        if session.state is State.FAILED:
            del self._sessions[key]
        return Outcome(reply=reply)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)
