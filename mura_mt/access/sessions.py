"""Login sessions: a random token per login, held in a cookie by a browser or by ``gradio_client``.

A session unused for ``idle_s`` seconds ends (the next request must log in again); logging out ends it at once; the
tokens live in this process's memory only, so a restart ends them all. "Used" means a person's action: the page
loaded, an API call, a click; the page's own timers do not keep a session alive (their callers pass
``touch=False``).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

IDLE_MINUTES = 30.0


@dataclass
class Session:
    user: str
    roles: frozenset[str]
    last_used: float


class Sessions:
    def __init__(self, idle_s: float = IDLE_MINUTES * 60):
        if idle_s <= 0:
            raise ValueError("--session-idle-minutes must be positive")
        self.idle_s = idle_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, user: str, roles: frozenset[str], now: float | None = None) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._forget_idle(time.time() if now is None else now)
            self._sessions[token] = Session(user, roles, time.time() if now is None else now)
        return token

    def get(self, token: str | None, touch: bool = False, now: float | None = None) -> Session | None:
        """The live session of ``token`` (None: none, or ended by idleness); ``touch`` counts this as use."""
        if not token:
            return None
        now = time.time() if now is None else now
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_used > self.idle_s:
                del self._sessions[token]
                return None
            if touch:
                session.last_used = now
            return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def end_user(self, user: str) -> None:
        """Every session of ``user`` (a disabled account, say)."""
        with self._lock:
            for token in [t for t, s in self._sessions.items() if s.user == user]:
                del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)

    def _forget_idle(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if now - s.last_used > self.idle_s]:
            del self._sessions[token]
