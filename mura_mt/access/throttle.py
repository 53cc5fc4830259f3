"""Failed logins, counted per user and per address, and the lock-outs that follow.

After ``max_failures`` failures in a row for one user (or ``address_failures`` from one address), every attempt for
that user (from that address) is refused for ``lockout_s`` seconds, the right password included: the answer is 429
with the time to try again, before any password is checked (so guessing costs the server nothing either). Each
further failure after a lock ends locks again for twice as long, up to ``max_lockout_s``; a successful login clears
the user's and the address's count. Attempts during a lock do not lengthen it, so the owner of a guessed-at account
gets in once it ends. Kept in memory: a restart forgets the counts (and ends every session, ``sessions``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_FAILURES = 5
ADDRESS_FAILURES = 20  # an address may be a ward's shared proxy: more room than one account
LOCKOUT_S = 60.0
MAX_LOCKOUT_S = 3600.0
MAX_TRACKED = 100_000  # keys remembered at most (the oldest forgotten first): memory stays bounded under a spray


@dataclass
class _Count:
    failures: int = 0
    locks: int = 0
    locked_until: float = 0.0
    seen: float = 0.0


class LoginThrottle:
    def __init__(self, max_failures: int = MAX_FAILURES, lockout_s: float = LOCKOUT_S,
                 address_failures: int = ADDRESS_FAILURES, max_lockout_s: float = MAX_LOCKOUT_S):  # fmt: skip
        if max_failures < 1 or address_failures < 1 or lockout_s <= 0:
            raise ValueError("the login throttle needs at least one failure before a lock, and a positive lock-out")
        self.max_failures, self.address_failures = max_failures, address_failures
        self.lockout_s, self.max_lockout_s = lockout_s, max(max_lockout_s, lockout_s)
        self._counts: OrderedDict[tuple[str, str], _Count] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, user: str, address: str, now: float | None = None) -> float:
        """Seconds until ``user`` may try again from ``address`` (0: now)."""
        now = time.time() if now is None else now
        keys = (("user", user), ("address", address))
        with self._lock:
            until = max((self._counts[k].locked_until for k in keys if k in self._counts), default=0.0)
        return max(0.0, until - now)

    def failed(self, user: str, address: str, now: float | None = None) -> float:
        """Count a failure; the seconds of the lock it starts (0: none)."""
        now = time.time() if now is None else now
        locked = 0.0
        with self._lock:
            for key, limit in ((("user", user), self.max_failures), (("address", address), self.address_failures)):
                count = self._count(key, now)
                count.failures += 1
                if count.failures >= limit:
                    count.locks += 1
                    seconds = min(self.lockout_s * 2 ** (count.locks - 1), self.max_lockout_s)
                    count.locked_until = now + seconds
                    locked = max(locked, seconds)
        return locked

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._counts.pop(("user", user), None)
            self._counts.pop(("address", address), None)

    def _count(self, key: tuple[str, str], now: float) -> _Count:
        count = self._counts.pop(key, None) or _Count()
        count.seen = now
        self._counts[key] = count  # most recent last
        while len(self._counts) > MAX_TRACKED:
            self._counts.popitem(last=False)
        return count
