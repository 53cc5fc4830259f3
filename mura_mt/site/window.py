"""Times as people and programs give them: a window's ``since`` and ``until`` on the command line and in the API
(ISO 8601, UTC unless it says, or unix seconds), and times written back in ISO 8601 UTC. Shared by the worklist API,
the Performance tab and the scripts over the site's evidence."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_since(text: str | float | None) -> float | None:
    """``since`` as the API takes it: empty, unix seconds, or an ISO 8601 date or time (UTC unless it says)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"since must be an ISO 8601 time (2026-12-01T08:00:00Z) or unix seconds; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
