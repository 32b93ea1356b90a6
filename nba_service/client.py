"""A small client: building requests from CLI values and printing decisions readably."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

import grpc

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc


def parse_context(entries: Iterable[str]) -> dict[str, object]:
    """`key=value` strings -> typed values: ints, floats and true/false become numbers/bools."""
    out: dict[str, object] = {}
    for entry in entries:
        key, sep, raw = entry.partition("=")
        if not sep or not key:
            raise ValueError(f"context entry {entry!r} is not KEY=VALUE")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for conv in (int, float):
                try:
                    value = conv(raw)
                    break
                except ValueError:
                    continue
        out[key] = value
    return out


def to_value(v: object) -> pb.Value:
    if isinstance(v, bool):
        return pb.Value(bool_value=v)
    if isinstance(v, int):
        return pb.Value(int_value=v)
    if isinstance(v, float):
        return pb.Value(number_value=v)
    return pb.Value(string_value=str(v))


def build_request(
    customer_id: str,
    channel: str,
    placement: str = "",
    context: Mapping[str, object] | None = None,
    limit: int = 0,
    explain: bool = False,
) -> pb.DecideRequest:
    return pb.DecideRequest(
        customer_id=customer_id,
        channel=cast(pb.Channel, pb.Channel.Value(channel.upper())),
        placement=placement,
        context={k: to_value(v) for k, v in (context or {}).items()},
        limit=limit,
        explain=explain,
    )


def decide_once(
    target: str,
    customer_id: str,
    channel: str,
    placement: str = "",
    context: Mapping[str, object] | None = None,
    limit: int = 0,
    explain: bool = False,
    timeout: float = 2.0,
) -> pb.DecideResponse:
    with grpc.insecure_channel(target) as ch:
        stub = decisioning_pb2_grpc.DecisioningStub(ch)
        return stub.Decide(
            build_request(customer_id, channel, placement, context, limit, explain),
            timeout=timeout,
        )


def format_decision(customer_id: str, channel: str, r: pb.DecideResponse) -> str:
    lines = [
        f"customer {customer_id} on {channel}  decision {r.decision_id}",
        f"  model {r.model_version or '-'}  catalog {r.catalog_version}  "
        f"server time {r.timing.total_us} us",
    ]
    if r.degraded:
        lines.append(f"  DEGRADED: {', '.join(r.degraded_reasons)}")
    if not r.recommendations:
        lines.append("  (no recommendation)")
    lines.append(
        f"  {'#':>2}  {'action':<28} {'type':<12} {'P':>6} {'V':>8} {'C':>5} {'L':>5} "
        f"{'priority':>9}"
    )
    for rec in r.recommendations:
        kind = pb.ActionType.Name(rec.action_type).lower()
        lines.append(
            f"  {rec.rank:>2}  {rec.action_id:<28} {kind:<12} {rec.propensity:>6.3f} "
            f"{rec.value:>8.1f} {rec.context_weight:>5.2f} {rec.lever:>5.2f} {rec.priority:>9.3f}"
        )
        lines.append(f'      "{rec.treatment.title}"  reasons: {", ".join(rec.reason_codes)}')
    if r.HasField("explanation"):
        removed = [c for c in r.explanation.candidates if c.removed_by]
        lines.append(f"  {len(r.explanation.candidates)} candidates, {len(removed)} removed:")
        for c in removed:
            lines.append(f"      {c.action_id:<28} removed by {c.removed_by} {c.detail}")
    return "\n".join(lines)
