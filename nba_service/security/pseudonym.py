"""Customer ids in logs are replaced by a keyed hash: linkable within a deployment (same key,
same pseudonym), not reversible without the key, not guessable by hashing candidate ids."""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["Pseudonymizer"]


class Pseudonymizer:
    def __init__(self, key: bytes | None = None) -> None:
        # No key configured: a random one per process, so pseudonyms cannot be linked across
        # restarts, which is the safe default.
        self._key = key if key else os.urandom(32)

    def __call__(self, customer_id: str) -> str:
        digest = hmac.new(self._key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return "cust_" + digest[:16]
