"""What a worker has revealed in a round: never both shares of one peer.

If the coordinator held a survivor's self-mask seed and its pairwise key, it could strip every
mask from that worker's input and read its update. Each worker therefore remembers, for every
peer, which kind of share it has sent, and refuses a request for the other kind, whatever the
coordinator claims about who dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from fedmq.protocol.secagg.errors import Refused


class Share(enum.Enum):
    SEED = "self-mask seed"
    KEY = "pairwise-mask key"


class RevealLedger:
    def __init__(self) -> None:
        self._revealed: dict[int, Share] = {}

    def reveal(self, *, seeds: Iterable[int], keys: Iterable[int]) -> None:
        """Records one request's shares; Refused, recording nothing, if any peer would then
        have both kinds revealed."""
        asked = {owner: Share.SEED for owner in seeds}
        for owner in keys:
            if asked.get(owner) is Share.SEED:
                raise Refused(f"asked for both shares of worker {owner} in one request")
            asked[owner] = Share.KEY
        for owner, kind in asked.items():
            earlier = self._revealed.get(owner)
            if earlier is not None and earlier is not kind:
                raise Refused(f"asked for the {kind.value} share of worker {owner} after its "
                              f"{earlier.value} share was revealed: refusing both shares of one worker")
        self._revealed.update(asked)

    def revealed(self, owner: int) -> Share | None:
        return self._revealed.get(owner)
