"""The users file: one line per user, ``user:hash[:role,role]``, managed by ``scripts/users.py``.

The hash is Argon2id (``argon2-cffi``, what ``users.py`` writes) or bcrypt as ``htpasswd -B`` writes it (``$2y$``),
so a hospital's existing tools can add users; a line without roles (a bare ``htpasswd -B`` line) is a user with the
least role. A hash that starts with ``!`` is a disabled account (as ``/etc/shadow`` marks one). Blank lines and
``#`` comments are kept. No password ever stands in the file: a line whose second field is not a hash is refused
at start-up, and the error never repeats it.

``MURA_MT_AUTH`` (``user:password[,user:password]``, plain passwords) is kept for loopback demos and Spaces secrets:
its users are readers, and the app says that plain passwords belong on loopback only. The file is read again when
it changes, so ``users.py disable`` takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mura_mt.access.roles import LEAST_ROLE, parse_roles

BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
ARGON2_PREFIX = "$argon2id$"
DISABLED = "!"
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; htpasswd truncates there too


class UsersFileError(ValueError):
    """The users file is malformed or unreadable (the message never contains a password or a hash)."""


@dataclass(frozen=True)
class Account:
    name: str
    secret: str  # a hash, or (MURA_MT_AUTH only) the plain password
    roles: frozenset[str]
    disabled: bool = False
    plain: bool = False

    @property
    def kind(self) -> str:
        if self.plain:
            return "plain (MURA_MT_AUTH)"
        return "argon2id" if self.secret.startswith(ARGON2_PREFIX) else "bcrypt"


def hash_password(password: str) -> str:
    """An Argon2id hash with argon2-cffi's defaults (RFC 9106's second recommended set)."""
    from argon2 import PasswordHasher

    if not password:
        raise ValueError("an empty password is not a password")
    return PasswordHasher().hash(password)


def check_password(account: Account, password: str) -> bool:
    if account.plain:
        # compare digests of equal length: the time does not tell how much of a guess was right
        return hmac.compare_digest(hashlib.sha256(account.secret.encode()).digest(),
                                   hashlib.sha256(password.encode()).digest())  # fmt: skip
    if account.secret.startswith(ARGON2_PREFIX):
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return PasswordHasher().verify(account.secret, password)
        except (VerificationError, InvalidHashError):
            return False
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode()[:BCRYPT_MAX_BYTES], account.secret.encode())
    except ValueError:  # a malformed hash
        return False


@cache
def _decoy() -> Account:
    """Checked for a user that does not exist, so that the answer takes as long as for one that does."""
    return Account("", hash_password(secrets.token_hex(16)), frozenset())


def parse_line(line: str, where: str) -> Account | None:
    """One line of the file; None for a blank line or a comment."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    name, sep, rest = line.partition(":")
    secret, _, roles = rest.partition(":")
    if not sep or not name.strip() or not secret:
        raise UsersFileError(f"{where} is not of the form user:hash[:roles]")
    disabled = secret.startswith(DISABLED)
    if disabled:
        secret = secret[len(DISABLED) :]
    if not secret.startswith((ARGON2_PREFIX, *BCRYPT_PREFIXES)):
        raise UsersFileError(
            f"{where}: the second field is not an Argon2id or bcrypt hash (a password in plain text?); set it with "
            f"python scripts/users.py FILE passwd {name.strip()}"
        )
    try:
        parsed = parse_roles(roles, where) if roles.strip() else frozenset({LEAST_ROLE})
    except ValueError as err:
        raise UsersFileError(str(err)) from None
    return Account(name.strip(), secret, parsed, disabled)


def format_line(account: Account) -> str:
    return f"{account.name}:{DISABLED if account.disabled else ''}{account.secret}:{','.join(sorted(account.roles))}"


class Users:
    """The accounts that may log in: ``load`` a users file, or ``from_plain`` the ``MURA_MT_AUTH`` list."""

    def __init__(self, accounts: dict[str, Account], path: Path | None = None):
        self.path = path
        self._accounts = accounts
        self._stamp = self._file_stamp()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> Users:
        path = Path(path)
        return cls(read_accounts(path), path)

    @classmethod
    def from_plain(cls, value: str) -> Users:
        accounts = {}
        for n, item in enumerate(value.split(","), 1):
            name, sep, password = item.strip().partition(":")
            if not sep or not name.strip() or not password:
                raise UsersFileError(f"MURA_MT_AUTH entry {n} is not of the form user:password")
            accounts[name.strip()] = Account(name.strip(), password, frozenset({"reader"}), plain=True)
        return cls(accounts)

    @property
    def plain(self) -> bool:
        return self.path is None

    def accounts(self) -> list[Account]:
        self._reload()
        return list(self._accounts.values())

    def verify(self, name: str, password: str) -> Account | None:
        """The account when ``password`` is its own and it is not disabled; a hash is checked in every case."""
        self._reload()
        account = self._accounts.get(name)
        if account is None:
            check_password(_decoy(), password)
            return None
        accepted = check_password(account, password)
        return account if accepted and not account.disabled else None

    def _file_stamp(self):
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _reload(self) -> None:
        """Read the file again when it changed; a file broken meanwhile keeps the accounts as they were (and says
        so) rather than locking everyone out."""
        if self.path is None:
            return
        with self._lock:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._accounts = read_accounts(self.path)
            except UsersFileError as err:
                import logging

                logging.getLogger(__name__).error(f"kept the previous users: {err}")


def read_accounts(path: Path) -> dict[str, Account]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UsersFileError(f"cannot read the users file {path}: {err.strerror}") from None
    accounts = {}
    for n, line in enumerate(lines, 1):
        account = parse_line(line, f"{path} line {n}")
        if account is not None:
            if account.name in accounts:
                raise UsersFileError(f"{path} line {n}: user {account.name} is named twice")
            accounts[account.name] = account
    if not accounts:
        raise UsersFileError(f"{path} names no user: add one with python scripts/users.py {path} add USER")
    return accounts


def write_accounts(path: Path, accounts: list[Account]) -> None:
    """Write these accounts in place of their old lines (comments, order and other users kept; new users last),
    atomically and owner-only: a reader never sees half a file."""
    path = Path(path)
    by_name = {a.name: a for a in accounts}
    lines: list[str] = []
    if path.exists():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            account = parse_line(line, f"{path} line {n}")
            if account is not None and account.name in by_name:
                lines.append(format_line(by_name.pop(account.name)))
            else:  # a comment, a blank line, or a user this call does not change
                lines.append(line)
    else:
        lines.append("# mura-mt users: user:hash[:roles]; managed by scripts/users.py, `htpasswd -B` lines work too")
    lines += [format_line(a) for a in by_name.values()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
