"""Keeps secrets, feature values and raw customer ids out of every log record.

The code does not log them in the first place; this filter is the safety net for what slips
through (exception messages, third-party libraries). Each request registers what is sensitive
about it in a context variable, one `set()` on the hot path; the filter only walks it when a
record is actually emitted. Customer ids become their pseudonym, everything else `[redacted]`.
Patterns catch bearer tokens and passwords in URLs that are not tied to a request.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from typing import Any

__all__ = ["RedactionFilter", "register_request", "register_token", "sensitive_strings"]

_request: contextvars.ContextVar[Any] = contextvars.ContextVar("nba_request", default=None)
_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("nba_token", default=None)

_PATTERNS = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*\(?['\"]?)[^'\"\s)]+"), r"\1[redacted]"),
    (re.compile(r"(?i)\b(rediss?|unix)://([^:@/\s]*):([^@/\s]+)@"), r"\1://\2:[redacted]@"),
    (re.compile(r"(?i)(password|passwd|secret|token)(['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"),
     r"\1\2[redacted]"),
)


def register_request(request: Any) -> None:
    """Register the current request (a protobuf message) as sensitive."""
    _request.set(request)


def register_token(token: str | None) -> None:
    """Register the caller's credential as sensitive."""
    _token.set(token)


def sensitive_strings(request: Any) -> tuple[list[str], list[str]]:
    """(customer ids, other sensitive strings) found in a request message: ids, context and
    event values and keys, free-text fields."""
    ids: list[str] = []
    other: list[str] = []

    def walk(msg: Any) -> None:
        fields = getattr(msg, "ListFields", None)
        if fields is None:
            return
        for fd, value in fields():
            if fd.type == fd.TYPE_STRING:
                values = value if fd.is_repeated else [value]
                for v in values:
                    (ids if fd.name in ("customer_id", "session_id") else other).append(v)
            elif fd.type == fd.TYPE_MESSAGE:
                if fd.message_type.GetOptions().map_entry:
                    for k, v in value.items():
                        other.append(str(k))
                        walk(v)
                elif fd.is_repeated:
                    for v in value:
                        walk(v)
                else:
                    walk(value)
            elif fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT, fd.TYPE_INT64):
                # Numeric feature values: only long renderings are distinctive enough to
                # search for without mangling unrelated numbers in the message.
                values = value if fd.is_repeated else [value]
                other.extend(r for r in (repr(v) for v in values) if len(r) >= 6)

    walk(request)
    return ids, other


class RedactionFilter(logging.Filter):
    def __init__(self, pseudonymize: Callable[[str], str]) -> None:
        super().__init__()
        self.pseudonymize = pseudonymize

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text
        request, token = _request.get(), _token.get()
        replacements: list[tuple[str, str]] = []
        if token:
            replacements.append((token, "[redacted]"))
        if request is not None:
            ids, other = sensitive_strings(request)
            replacements += [(i, self.pseudonymize(i)) for i in ids if i]
            replacements += [(o, "[redacted]") for o in other if len(o) >= 3]
        # Longest first, so a value containing another is replaced whole.
        replacements.sort(key=lambda p: -len(p[0]))
        text = self._scrub(text, replacements)
        record.msg, record.args = text, None
        if exc_text:
            record.exc_text = self._scrub(exc_text, replacements)
        return True

    @staticmethod
    def _scrub(text: str, replacements: list[tuple[str, str]]) -> str:
        for old, new in replacements:
            if old in text:
                text = text.replace(old, new)
        for pattern, sub in _PATTERNS:
            text = pattern.sub(sub, text)
        return text
