"""A coordinator that asks for too much, and replies that are replayed, forged or repeated."""

from __future__ import annotations

import pytest
import torch

from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.crypto import CryptoError
from fedmq.protocol.secagg.errors import Refused, Rejected
from fedmq.worker.secagg.session import State
from tests.secagg.rig import Rig


def _at_unmask(n: int = 4) -> Rig:
    rig = Rig(n)
    for _ in range(3):  # advertise, share, masked input
        rig.step()
    return rig


def test_a_coordinator_asking_for_both_shares_of_one_worker_is_refused() -> None:
    # Given a round at UNMASK, where worker w0 sent the seed share of w1 (w1 survived)
    rig = _at_unmask()
    session = rig.sessions["w0"]
    first = session.handle(m.UnmaskRequest(job="job", round=1, survivors=(0, 1, 2, 3), dropped=()))
    assert isinstance(first, m.UnmaskReply) and 1 in first.seed_shares
    # When the coordinator then claims w1 dropped, asking for its key share
    second = m.UnmaskRequest(job="job", round=1, survivors=(0, 2, 3), dropped=(1,))
    # Then w0 refuses, and leaves the round
    with pytest.raises(Refused, match="both shares of one worker"):
        session.handle(second)
    assert session.state is State.FAILED
    with pytest.raises(Refused):
        session.handle(m.UnmaskRequest(job="job", round=1, survivors=(0, 1, 2, 3), dropped=()))


def test_the_same_unmask_request_again_is_answered_again() -> None:
    # Given an unmask request answered once (its reply may have been lost)
    rig = _at_unmask()
    request = m.UnmaskRequest(job="job", round=1, survivors=(0, 1, 2, 3), dropped=())
    first = rig.sessions["w2"].handle(request)
    # Then asking again reveals nothing new: the same shares
    assert rig.sessions["w2"].handle(request) == first


@pytest.mark.parametrize(("survivors", "dropped", "why"), [
    ((0, 1, 2, 3), (1,), "do not split"),  # w1 both survived and dropped
    ((0, 1, 2), (), "do not split"),  # w3 vanished from both lists
    ((1, 2, 3), (0,), "this worker among them"),  # the asked worker listed as dropped
])
def test_inconsistent_survivor_lists_are_refused(survivors: tuple[int, ...], dropped: tuple[int, ...], why: str) -> None:
    rig = _at_unmask()
    with pytest.raises(Refused, match=why):
        rig.sessions["w0"].handle(m.UnmaskRequest(job="job", round=1, survivors=survivors, dropped=dropped))


def test_a_reply_replayed_from_an_earlier_round_is_rejected() -> None:
    # Given every reply of round 1, and round 2 at its masked-input stage
    old = Rig(4, round_=1)
    old_replies = [old.step() for _ in range(4)]
    new = Rig(4, round_=2)
    new.step()
    new.step()
    # When round 1's masked input of w0 arrives, from w0 / Then it is rejected as a replay
    with pytest.raises(Rejected, match="round 1"):
        new.coordinator.receive(old_replies[2]["w0"], sender="w0")
    # and round 2 completes without it
    new.step()
    unmasked = new.step()
    assert new.coordinator.done
    # after which even its own replies are refused
    with pytest.raises(Rejected, match="after the round ended"):
        new.coordinator.receive(unmasked["w0"], sender="w0")


def test_a_forged_sender_is_rejected() -> None:
    # Given a round at its share stage, and w1's reply
    rig = Rig(4)
    rig.step()
    reply = rig.sessions["w1"].handle(rig.requests["w1"])
    # When it arrives from w2's connection (w2 claims to be w1) / Then it is rejected
    with pytest.raises(Rejected, match="forged sender"):
        rig.coordinator.receive(reply, sender="w2")
    with pytest.raises(Rejected, match="not in this round"):
        rig.coordinator.receive(reply, sender="mallory")
    # And from w1 it is taken, once
    rig.coordinator.receive(reply, sender="w1")
    with pytest.raises(Rejected, match="second"):
        rig.coordinator.receive(reply, sender="w1")


def test_a_reply_from_an_earlier_stage_is_rejected() -> None:
    rig = Rig(3)
    advertised = rig.step()
    with pytest.raises(Rejected, match="stage ADVERTISE reply .* during stage SHARE"):
        rig.coordinator.receive(advertised["w0"], sender="w0")


def test_a_worker_rejects_a_replayed_request_and_carries_on() -> None:
    # Given round 2's sessions at SHARE, and round 1's advertise request
    rig = Rig(3, round_=2)
    rig.step()
    stale = m.AdvertiseRequest(job="job", round=1, params=rig.params, nonce=b"n" * 32, roster=("w0", "w1", "w2"))
    with pytest.raises(Rejected, match="round 1"):
        rig.sessions["w0"].handle(stale)
    with pytest.raises(Rejected, match="out of order"):
        rig.sessions["w0"].handle(m.AdvertiseRequest(job="job", round=2, params=rig.params, nonce=b"n" * 32,
                                                     roster=("w0", "w1", "w2")))
    # Then the round still completes
    for _ in range(3):
        rig.step()
    assert rig.coordinator.done


def test_shares_routed_to_the_wrong_worker_do_not_open() -> None:
    # Given a round at MASKED_INPUT, and the shares meant for w1
    rig = Rig(3)
    rig.step()
    rig.step()
    meant_for_w1 = rig.requests["w1"]
    assert isinstance(meant_for_w1, m.MaskedInputRequest)
    # When the coordinator relabels them as w2's / Then w2 cannot open them
    moved = m.MaskedInputRequest(job="job", round=1, recipient=2, shared=meant_for_w1.shared,
                                 sealed={0: meant_for_w1.sealed[0], 1: meant_for_w1.sealed[2]})
    with pytest.raises(CryptoError):
        rig.sessions["w2"].handle(moved)


def test_a_share_reply_to_other_than_the_neighbours_is_rejected() -> None:
    rig = Rig(3)
    rig.step()
    reply = rig.sessions["w0"].handle(rig.requests["w0"])
    assert isinstance(reply, m.ShareReply)
    partial = m.ShareReply(job="job", round=1, sender=0, sealed={1: reply.sealed[1]})
    with pytest.raises(Rejected, match="neighbours"):
        rig.coordinator.receive(partial, sender="w0")


def test_a_masked_input_of_the_wrong_size_or_with_padding_bits_is_rejected() -> None:
    # Given a round at MASKED_INPUT over 24 coordinates + the count: 25 elements, so each bit
    # plane is 4 bytes of which the last 7 bits are padding
    rig = Rig(3, extra=1)
    rig.step()
    rig.step()
    reply = rig.sessions["w0"].handle(rig.requests["w0"])
    assert isinstance(reply, m.MaskedInputReply) and reply.masked.shape == (rig.params.ring_bits, 4)

    def send(masked: torch.Tensor) -> None:
        rig.coordinator.receive(m.MaskedInputReply(job="job", round=1, sender=0, masked=masked), sender="w0")
    # When the planes are a byte short, or a plane is missing / Then each is rejected
    for masked in (reply.masked[:, :-1], reply.masked[:-1]):
        with pytest.raises(Rejected, match="shape"):
            send(masked)
    # And so is a padding bit set
    padded = reply.masked.clone()
    padded[0, -1] |= 0x80
    with pytest.raises(Rejected, match="padding"):
        send(padded)
    # While the true reply is still taken
    send(reply.masked)


def test_a_withdrawn_worker_is_no_longer_awaited_and_the_round_goes_on_without_it() -> None:
    # Given 4 workers at SHARE, where w3 reports that it left the round
    rig = Rig(4)
    rig.step()
    rig.coordinator.withdraw("w3")
    # Then the stage waits only for the other three, refuses w3's late reply, and completes
    assert rig.coordinator.expected == {"w0", "w1", "w2"}
    late = rig.sessions["w3"].handle(rig.requests["w3"])
    with pytest.raises(Rejected, match="not part of stage SHARE"):
        rig.coordinator.receive(late, sender="w3")
    rig.step(skip=["w3"])
    rig.step()
    rig.step()
    assert rig.coordinator.result is not None and rig.coordinator.result.contributors == ("w0", "w1", "w2")
