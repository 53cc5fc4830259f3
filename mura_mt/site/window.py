"""Times as people and programs give them: a window's ``since`` and ``until`` on the command line and in the API
(ISO 8601, UTC unless it says, or unix seconds), and times written back in ISO 8601 UTC. Shared by the worklist API,
the Performance tab and the scripts over the site's evidence. Also the one rule for how long a result computed from
the store may be served (``still_current``): the Performance figures, the drift check and the scrape's counts."""

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


REFRESH_S = 30.0  # what is computed from the store is computed again at most this often, however busy the site


def still_current(seen: int, computed: float, version: int, now: float, period_s: float = REFRESH_S,
                  max_age_s: float | None = None) -> bool:  # fmt: skip
    """Whether a result computed at ``computed`` from the store at version ``seen`` may still be served at ``now``:
    the store has not changed since (and, with ``max_age_s``, the result is younger than that), or the result is
    younger than ``period_s`` whatever changed (a study every 2 s must not mean a computation every 2 s)."""
    age = now - computed
    return (seen == version and (max_age_s is None or age < max_age_s)) or 0 <= age < period_s
