"""Stage codes: which step of a decision removed a candidate, and readable reason codes.

The kernel writes one int per candidate; 0 means the candidate was served. The codes are part
of the decision log format, so existing values never change meaning; new ones are appended.
"""

from __future__ import annotations

from enum import IntEnum


class Stage(IntEnum):
    SERVED = 0
    CHANNEL_NOT_ALLOWED = 1
    OUTSIDE_VALIDITY = 2
    RULE_ELIGIBILITY = 3
    RULE_APPLICABILITY = 4
    RULE_SUITABILITY = 5
    CONTACT_POLICY = 6  # set by the caller through `policy_block`
    BUDGET = 7  # set by the caller through `policy_block`
    CAPACITY = 8  # set by the caller through `policy_block` (e.g. chat agents available)
    SERVICE_BEFORE_SALES = 9
    VALUE_UNAVAILABLE = 10  # the value expression evaluated to missing
    INVALID_PROPENSITY = 11  # the scorer returned NaN
    GROUP_LIMIT = 12
    RANK_CUTOFF = 13  # eligible but below the requested number of actions
    CONTROL_GROUP = 14  # eligible, not served: the customer is in the random control group


# Stages a caller may report through `policy_block` (anything else is rejected).
POLICY_STAGES = frozenset({Stage.CONTACT_POLICY, Stage.BUDGET, Stage.CAPACITY})

# Candidates that passed every filter and lost only in arbitration.
ARBITRATION_STAGES = frozenset({Stage.GROUP_LIMIT, Stage.RANK_CUTOFF, Stage.CONTROL_GROUP})


def stage_name(code: int) -> str:
    try:
        return Stage(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def reason_codes(stage: int, mandatory: bool) -> list[str]:
    """Readable codes for one candidate: why it was served, or which step removed it."""
    if stage == Stage.SERVED:
        return ["ELIGIBLE", "MANDATORY" if mandatory else "TOP_PRIORITY"]
    if stage in ARBITRATION_STAGES:
        return ["ELIGIBLE", stage_name(stage)]
    return [stage_name(stage)]
