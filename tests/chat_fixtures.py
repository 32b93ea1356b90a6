"""A copy of the demo catalog with a chat section tests can tune (short dwell, always open)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_chat_catalog(directory: Path, **chat: Any) -> Path:
    """The demo catalog with its chat section overridden by `chat` (None deletes a field).

    Defaults make invites deterministic: open around the clock, 1 s dwell, no score floor.
    """
    doc = yaml.safe_load((EXAMPLES / "catalog.yaml").read_text())
    section = doc["chat"]
    section.pop("business_hours", None)
    section.update({"min_dwell": {"default": "1s"}, "min_score": 0})
    for key, value in chat.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
