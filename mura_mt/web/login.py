"""The app's door: the login page and its routes, the hospital's proxy, the sessions and the role checks that the
tabs ask before they answer. The rules live in ``mura_mt.access`` (framework-free); this module is their HTTP side.

Gradio is launched with ``auth_dependency=WebAccess.user_of`` (who a request is, for every Gradio route) and with
this module's own ``/login`` and ``/logout`` routes in front of Gradio's (``app_kwargs["routes"]``): the login
throttle needs the caller's address, and sessions must end when idle, which Gradio's own login does neither. A page
request without a session is sent to ``login``; ``gradio_client``'s ``Client(url, auth=(user, password))`` posts to
the same ``/login`` and keeps the cookie, as it does with Gradio's own.
"""

from __future__ import annotations

import argparse
import html
import os
from http.cookies import CookieError, SimpleCookie

import gradio as gr

from mura_mt.access.gate import OPEN, Access, ForgedIdentity, Identity
from mura_mt.access.proxy import GROUPS_HEADER, USER_HEADER, TrustedProxy
from mura_mt.access.sessions import IDLE_MINUTES, Sessions
from mura_mt.access.throttle import LOCKOUT_S, MAX_FAILURES, LoginThrottle
from mura_mt.access.users import Users, UsersFileError
from mura_mt.audit import AuditLog, default_audit_path

COOKIE = "mura-mt-session"


class AuthError(ValueError):
    """The login configuration is malformed (the message never contains a password or a hash)."""


def add_access_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("who may use the app", "README: 'Running it at a site' shows the set-up")
    group.add_argument("--auth-file", default=None, help="the users file (scripts/users.py): turns on the login")
    group.add_argument("--trusted-proxy", default=None,
                       help="ADDR[,ADDR]: the hospital's single sign-on proxy, whose user header is believed")  # fmt: skip
    group.add_argument("--user-header", default=USER_HEADER, help=f"the proxy's user header (default {USER_HEADER})")
    group.add_argument("--groups-header", default=GROUPS_HEADER,
                       help=f"the proxy's groups header, comma-separated (default {GROUPS_HEADER})")  # fmt: skip
    group.add_argument("--group-roles", default="", help="GROUP=ROLE,...: the roles of the proxy's groups")
    group.add_argument("--session-idle-minutes", type=float, default=IDLE_MINUTES,
                       help=f"a login unused this long must log in again (default {IDLE_MINUTES:g}; fractions allowed)")  # fmt: skip
    group.add_argument("--login-max-failures", type=int, default=MAX_FAILURES,
                       help=f"failed logins for one user before a lock-out (default {MAX_FAILURES})")  # fmt: skip
    group.add_argument("--login-lockout-seconds", type=float, default=LOCKOUT_S,
                       help=f"the first lock-out; each next one doubles, up to an hour (default {LOCKOUT_S:g})")  # fmt: skip


def access_from_args(args, env_auth: str | None, audit: AuditLog | None) -> Access:
    """The Access the options ask for (not ``enabled`` without a login or a proxy); AuthError says what is wrong."""
    try:
        users = Users.load(args.auth_file) if args.auth_file else Users.from_plain(env_auth) if env_auth else None
        proxy = TrustedProxy(args.trusted_proxy, args.group_roles, args.user_header, args.groups_header) if (
            args.trusted_proxy) else None  # fmt: skip
        throttle = LoginThrottle(args.login_max_failures, args.login_lockout_seconds)
        sessions = Sessions(args.session_idle_minutes * 60)
    except (UsersFileError, ValueError) as err:
        raise AuthError(str(err)) from None
    return Access(users, proxy, sessions, throttle, audit)


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server on these addresses."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _token(headers) -> str | None:
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie") or "")
    except CookieError:  # a malformed Cookie header is no session
        return None
    return cookie[COOKIE].value if COOKIE in cookie else None


def _address(request) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


class WebAccess:
    """The HTTP side of an ``Access``; ``secure``: the cookie is only sent over HTTPS (the app's own, or a proxy's)."""

    def __init__(self, access: Access, secure: bool = False, auth_message: str = ""):
        self.access, self.secure, self.auth_message = access, secure, auth_message

    @classmethod
    def from_args(cls, args, env_auth: str | None) -> WebAccess:
        """The app's door as its options say; AuthError says what is wrong. Plain ``MURA_MT_AUTH`` passwords off
        loopback are served, with a word that they belong on loopback."""
        access = access_from_args(args, env_auth, audit=None)
        if access.users is not None and access.users.plain and not is_loopback(args.host):
            print(f"mura-mt: MURA_MT_AUTH holds plain passwords, meant for demos on loopback; on --host {args.host} "
                  "use a users file of hashes (python scripts/users.py FILE add USER; --auth-file FILE).")  # fmt: skip
        return cls(access, secure=bool(args.ssl_certfile or args.behind_https_proxy),
                   auth_message="mura-mt: sign in to use this research demo.")  # fmt: skip

    def open(self, site_audit: AuditLog | None, audit_log: str | None, audit_max_mb: float) -> None:
        """Before serving: every login, failure and refusal goes to the site's audit trail, or (an app without a
        worklist) to ``--audit-log`` or ``audit.jsonl`` in the working folder; uvicorn believes no forwarding
        header."""
        if not self.access.enabled:
            return
        self.access.audit = site_audit or AuditLog(audit_log or default_audit_path(None, None),
                                                   int(audit_max_mb * 2**20))  # fmt: skip
        trust_no_forwarding_header()

    def launch_options(self) -> dict:
        """``demo.launch``'s options for the door (none without a login: a loopback demo launches as it always
        did)."""
        if not self.access.enabled:
            return {}
        return {"auth_dependency": self.user_of, "app_kwargs": self.app_kwargs()}

    def render_signed_in(self, demo: gr.Blocks) -> None:
        """At the top of the page, with a login: who is signed in, with which roles, and the way out."""
        if not self.access.enabled:
            return
        line = gr.Markdown(elem_id="signed-in")
        demo.load(self.signed_in, None, line, api_visibility="private", queue=False)

    # -- Gradio's side: who a request is -------------------------------------------------------------------------

    def user_of(self, request) -> str | None:
        """Gradio's ``auth_dependency``: the user name, or None (401, and a page request goes to the login). A
        forged proxy header is answered 403. Loading the page counts as use of the session; other requests (the
        page's timers, its heartbeat) do not."""
        from fastapi import HTTPException

        try:
            identity = self.access.identify(request.headers, _address(request), _token(request.headers),
                                            touch=request.method == "GET" and request.url.path in ("/", ""))  # fmt: skip
        except ForgedIdentity as err:
            raise HTTPException(status_code=403, detail=str(err)) from None
        return identity.user if identity else None

    def identity(self, request, touch: bool = True) -> Identity | None:
        """The identity of a Gradio event's request (``gr.Request``); ``touch``: a person's action (not a timer)."""
        if not self.access.enabled:
            return OPEN
        if request is None:
            return None
        try:
            return self.access.identify(request.headers, _address(request), _token(request.headers), touch=touch)
        except ForgedIdentity:
            return None

    def refusal(self, request, permission: str, what: str, touch: bool = True) -> str | None:
        """None when the request's user may use ``what``; else the refusal to show (audited)."""
        return self._checked(request, permission, what, touch)[1]

    def _checked(self, request, permission: str, what: str, touch: bool) -> tuple[Identity | None, str | None]:
        """(the request's identity, the refusal or None): one look-up of the session for both."""
        identity = self.identity(request, touch)
        if identity is None:
            return None, "Your session has ended: reload the page and sign in again."
        return identity, self.access.refusal(identity, permission, _address(request), what)

    def allows(self, request, permission: str) -> bool:
        """Whether the request's user may, without auditing or counting as use (the page's timers ask this)."""
        identity = self.identity(request, touch=False)
        return identity is not None and identity.may(permission)

    def signed_in(self, request: gr.Request) -> str:
        """The line at the top of the page: who is signed in, with which roles, and the way out."""
        identity = self.identity(request, touch=False)
        if identity is None:
            return ""
        roles = ", ".join(sorted(identity.roles)) or "no role"
        way_out = "[Sign out](logout)" if identity.via == "login" else "signed in by the hospital's single sign-on"
        return f"Signed in as **{html.escape(identity.user)}** ({roles}) · {way_out}"

    def require(self, request, permission: str, what: str) -> Identity:
        """For API handlers: the identity, or a ``gr.Error`` with the refusal (audited)."""
        identity, refused = self._checked(request, permission, what, touch=True)
        if refused:
            raise gr.Error(refused, print_exception=False)
        return identity

    # -- our own routes in front of Gradio's ----------------------------------------------------------------------

    def app_kwargs(self) -> dict:
        """For ``launch(app_kwargs=...)``: the login and logout routes, and a page request without a session sent to
        the login page instead of Gradio's bare 401."""
        from starlette.routing import Route

        return {
            "routes": [
                Route("/login", self._login_page, methods=["GET"]),
                Route("/login", self._login, methods=["POST"]),
                Route("/login/", self._login, methods=["POST"]),
                Route("/logout", self._logout, methods=["GET"]),
            ],
            "exception_handlers": {401: self._unauthorised},
        }

    async def _login(self, request):
        from starlette.responses import JSONResponse

        form = await request.form()
        user, password = str(form.get("username") or "").strip(), str(form.get("password") or "")
        outcome = self.access.login(user, password, _address(request))
        if outcome.token is None:
            status = 429 if outcome.retry_after_s > 0 else 400
            headers = {"Retry-After": str(int(outcome.retry_after_s + 0.999))} if status == 429 else None
            return JSONResponse({"detail": outcome.message}, status_code=status, headers=headers)
        response = JSONResponse({"success": True})
        response.set_cookie(COOKIE, outcome.token, httponly=True, samesite="lax", secure=self._secure(request))
        return response

    async def _logout(self, request):
        from starlette.responses import RedirectResponse

        token = _token(request.headers)
        identity = self.identity(request, touch=False)
        self.access.logout(token, identity.user if identity else "", _address(request))
        response = RedirectResponse("login?out=1", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    async def _login_page(self, request):
        from starlette.responses import HTMLResponse

        notice = ""
        if request.query_params.get("out"):
            notice = "You have signed out."
        elif request.query_params.get("ended"):
            notice = "Your session ended: sign in again."
        return HTMLResponse(LOGIN_PAGE.replace("{message}", html.escape(self.auth_message)).replace(
            "{notice}", html.escape(notice)))  # fmt: skip

    async def _unauthorised(self, request, exc):
        from starlette.responses import JSONResponse, RedirectResponse

        if (
            request.method == "GET"
            and request.url.path in ("/", "")
            and "text/html" in request.headers.get("accept", "")
        ):
            ended = "?ended=1" if _token(request.headers) else ""
            return RedirectResponse(f"login{ended}", status_code=303)
        return JSONResponse({"detail": getattr(exc, "detail", "Not authenticated")}, status_code=401)

    def _secure(self, request) -> bool:
        return self.secure or request.url.scheme == "https"


def trust_no_forwarding_header() -> None:
    """uvicorn rewrites the peer address from X-Forwarded-For when the peer is in FORWARDED_ALLOW_IPS (127.0.0.1 by
    default): anyone on this machine could then pose as the trusted proxy. With a login, the peer address is the
    TCP peer, always."""
    os.environ["FORWARDED_ALLOW_IPS"] = ""


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mura-mt: sign in</title>
<style>
body { font-family: system-ui, sans-serif; background: #f4f4f5; display: flex; min-height: 100vh; margin: 0;
       align-items: center; justify-content: center; }
form { background: white; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); width: 20rem; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
label { display: block; margin: .8rem 0 .2rem; font-size: .9rem; }
input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
button { margin-top: 1.2rem; width: 100%; padding: .6rem; font-size: 1rem; background: #ea580c; color: white;
         border: 0; border-radius: 4px; cursor: pointer; }
#error { color: #b91c1c; min-height: 1.2em; margin-top: .8rem; font-size: .9rem; }
.notice { color: #374151; font-size: .9rem; }
</style></head>
<body><form id="login" method="post" action="login">
<h1>mura-mt</h1><p class="notice">{message}</p><p class="notice" id="notice">{notice}</p>
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button><div id="error" role="alert"></div>
</form>
<script>
document.getElementById('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = document.getElementById('error');
  error.textContent = '';
  const response = await fetch('login', {method: 'POST', body: new URLSearchParams(new FormData(event.target))});
  if (response.ok) { window.location.href = './'; return; }
  let detail = 'The login failed (' + response.status + ').';
  try { detail = (await response.json()).detail || detail; } catch (e) {}
  error.textContent = detail;
});
</script></body></html>
"""
