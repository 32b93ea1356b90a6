"""Champion / challenger routing: which loaded model serves a customer, which one shadows.

A customer belongs to the challenger arm when the first 8 bytes of
blake2b(challenger slot + NUL + customer id), read as an integer, fall below
`share x 2**64`: stable across requests, processes and restarts, independent of any other
hash the service uses, and reshuffled only by renaming the challenger slot.

- split mode: challenger-arm customers are served by the challenger.
- shadow mode: everyone is served by the champion; challenger-arm customers are also scored
  by the challenger, whose scores ride on the decision (`Decision.shadow`) to the decision log.

Either arm falls back to the other model when its own slot has nothing loaded, so a missing
challenger never costs an answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nba_service.scoring.artifact import LoadedModel
from nba_service.scoring.registry import ModelHolder

__all__ = ["CHALLENGER", "CHAMPION", "ModelRouter", "Route", "challenger_bucket"]

CHAMPION = "champion"
CHALLENGER = "challenger"
_SCALE = float(2**64)


def challenger_bucket(slot: str, customer_id: str) -> float:
    """The customer's position in [0, 1) for `slot`; below the share means challenger arm."""
    digest = hashlib.blake2b(f"{slot}\0{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True, slots=True)
class Route:
    model: LoadedModel | None  # serves this decision
    shadow: LoadedModel | None  # scores it too, never served
    arm: str


class ModelRouter:
    def __init__(self, champion: ModelHolder, challenger: ModelHolder | None = None,
                 share: float = 0.0, shadow: bool = False) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"challenger share {share} is not in [0, 1]")
        self.champion = champion
        self.challenger = challenger
        self.share = share
        self.shadow = shadow

    def route(self, customer_id: str) -> Route:
        """Reads each holder's model once: the route holds the objects the decision uses."""
        champion = self.champion.model
        holder = self.challenger
        challenger = holder.model if holder is not None else None
        if (challenger is None or holder is None or self.share <= 0.0
                or challenger_bucket(holder.slot, customer_id) >= self.share):
            return Route(champion, None, CHAMPION)
        if self.shadow:
            if champion is None:
                return Route(challenger, None, CHALLENGER)
            return Route(champion, challenger, CHAMPION)
        return Route(challenger, None, CHALLENGER)
