"""Who a request is, and what a login attempt gets: the users file, the proxy, the sessions and the throttle
together, with every refusal written to the audit trail. Framework-free: callers pass the headers, the peer address
and the session token; ``web.login`` is the HTTP side.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from mura_mt.access.proxy import TrustedProxy
from mura_mt.access.roles import ROLES, may, roles_that_may
from mura_mt.access.sessions import Sessions
from mura_mt.access.throttle import LoginThrottle
from mura_mt.access.users import Account, Users
from mura_mt.audit import AuditLog

EVERY_ROLE = frozenset(ROLES)


@dataclass(frozen=True)
class Identity:
    user: str
    roles: frozenset[str]
    via: str  # "login" (the users file), "proxy" (single sign-on), "open" (no login configured: a loopback demo)

    def may(self, permission: str) -> bool:
        return may(self.roles, permission)


OPEN = Identity("anonymous", EVERY_ROLE, "open")


class ForgedIdentity(PermissionError):
    """A request from an address that is not a trusted proxy names a user in the proxy's header."""


@dataclass(frozen=True)
class LoginOutcome:
    token: str | None  # the new session's, when the login succeeded
    retry_after_s: float = 0.0  # > 0: refused unchecked, locked out for this long
    message: str = ""
    account: Account | None = None  # whose password it was, when it was right


class Access:
    def __init__(self, users: Users | None = None, proxy: TrustedProxy | None = None,
                 sessions: Sessions | None = None, throttle: LoginThrottle | None = None,
                 audit: AuditLog | None = None):  # fmt: skip
        self.users, self.proxy, self.audit = users, proxy, audit
        self.sessions = sessions if sessions is not None else Sessions()  # an empty Sessions is falsy (len 0)
        self.throttle = throttle if throttle is not None else LoginThrottle()

    @property
    def enabled(self) -> bool:
        """False: no login configured (a loopback demo), everyone may do everything."""
        return self.users is not None or self.proxy is not None

    def identify(self, headers: Mapping[str, str], address: str | None, token: str | None,
                 touch: bool = False) -> Identity | None:  # fmt: skip
        """The request's identity, or None (must log in). ``headers``: case-insensitive. Raises ForgedIdentity (and
        audits it) for a proxy header from an untrusted address."""
        if not self.enabled:
            return OPEN
        if self.proxy is not None and self.proxy.claims(headers):
            if self.proxy.trusts(address):
                user, roles = self.proxy.identity(headers)
                return Identity(user, roles, "proxy")
            claimed = headers.get(self.proxy.user_header, "")[:64]
            self._record("identity header refused", claimed, address,
                         f"{self.proxy.user_header} from an address that is not a trusted proxy")  # fmt: skip
            raise ForgedIdentity(f"{self.proxy.user_header} is only believed from the hospital's proxy")
        session = self.sessions.get(token, touch=touch)
        return Identity(session.user, session.roles, "login") if session else None

    def authenticate(self, user: str, password: str, address: str | None, what: str = "login",
                     record_success: bool = False) -> LoginOutcome:  # fmt: skip
        """Check a password against the users file, unless the user or the address is locked out; every failure
        and every refused attempt is audited (``what``: where it was tried)."""
        user, address = str(user)[:64], address or "unknown"
        wait = self.throttle.wait(user, address)
        if wait > 0:
            message = _locked_message(user, wait)
            self._record("login throttled", user, address, f"{what}: {message}")
            return LoginOutcome(None, wait, message)
        account = self.users.verify(user, password) if self.users is not None else None
        if account is None:
            locked = self.throttle.failed(user, address)
            self._record("login failed", user, address, f"{what}{f': locked out for {locked:g} s' if locked else ''}")
            return LoginOutcome(None, 0.0, "Wrong user name or password.")
        self.throttle.succeeded(user, address)
        if record_success:
            self._record("login", user, address, f"{what}: roles {','.join(sorted(account.roles))}")
        return LoginOutcome(None, account=account)

    def login(self, user: str, password: str, address: str | None) -> LoginOutcome:
        """``authenticate``, then a new session for the account."""
        outcome = self.authenticate(user, password, address, record_success=True)
        if outcome.account is None:
            return outcome
        return LoginOutcome(self.sessions.start(outcome.account.name, outcome.account.roles), account=outcome.account)

    def logout(self, token: str | None, user: str, address: str | None) -> None:
        if token and self.sessions.get(token) is not None:
            self.sessions.end(token)
            self._record("logout", user, address)

    def refusal(self, identity: Identity, permission: str, address: str | None, what: str) -> str | None:
        """None when ``identity`` may; else the refusal to show, audited."""
        if identity.may(permission):
            return None
        roles = ", ".join(sorted(identity.roles)) or "no role"
        needed = " or ".join(roles_that_may(permission))
        self._record("access refused", identity.user, address, f"{what} needs {needed}; has {roles}")
        return f"{identity.user} ({roles}) may not use {what}: that needs the role {needed}."

    def _record(self, action: str, user: str, address: str | None, detail: str = "") -> None:
        if self.audit is not None:
            self.audit.record(action, user, address, None, detail)


def _locked_message(user: str, wait_s: float) -> str:
    when = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + wait_s))
    return f"Too many failed logins for {user} or from this address: try again at {when} (in {wait_s:.0f} s)."
