"""Who looked at which patient's study: python scripts/audit.py FILE [--study UID] [--user NAME] [--since TIME].

FILE is the audit log of a node or app (--audit-log; default audit.jsonl in --store-dir): one JSON line an event;
its rotated files beside it (FILE.1, FILE.2, ...; --audit-max-mb) are read too, oldest first. Prints the events
that match every filter as a table (time, user, remote address, action, study, detail);
--since takes an ISO 8601 time (UTC unless it says) or a date.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from mura_mt.audit import FIELDS, read_audit


def _since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since must be an ISO 8601 time or date, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the audit log (JSON lines)")
    parser.add_argument("--study", default=None, help="only this Study Instance UID")
    parser.add_argument("--user", default=None, help="only this user (login name, or a calling AE title)")
    parser.add_argument("--since", type=_since, default=None, help="only events at or after this time")
    args = parser.parse_args(argv)
    try:
        events = list(read_audit(args.file, args.study, args.user, args.since))
    except (OSError, ValueError) as err:
        parser.exit(2, f"audit.py: {err}\n")
    rows = [[str(event.get(field) or "") for field in FIELDS] for event in events]
    widths = [max([len(field), *(len(row[i]) for row in rows)]) for i, field in enumerate(FIELDS)]
    print("  ".join(field.ljust(width) for field, width in zip(FIELDS, widths)).rstrip())
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    print(f"{len(rows)} event(s)")
    return events


if __name__ == "__main__":
    main()
