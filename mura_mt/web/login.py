"""Who may use the app: the login read from ``--auth-file`` or ``MURA_MT_AUTH``, Gradio's auth callback, and what
counts as a loopback address (where the worklist may be served without a login). No Gradio import."""

from __future__ import annotations

import hmac
from pathlib import Path

from mura_mt.audit import AuditLog


class AuthError(ValueError):
    """The login configuration is malformed (the message never contains a password)."""


def load_credentials(auth_file: str | None, env_value: str | None) -> dict[str, str] | None:
    """Users and passwords from ``--auth-file`` (one ``user:password`` a line; blank lines and ``#`` comments
    skipped) or else ``MURA_MT_AUTH`` (``user:password[,user2:password2]``); None when neither is set."""
    if auth_file:
        try:
            lines = Path(auth_file).read_text().splitlines()
        except OSError as err:
            raise AuthError(f"cannot read the auth file {auth_file}: {err.strerror}") from None
        entries = [(f"{auth_file} line {n}", line.strip()) for n, line in enumerate(lines, 1)]
        entries = [(where, line) for where, line in entries if line and not line.startswith("#")]
    elif env_value:
        entries = [(f"MURA_MT_AUTH entry {n}", item.strip()) for n, item in enumerate(env_value.split(","), 1)]
    else:
        return None
    credentials = {}
    for where, entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise AuthError(f"{where} is not of the form user:password")  # never echo the entry: it may be a secret
        credentials[user.strip()] = password
    if not credentials:
        raise AuthError("login is configured but names no user")
    return credentials


def check_login(credentials: dict[str, str], audit: AuditLog | None = None):
    """Gradio's auth callback: constant-time comparison, so timing does not reveal how much of a guess was right.
    A failed login is recorded in ``audit`` under the name tried (never the password; Gradio gives the callback no
    address)."""

    def check(user: str, password: str) -> bool:
        expected = credentials.get(user)
        accepted = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        if not accepted and audit is not None:
            audit.record("login failed", str(user)[:64])
        return accepted

    return check


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server on these addresses."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
