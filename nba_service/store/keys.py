"""Redis key names of the online store.

Every key of one customer carries the hash tag `{c:<id>}` so that all of them live in one
Cluster slot: the decision's single pipelined read and the event Lua scripts then never hit
CROSSSLOT. Per-action keys (budgets) use their own tag and are not defined here.
"""

from __future__ import annotations

PREFIX = "nba"


def customer_tag(customer_id: str) -> str:
    """The hash tag shared by all keys of one customer."""
    return f"{{c:{customer_id}}}"


def _customer_key(customer_id: str, suffix: str) -> str:
    if not customer_id:
        raise ValueError("customer id is empty")
    # A brace inside the id would end the hash tag early and split a customer over slots.
    if "{" in customer_id or "}" in customer_id:
        raise ValueError(f"customer id {customer_id!r} must not contain '{{' or '}}'")
    return f"{PREFIX}:{{c:{customer_id}}}:{suffix}"


def features_key(customer_id: str) -> str:
    """Packed BATCH features (features.packing), a string."""
    return _customer_key(customer_id, "f")


def realtime_key(customer_id: str) -> str:
    """REALTIME features, a hash of value and write-time fields, with a TTL."""
    return _customer_key(customer_id, "rt")


def history_key(customer_id: str) -> str:
    """Contact history, a hash owned by the engine's contact policies."""
    return _customer_key(customer_id, "h")


def session_key(customer_id: str) -> str:
    """Chat/web session record of the customer."""
    return _customer_key(customer_id, "s")
