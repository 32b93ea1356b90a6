"""Log set-up: plain text or one JSON object per line, always through the redaction filter."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from nba_service.security.redaction import RedactionFilter

__all__ = ["JsonFormatter", "setup_logging"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`ts` (RFC 3339 UTC), `level`, `logger`, `msg`, `exc` when there is one, and any `extra=`
    fields given to the logging call."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    pseudonymize: Callable[[str], str] | None = None,
    stream: object = None,
) -> logging.Handler:
    """Replace the root handlers with one stream handler (stderr by default) that redacts."""
    from nba_service.security.pseudonym import Pseudonymizer

    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    handler.addFilter(RedactionFilter(pseudonymize or Pseudonymizer()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
