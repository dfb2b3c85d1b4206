"""The coordinator's side of one secure-aggregation round, as a state machine.

    round = SecAggRound(job=..., round_=..., params=..., roster=names, layout=layout)
    requests = round.start()                 # {worker name: request}
    while not round.done:
        ...deliver requests, then for each reply: round.receive(reply, sender=authenticated name)
        requests = round.advance()           # closes the stage; TooFewSurvivors below T
    round.result                             # the example-weighted sum and the example count

The coordinator relays everything and is honest but curious: it never holds an individual
update, only masked inputs (which look uniform) and, after the inputs are in, the shares that
remove the masks from their sum. `receive` refuses (Rejected: that message only) any reply whose
job, round or stage is not the current one (a replay), whose claimed index is not the transport's
authenticated sender (a forgery), a second reply from one worker, and replies whose contents do
not fit the stage (wrong recipients, lengths or owners). Masked inputs are folded into one ring
sum as they arrive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from fedmq.coordinator.secagg import unmask
from fedmq.protocol.secagg import keys as k
from fedmq.protocol.secagg.crypto import CryptoError, agree, generate_private_key
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.errors import Rejected, TooFewSurvivors
from fedmq.protocol.secagg.params import SecAggParams


@dataclass(frozen=True, kw_only=True, eq=False)
class SecAggResult:
    """The unmasked sum: sum of n_u * update_u over `contributors`, and sum of n_u."""

    weighted_sum: dict[str, torch.Tensor]
    total_examples: int
    contributors: tuple[str, ...]

    def mean(self) -> dict[str, torch.Tensor]:
        """The example-weighted mean (FedAvg's aggregate)."""
        return {name: t / self.total_examples for name, t in self.weighted_sum.items()}


class SecAggRound:
    def __init__(self, *, job: str, round_: int, params: SecAggParams, roster: Sequence[str],
                 layout: masking.Layout, nonce: bytes | None = None) -> None:
        if len(roster) != params.num_workers or len(set(roster)) != len(roster):
            raise ValueError(f"the roster must name {params.num_workers} distinct workers")
        self.job, self.round, self.params, self.layout = job, round_, params, layout
        self.roster = tuple(roster)
        self._index = {name: i for i, name in enumerate(self.roster)}
        self.nonce = os.urandom(m.ROUND_NONCE_BYTES) if nonce is None else nonce
        self.stage: m.Stage | None = None  # the stage whose replies are being collected
        self._expected: frozenset[int] = frozenset()
        self._replies: dict[int, m.Reply] = {}
        self._keys: dict[int, m.PublicKeys] = {}  # U1
        self._graph: dict[int, frozenset[int]] = {}
        self._sealed: dict[int, dict[int, bytes]] = {}  # U2: sender -> recipient -> ciphertext
        self._total: torch.Tensor | None = None
        self._survivors: frozenset[int] = frozenset()  # U3
        self.result: SecAggResult | None = None

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def expected(self) -> frozenset[str]:
        """The workers whose replies the current stage waits for."""
        return frozenset(self.roster[i] for i in self._expected)

    @property
    def answered(self) -> frozenset[str]:
        return frozenset(self.roster[i] for i in self._replies)

    def start(self) -> dict[str, m.Request]:
        """Stage ADVERTISE's request to every sampled worker."""
        if self.stage is not None:
            raise RuntimeError("the round has started already")
        request = m.AdvertiseRequest(job=self.job, round=self.round, params=self.params,
                                     nonce=self.nonce, roster=self.roster)
        return self._open(m.Stage.ADVERTISE, range(len(self.roster)), lambda _: request)

    def receive(self, reply: m.Reply, *, sender: str) -> None:
        """Takes one reply from `sender`, the identity the transport authenticated."""
        index = self._index.get(sender)
        if index is None:
            raise Rejected(f"a reply from {sender!r:.80}, who is not in this round")
        if reply.job != self.job or reply.round != self.round:
            raise Rejected(f"a reply from {sender!r} for job {reply.job!r:.80} round {reply.round} reached "
                           f"round {self.round} of {self.job!r}: a replay or a stray")
        if self.done:
            raise Rejected(f"a stage {reply.stage.name} reply from {sender!r} after the round ended")
        if reply.stage is not self.stage:
            raise Rejected(f"a stage {reply.stage.name} reply from {sender!r} during stage "
                           f"{self.stage.name if self.stage else 'none'}: a replay or too late")
        if reply.sender != index:
            raise Rejected(f"a reply claims to be worker {reply.sender} but came from {sender!r} "
                           f"(worker {index}): a forged sender")
        if index not in self._expected:
            raise Rejected(f"{sender!r} is not part of stage {self.stage.name}")
        if index in self._replies:
            raise Rejected(f"a second stage {self.stage.name} reply from {sender!r}: a replay")
        self._replies[index] = self._check(reply, index)

    def withdraw(self, sender: str) -> None:
        """Stops waiting for `sender` in this stage: it reported that it left the round (an
        ErrorReply), so the stage can close without waiting out its timeout. Its later replies
        to this stage are rejected; it is dropped from the round from here on."""
        index = self._index.get(sender)
        if index is not None and index not in self._replies:
            self._expected = self._expected - {index}

    def advance(self) -> dict[str, m.Request]:
        """Closes the current stage with the replies received; the next stage's requests (none
        after UNMASK: then `result` is set). TooFewSurvivors when fewer than T answered."""
        answered = frozenset(self._replies)
        if self.stage is None or self.done:
            raise RuntimeError("advance() needs a started, unfinished round")
        if len(answered) < self.params.threshold:
            raise TooFewSurvivors(stage=self.stage.name, survived=len(answered), threshold=self.params.threshold)
        replies = dict(self._replies)
        if self.stage is m.Stage.ADVERTISE:
            return self._after_advertise(replies)
        if self.stage is m.Stage.SHARE:
            return self._after_share(replies)
        if self.stage is m.Stage.MASKED_INPUT:
            self._survivors = answered
            request = m.UnmaskRequest(job=self.job, round=self.round, survivors=tuple(sorted(answered)),
                                      dropped=tuple(sorted(self._sealed.keys() - answered)))
            return self._open(m.Stage.UNMASK, answered, lambda _: request)
        self._finish(replies)
        return {}

    def _after_advertise(self, replies: dict[int, m.Reply]) -> dict[str, m.Request]:
        self._keys = {i: r.keys for i, r in replies.items() if isinstance(r, m.AdvertiseReply)}
        self._graph = k.graph(self._keys, params=self.params, nonce=self.nonce, job=self.job, round_=self.round)
        request = m.ShareRequest(job=self.job, round=self.round, keys=dict(self._keys))
        return self._open(m.Stage.SHARE, self._keys, lambda _: request)

    def _after_share(self, replies: dict[int, m.Reply]) -> dict[str, m.Request]:
        self._sealed = {i: r.sealed for i, r in replies.items() if isinstance(r, m.ShareReply)}
        shared = tuple(sorted(self._sealed))
        self._total = torch.zeros(masking.vector_length(self.layout), dtype=torch.int64)

        def routed(u: int) -> m.Request:
            sealed = {v: self._sealed[v][u] for v in shared if u in self._sealed[v]}
            return m.MaskedInputRequest(job=self.job, round=self.round, recipient=u, shared=shared, sealed=sealed)
        return self._open(m.Stage.MASKED_INPUT, shared, routed)

    def _open(self, stage: m.Stage, members: Iterable[int], build: Callable[[int], m.Request]) -> dict[str, m.Request]:
        self.stage, self._replies = stage, {}
        self._expected = frozenset(members)
        return {self.roster[i]: build(i) for i in sorted(self._expected)}

    def _check(self, reply: m.Reply, index: int) -> m.Reply:
        """The reply to keep once its contents fit the stage; Rejected otherwise."""
        name = self.roster[index]
        if isinstance(reply, m.AdvertiseReply):
            seen = {key for r in self._replies.values() if isinstance(r, m.AdvertiseReply)
                    for key in (r.keys.c_public, r.keys.s_public)}
            if reply.keys.c_public == reply.keys.s_public or {reply.keys.c_public, reply.keys.s_public} & seen:
                raise Rejected(f"{name!r} advertised a public key already in use this round")
            _check_agreeable(reply.keys, name)
        elif isinstance(reply, m.ShareReply):
            if set(reply.sealed) != self._graph[index]:
                raise Rejected(f"{name!r} sealed shares to {len(reply.sealed)} workers, not to exactly "
                               f"its {len(self._graph[index])} neighbours")
        elif isinstance(reply, m.MaskedInputReply):
            self._fold(reply.masked, name)
            return replace(reply, masked=torch.zeros(0, 1, dtype=torch.uint8))  # folded: let it go
        else:
            owners = (self._graph[index] & self._sealed.keys()) | {index}
            if (set(reply.seed_shares) != owners & self._survivors
                    or set(reply.key_shares) != owners - self._survivors):
                raise Rejected(f"{name!r} revealed shares of other workers than those it holds and was asked for")
        return reply

    def _fold(self, masked: torch.Tensor, name: str) -> None:
        assert self._total is not None
        bits, length = self.params.ring_bits, self._total.numel()
        shape = masking.packed_shape(length, bits)
        if masked.dtype != torch.uint8 or tuple(masked.shape) != shape:
            raise Rejected(f"{name!r} sent a masked input of shape {tuple(masked.shape)} {masked.dtype}; "
                           f"the round expects {shape} uint8 ({length} ring elements of {bits} bits)")
        ring = masking.unpack_ring(masked)
        if bool(ring[length:].any()):
            raise Rejected(f"{name!r} sent a masked input whose padding bits are set")
        self._total.add_(ring[:length]).bitwise_and_(masking.ring_mask(bits))

    def _finish(self, replies: dict[int, m.Reply]) -> None:
        """Rebuilds the survivors' seeds and the dropped workers' keys, strips the masks, decodes."""
        assert self._total is not None
        total, bits, shared = self._total, self.params.ring_bits, self._sealed.keys()
        reveals = [r for r in replies.values() if isinstance(r, m.UnmaskReply)]
        def threshold(owner: int) -> tuple[int, int]:  # (shares needed, holders) of one owner's secrets
            holders = len(self._graph[owner]) + 1
            return k.holder_threshold(self.params, holders=holders, members=len(self._keys)), holders
        for u in sorted(self._survivors):
            t, holders = threshold(u)
            seed = unmask.rebuild(u, {r.sender: r.seed_shares[u] for r in reveals if u in r.seed_shares},
                                  threshold=t, holders=holders, what="self-mask seed", name=self.roster[u])
            unmask.strip_self_mask(total, seed, job=self.job, round_=self.round, bits=bits)
        for v in sorted(shared - self._survivors):
            t, holders = threshold(v)
            private = unmask.rebuild(v, {r.sender: r.key_shares[v] for r in reveals if v in r.key_shares},
                                     threshold=t, holders=holders, what="pairwise-mask key", name=self.roster[v])
            unmask.strip_pairwise_masks(total, dropped=v, private=private, keys=self._keys,
                                        partners=self._graph[v] & self._survivors, job=self.job,
                                        round_=self.round, bits=bits)
        vector, examples = masking.decode_sum(total, params=self.params)
        self.result = SecAggResult(weighted_sum=masking.unflatten(vector, self.layout), total_examples=examples,
                                   contributors=tuple(self.roster[u] for u in sorted(self._survivors)))
        self._total = None


def _check_agreeable(keys: m.PublicKeys, name: str) -> None:
    """Rejected unless both keys agree with a fresh key: a low-order point would make every honest
    neighbour's key agreement fail, and with it the round (a peer's denial of service)."""
    probe = generate_private_key()
    for key in (keys.c_public, keys.s_public):
        try:
            agree(probe, key)
        except CryptoError as e:
            raise Rejected(f"{name!r} advertised a public key no peer can agree with: {e}") from None
