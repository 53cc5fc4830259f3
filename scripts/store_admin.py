"""The worklist store over a year: python scripts/store_admin.py --db FILE_OR_URL backup OUT | restore IN | check

  backup OUT   a consistent copy while the nodes and the app run (SQLite's online backup API; pg_dump for PostgreSQL)
  restore IN   put a backup back as the store (stop the nodes and the app first)
  check        the schema version, integrity and row counts; exit status 1 when something is wrong

Take one a day to another disk or machine, and keep a week of them and a month of Sundays (docs/site-setup.md, "A year:
backups, rotation, temporary folders"); a restore test now and then is the only proof a backup works.
"""

from __future__ import annotations

import argparse
import json
import sys

from mura_mt.dicom_node.backup import BackupError, backup, check, restore
from mura_mt.dicom_node.database import redact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="the worklist store: a SQLite file or a postgresql:// URL")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="copy the store to OUT").add_argument("out")
    commands.add_parser("restore", help="put the backup IN back as the store").add_argument("backup")
    commands.add_parser("check", help="schema version, integrity, row counts")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            print(f"backed up {redact(args.db)} to {backup(args.db, args.out)}")
        elif args.command == "restore":
            restore(args.backup, args.db)
            print(f"restored {args.backup} as {redact(args.db)}")
        else:
            report = check(args.db)
            print(json.dumps(report, indent=2))
            return 0 if report["ok"] else 1
    except (BackupError, ConnectionError, OSError) as err:
        print(f"store_admin.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
