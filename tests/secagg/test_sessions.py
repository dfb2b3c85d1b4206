"""A worker's secure-aggregation sessions: replies, an error for a round it cannot serve or a
request it refuses, silence for stale requests, and bounded memory."""

from __future__ import annotations

import torch

from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.worker.secagg.sessions import SecAggSessions

PARAMS = SecAggParams(num_workers=3, threshold=2, neighbours=2)
UPDATE = {"w": torch.full((4,), 0.1)}


def _advertise(round_: int = 1) -> m.AdvertiseRequest:
    return m.AdvertiseRequest(job="job", round=round_, params=PARAMS, nonce=b"n" * 32, roster=("w0", "w1", "w2"))


def test_a_held_update_answers_its_round_and_ignores_a_repeat() -> None:
    # Given w1 holding its update for round 1
    sessions = SecAggSessions("w1")
    sessions.open(job="job", round_=1, update=UPDATE, num_examples=12)
    # When round 1's advertise request arrives / Then w1's keys come back, as index 1
    outcome = sessions.answer(_advertise())
    assert isinstance(outcome.reply, m.AdvertiseReply) and outcome.reply.sender == 1 and outcome.error is None
    # And a repeat (a redelivery) gets neither a reply nor an error, and the session lives on
    assert sessions.answer(_advertise()) == type(outcome)() and ("job", 1) in sessions


def test_a_request_for_a_round_without_a_session_gets_an_error() -> None:
    sessions = SecAggSessions("w1")
    sessions.open(job="job", round_=1, update=UPDATE, num_examples=12)
    outcome = sessions.answer(_advertise(round_=7))
    assert outcome.reply is None and outcome.error is not None and "no secure-aggregation session" in outcome.error


def test_a_refused_request_ends_the_session_with_an_error() -> None:
    # Given a session asked to advertise in a roster that does not name it
    sessions = SecAggSessions("w9")
    sessions.open(job="job", round_=1, update=UPDATE, num_examples=3)
    outcome = sessions.answer(_advertise())
    # Then the outcome is an error naming the stage, and the session and its secrets are gone
    assert outcome.reply is None and outcome.error is not None and "stage ADVERTISE" in outcome.error
    assert ("job", 1) not in sessions


def test_a_newer_round_drops_the_older_session_and_at_most_four_are_kept() -> None:
    sessions = SecAggSessions("w1")
    sessions.open(job="job", round_=1, update=UPDATE, num_examples=3)
    sessions.open(job="job", round_=2, update=UPDATE, num_examples=3)
    assert ("job", 1) not in sessions and ("job", 2) in sessions
    for job in ("a", "b", "c", "d"):
        sessions.open(job=job, round_=1, update=UPDATE, num_examples=3)
    assert len(sessions) == 4 and ("job", 2) not in sessions
