"""Regressions from a hostile review: a malicious peer or an active coordinator against the
secure-aggregation round, each in one process through the real sessions and round.

- a peer seals an out-of-field share: the honest worker leaves the round, it does not crash;
- a peer advertises a low-order key: the coordinator rejects it before any neighbour trips on it;
- a survivor sends a corrupt unmask share: the coordinator rebuilds the secret without it;
- a coordinator lists none of a worker's neighbours as having shared: the worker refuses to mask.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fedmq.coordinator.secagg.round import SecAggRound
from fedmq.protocol.secagg import keys as k
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.crypto import Purpose, agree, derive, seal
from fedmq.protocol.secagg.errors import Refused, Rejected
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.worker.secagg.session import WorkerSession
from fedmq.worker.secagg.sessions import SecAggSessions
from tests.secagg.rig import fedavg


def _round(n: int, threshold: int, neighbours: int) -> tuple[SecAggRound, dict[str, SecAggSessions], dict[str, tuple[dict[str, torch.Tensor], int]]]:
    params = SecAggParams(num_workers=n, threshold=threshold, neighbours=neighbours, clip=1.0, max_examples=100)
    generator = torch.Generator().manual_seed(1)
    updates = {f"w{i}": ({"w": torch.randn(4, generator=generator) * 0.1}, 10) for i in range(n)}
    sessions = {name: SecAggSessions(name) for name in updates}
    for name, (update, count) in updates.items():
        sessions[name].open(job="j", round_=1, update=update, num_examples=count)
    secure = SecAggRound(job="j", round_=1, params=params, roster=list(updates), layout=masking.layout_of(updates["w0"][0]))
    return secure, sessions, updates


def test_an_out_of_field_share_from_a_peer_makes_the_worker_leave_not_crash() -> None:
    # Given a round at MASKED_INPUT among three workers
    secure, sessions, _ = _round(3, 2, 2)
    requests = secure.start()
    for _ in range(2):
        for name, request in requests.items():
            secure.receive(sessions[name].answer(request).reply, sender=name)  # type: ignore[arg-type]
        requests = secure.advance()
    # When w1 re-seals its share pair to w0 as 66 bytes of 0xff (no field element)
    w1 = sessions["w1"]._sessions[("j", 1)]
    key = derive(agree(w1._c, secure._keys[0].c_public), purpose=Purpose.SHARE_ENCRYPTION, context=k.context("j", 1))
    evil = seal(key, b"\xff" * 66, associated=k.share_binding(job="j", round_=1, sender=1, recipient=0))
    request = requests["w0"]
    assert isinstance(request, m.MaskedInputRequest)
    outcome = sessions["w0"].answer(replace(request, sealed={**request.sealed, 1: evil}))
    # Then w0 answers with an error (it leaves the round) instead of raising out of the session
    assert outcome.reply is None and outcome.error is not None and "outside the field" in outcome.error


def test_a_low_order_public_key_is_rejected_when_advertised() -> None:
    # Given a round's ADVERTISE stage
    secure, sessions, _ = _round(5, 3, 4)
    requests = secure.start()
    # When w4 advertises an all-zero (low-order) X25519 key
    forged = m.AdvertiseReply(job="j", round=1, sender=4,
                              keys=m.PublicKeys(c_public=bytes(32), s_public=bytes([9]) + bytes(31)))
    # Then the coordinator rejects that reply, and the honest workers' keys are taken
    with pytest.raises(Rejected, match="no peer can agree"):
        secure.receive(forged, sender="w4")
    for name in ("w0", "w1", "w2", "w3"):
        secure.receive(sessions[name].answer(requests[name]).reply, sender=name)  # type: ignore[arg-type]
    assert secure.answered == {"w0", "w1", "w2", "w3"}


def test_one_corrupt_unmask_share_is_left_out_and_the_sum_is_right() -> None:
    # Given five workers on the complete graph (t = 3 of 5 holders)
    secure, sessions, updates = _round(5, 3, 4)
    requests = secure.start()
    # When w4 adds 1 to every seed share it reveals
    while not secure.done:
        for name, request in requests.items():
            reply = sessions[name].answer(request).reply
            if name == "w4" and isinstance(reply, m.UnmaskReply):
                reply = replace(reply, seed_shares={o: y + 1 for o, y in reply.seed_shares.items()})
            secure.receive(reply, sender=name)  # type: ignore[arg-type]
        requests = secure.advance()
    # Then every seed is rebuilt from the others and the mean is plain FedAvg's
    assert secure.result is not None
    expected = fedavg(updates, list(updates))  # type: ignore[arg-type]
    torch.testing.assert_close(secure.result.mean()["w"].double(), expected["w"], atol=1e-4, rtol=0)


def test_a_worker_refuses_to_mask_when_none_of_its_neighbours_is_listed() -> None:
    # Given 20 workers with 4 neighbours each, at MASKED_INPUT
    params = SecAggParams(num_workers=20, threshold=11, neighbours=4, clip=1.0, max_examples=100)
    updates = {f"w{i}": {"w": torch.full((8,), 0.01 * i)} for i in range(20)}
    sessions = {name: WorkerSession(job="j", round_=1, name=name, update=u, num_examples=10) for name, u in updates.items()}
    secure = SecAggRound(job="j", round_=1, params=params, roster=list(updates), layout=masking.layout_of(updates["w0"]))
    requests = secure.start()
    for _ in range(2):
        for name, request in requests.items():
            secure.receive(sessions[name].handle(request), sender=name)
        requests = secure.advance()
    # When an active coordinator tells w0 that only non-neighbours shared (its input would then
    # carry its self mask alone, which its neighbours' seed shares remove)
    outsiders = [v for v in range(20) if v not in secure._graph[0] and v != 0][:10]
    bespoke = m.MaskedInputRequest(job="j", round=1, recipient=0, shared=tuple(sorted({0, *outsiders})), sealed={})
    # Then w0 refuses
    with pytest.raises(Refused, match="pairwise masks"):
        sessions["w0"].handle(bespoke)
