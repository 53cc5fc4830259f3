"""The hospital's single sign-on: a reverse proxy (oauth2-proxy, Apache or nginx with Kerberos or LDAP) has
authenticated the person and names them in a header; the app decides what they may do from the groups it names.

Only a request whose TCP peer is one of ``--trusted-proxy``'s addresses is believed; the same headers from any
other address are a forgery, refused and audited by the caller. (uvicorn is told to trust no forwarding header
itself, so the peer address is the real one: see ``web.login``.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from mura_mt.access.roles import LEAST_ROLE, ROLES

USER_HEADER = "X-Forwarded-User"
GROUPS_HEADER = "X-Forwarded-Groups"


class TrustedProxy:
    def __init__(self, addresses: str, group_roles: str = "", user_header: str = USER_HEADER,
                 groups_header: str = GROUPS_HEADER):  # fmt: skip
        """``addresses``: ``ADDR[,ADDR]`` (addresses or networks); ``group_roles``: ``GROUP=ROLE,...`` (a group may
        be named twice for two roles). ValueError says what is malformed."""
        self.networks = []
        for entry in (e.strip() for e in addresses.split(",")):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"--trusted-proxy {entry!r} is not an IP address or network") from None
        if not self.networks:
            raise ValueError("--trusted-proxy names no address")
        self.group_roles: dict[str, set[str]] = {}
        for entry in (e.strip() for e in group_roles.split(",")):
            if not entry:
                continue
            group, sep, role = entry.rpartition("=")
            if not sep or not group.strip() or role.strip() not in ROLES:
                raise ValueError(
                    f"--group-roles entry {entry!r}: expected GROUP=ROLE with ROLE one of {', '.join(ROLES)}"
                )
            self.group_roles.setdefault(group.strip(), set()).add(role.strip())
        self.user_header, self.groups_header = user_header, groups_header

    def trusts(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def claims(self, headers: Mapping[str, str]) -> bool:
        """Whether a request names a user the way the proxy does (believed or not)."""
        return bool((headers.get(self.user_header) or "").strip())

    def identity(self, headers: Mapping[str, str]) -> tuple[str, frozenset[str]]:
        """(user, roles) of a request that came through the proxy and names a user: the roles of its groups, or the
        least role when none of its groups has one."""
        user = headers.get(self.user_header, "").strip()
        groups = [g.strip() for g in (headers.get(self.groups_header) or "").split(",") if g.strip()]
        roles = frozenset(r for g in groups for r in self.group_roles.get(g, ()))
        return user, roles or frozenset({LEAST_ROLE})
