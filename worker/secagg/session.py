"""One worker's secure-aggregation round, as a state machine: handle(request) -> reply.

The update and every secret (the two private keys, the self-mask seed, the shares others sealed
to this worker) live in this object's memory only and are never sent in the clear. The session
checks every request against what it has seen: a request for another job, round or stage is
Rejected (that message's failure only); a request that would leak by this worker's own lights is
Refused and ends the session: both shares of one peer, survivor sets that contradict the workers
it was told had shared, fewer than t - 1 neighbours masking with it. What it cannot see is another
worker's view: a coordinator that tells different workers different survivor sets is an active
adversary, outside the honest-but-curious model (Bonawitz et al.'s signed consistency check,
not implemented, is the defence).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fedmq.protocol.secagg import keys as k
from fedmq.protocol.secagg import masking, messages as m
from fedmq.protocol.secagg.crypto import generate_private_key, private_bytes, public_bytes
from fedmq.protocol.secagg.errors import Refused, Rejected, SecAggError
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.protocol.secagg.shamir import split
from fedmq.worker.secagg.reveal import RevealLedger


class State(enum.Enum):
    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    FAILED = "failed"


@dataclass
class _Round:
    """What the session learns as the stages go by."""

    params: SecAggParams
    nonce: bytes
    index: int
    keys: dict[int, m.PublicKeys] = field(default_factory=dict)  # U1
    neighbours: frozenset[int] = frozenset()
    shared: frozenset[int] = frozenset()  # U2
    held: dict[int, tuple[int, int]] = field(default_factory=dict)  # owner -> (seed share, key share)


class WorkerSession:
    """A worker's part in one round of secure aggregation over its trained `update`."""

    def __init__(self, *, job: str, round_: int, name: str, update: Mapping[str, torch.Tensor],
                 num_examples: int) -> None:
        self.job, self.round, self.name = job, round_, name
        self.state = State.NEW
        self._update: dict[str, torch.Tensor] | None = dict(update)
        self._num_examples = num_examples
        self._c = generate_private_key()
        self._s = generate_private_key()
        self._seed = os.urandom(32)
        self._r: _Round | None = None
        self._ledger = RevealLedger()

    def handle(self, request: m.Request) -> m.Reply:
        """The reply to one stage request. Rejected: not this round's next request (the session
        is unchanged). Refused or SecAggError: the session is over and answers nothing more."""
        if request.job != self.job or request.round != self.round:
            raise Rejected(f"a stage {request.stage.name} request for job {request.job!r:.80} round "
                           f"{request.round} reached the session of {self.job!r} round {self.round}")
        if self.state is State.FAILED:
            raise Refused("this worker has left the round after a refused request")
        expected = {State.NEW: m.Stage.ADVERTISE, State.ADVERTISED: m.Stage.SHARE,
                    State.SHARED: m.Stage.MASKED_INPUT, State.MASKED: m.Stage.UNMASK}[self.state]
        if request.stage is not expected:  # a re-sent unmask request is expected again: the ledger rules
            raise Rejected(f"stage {request.stage.name} request out of order: the session expects {expected.name}")
        try:
            return self._dispatch(request)
        except Rejected:
            raise
        except SecAggError:
            self._forget()
            raise

    def _dispatch(self, request: m.Request) -> m.Reply:
        if isinstance(request, m.AdvertiseRequest):
            return self._advertise(request)
        if isinstance(request, m.ShareRequest):
            return self._share(request)
        if isinstance(request, m.MaskedInputRequest):
            return self._masked_input(request)
        return self._unmask(request)

    def _advertise(self, request: m.AdvertiseRequest) -> m.AdvertiseReply:
        if self.name not in request.roster or len(request.roster) != request.params.num_workers:
            raise Refused(f"worker {self.name!r} is not in the round's roster of {request.params.num_workers}")
        assert self._update is not None
        masking.flatten(self._update, masking.layout_of(self._update))  # fails now, not at stage 3
        self._r = _Round(params=request.params, nonce=request.nonce, index=request.roster.index(self.name))
        self.state = State.ADVERTISED
        keys = m.PublicKeys(c_public=public_bytes(self._c), s_public=public_bytes(self._s))
        return m.AdvertiseReply(job=self.job, round=self.round, sender=self._r.index, keys=keys)

    def _share(self, request: m.ShareRequest) -> m.ShareReply:
        r = self._own_round()
        own = m.PublicKeys(c_public=public_bytes(self._c), s_public=public_bytes(self._s))
        if request.keys.get(r.index) != own:
            raise Refused("the roster does not carry this worker's own public keys")
        self._check_roster(request.keys, r.params)
        r.keys = dict(request.keys)
        r.neighbours = k.graph(r.keys, params=r.params, nonce=r.nonce, job=self.job, round_=self.round)[r.index]
        holders = sorted(r.neighbours | {r.index})
        t = k.holder_threshold(r.params, holders=len(holders), members=len(r.keys))
        xs = [h + 1 for h in holders]
        seed_shares = split(self._seed, threshold=t, xs=xs)
        key_shares = split(private_bytes(self._s), threshold=t, xs=xs)
        r.held[r.index] = (seed_shares[r.index + 1], key_shares[r.index + 1])
        sealed = {v: k.seal_pair(self._c, r.keys[v].c_public, job=self.job, round_=self.round, sender=r.index,
                                 recipient=v, seed_share=seed_shares[v + 1], key_share=key_shares[v + 1])
                  for v in sorted(r.neighbours)}
        self.state = State.SHARED
        return m.ShareReply(job=self.job, round=self.round, sender=r.index, sealed=sealed)

    def _masked_input(self, request: m.MaskedInputRequest) -> m.MaskedInputReply:
        r = self._own_round()
        shared = frozenset(request.shared)
        if request.recipient != r.index:
            raise Rejected(f"shares routed to worker {request.recipient} reached worker {r.index}")
        if r.index not in shared or not shared <= r.keys.keys() or len(shared) < r.params.threshold:
            raise Refused(f"the coordinator's list of {len(shared)} workers that shared is inconsistent "
                          f"with this round (threshold {r.params.threshold})")
        if set(request.sealed) != r.neighbours & shared:
            raise Refused("the routed shares do not come from exactly the neighbours that shared")
        # Bell et al.: at least t - 1 neighbours must mask with this worker. A coordinator that listed
        # too few (say, none) would get an input masked by the self mask alone, then its seed.
        t = k.holder_threshold(r.params, holders=len(r.neighbours) + 1, members=len(r.keys))
        if len(r.neighbours & shared) < t - 1:
            raise Refused(f"only {len(r.neighbours & shared)} of this worker's neighbours are listed as having "
                          f"shared; its input needs at least {t - 1} pairwise masks")
        for v, sealed in request.sealed.items():
            r.held[v] = k.open_pair(self._c, r.keys[v].c_public, sealed, job=self.job, round_=self.round,
                                    sender=v, recipient=r.index)
        r.shared = shared
        masked = self._mask(r)
        self.state = State.MASKED
        return m.MaskedInputReply(job=self.job, round=self.round, sender=r.index,
                                  masked=masking.pack_ring(masked, r.params.ring_bits))

    def _mask(self, r: _Round) -> torch.Tensor:
        """[n_u * q, n_u] + PRG(b_u) + sum of +-PRG(pairwise key) over neighbours that shared."""
        assert self._update is not None
        update, self._update = self._update, None  # the update leaves memory once masked
        vector = masking.flatten(update, masking.layout_of(update))
        acc = masking.encode_input(vector, num_examples=self._num_examples, params=r.params)
        bits = r.params.ring_bits
        masking.add_mask_(acc, k.self_mask_key(self._seed, job=self.job, round_=self.round), bits=bits, sign=1)
        for v in sorted(r.neighbours & r.shared):
            key = k.pairwise_mask_key(self._s, r.keys[v].s_public, job=self.job, round_=self.round)
            masking.add_mask_(acc, key, bits=bits, sign=k.pairwise_sign(r.index, v))
        return acc

    def _unmask(self, request: m.UnmaskRequest) -> m.UnmaskReply:
        r = self._own_round()
        survivors, dropped = frozenset(request.survivors), frozenset(request.dropped)
        if survivors & dropped or survivors | dropped != r.shared:
            raise Refused("the survivors and dropped workers do not split the workers that shared")
        if r.index not in survivors or len(survivors) < r.params.threshold:
            raise Refused(f"{len(survivors)} survivor(s) listed, this worker among them: "
                          f"{r.index in survivors}; the threshold is {r.params.threshold}")
        owners = sorted(r.held)
        self._ledger.reveal(seeds=[o for o in owners if o in survivors], keys=[o for o in owners if o in dropped])
        return m.UnmaskReply(job=self.job, round=self.round, sender=r.index,
                             seed_shares={o: r.held[o][0] for o in owners if o in survivors},
                             key_shares={o: r.held[o][1] for o in owners if o in dropped})

    def _check_roster(self, keys: Mapping[int, m.PublicKeys], params: SecAggParams) -> None:
        if len(keys) < params.threshold or not all(0 <= i < params.num_workers for i in keys):
            raise Refused(f"the roster lists {len(keys)} workers of {params.num_workers}; "
                          f"the threshold is {params.threshold}")
        publics = [p.c_public for p in keys.values()] + [p.s_public for p in keys.values()]
        if len(set(publics)) != len(publics):
            raise Refused("two public keys in the roster are equal")

    def _own_round(self) -> _Round:
        assert self._r is not None  # handle() checked the state
        return self._r

    def _forget(self) -> None:
        """Drops the update and the secrets (as far as Python lets memory go) and fails the session."""
        self.state = State.FAILED
        self._update, self._r = None, None
