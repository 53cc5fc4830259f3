"""Manage the app's users file: python scripts/users.py FILE add|passwd|disable|enable|list [USER] [--role ROLE].

  add USER --role reader     a new user (roles: reader, uploader, monitor; repeat --role for two; default uploader)
  passwd USER                a new password for USER
  role USER --role ROLE      replace USER's roles
  disable USER / enable USER an account that may not log in (its line stays, marked with "!")
  list                       users, roles, hash kind, disabled or not

The password is asked at the prompt (twice), or read from standard input when it is not a terminal (one line), and
never taken on the command line: command lines are visible to every user of the machine and kept in shell
histories. The file holds Argon2id hashes; lines that `htpasswd -B` writes work beside them (as uploaders). The app
reads the file again when it changes: no restart needed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace
from pathlib import Path

from mura_mt.access.roles import LEAST_ROLE, ROLES
from mura_mt.access.users import Account, UsersFileError, hash_password, read_accounts, write_accounts

MIN_PASSWORD = 10  # NIST SP 800-63B asks for at least 8; a hospital's own policy may ask more


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != first:
            raise ValueError("the two passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="the users file (--auth-file of app.py)")
    parser.add_argument("command", choices=["add", "passwd", "role", "disable", "enable", "list"])
    parser.add_argument("user", nargs="?", help="the user name")
    parser.add_argument("--role", action="append", choices=list(ROLES), help=f"default {LEAST_ROLE}")
    args = parser.parse_args(argv)
    if args.command != "list" and not args.user:
        parser.error(f"{args.command} needs a USER")
    if args.user and (":" in args.user or args.user != args.user.strip() or args.user.startswith("#")):
        parser.error("a user name may not hold ':', start with '#' or have spaces around it")
    try:
        accounts = read_accounts(args.file) if args.file.exists() else {}
    except UsersFileError as err:
        if "names no user" not in str(err):
            parser.error(str(err))
        accounts = {}
    try:
        if args.command == "list":
            for a in accounts.values():
                state = "disabled" if a.disabled else "enabled"
                print(f"{a.name}\t{','.join(sorted(a.roles))}\t{a.kind}\t{state}")
            return 0
        account = accounts.get(args.user)
        if args.command == "add":
            if account is not None:
                parser.error(f"{args.user} is already in {args.file}: use passwd, role or enable")
            account = Account(args.user, hash_password(_password()), frozenset(args.role or [LEAST_ROLE]))
        elif account is None:
            parser.error(f"{args.user} is not in {args.file}")
        elif args.command == "passwd":
            account = replace(account, secret=hash_password(_password()))
        elif args.command == "role":
            if not args.role:
                parser.error("role needs --role ROLE (repeat it for several)")
            account = replace(account, roles=frozenset(args.role))
        else:
            account = replace(account, disabled=args.command == "disable")
        write_accounts(args.file, [account])
    except ValueError as err:
        parser.error(str(err))
    print(f"{args.command}: {account.name} ({','.join(sorted(account.roles))}"
          f"{', disabled' if account.disabled else ''}) in {args.file}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
