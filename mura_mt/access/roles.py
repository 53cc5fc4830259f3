"""The roles and what each may do. One table: README's "Roles" table is this one, and every check in the app and
the node asks ``may(roles, permission)``.

A ``reader`` is a radiologist or a reporting clinician: the worklist with its patients, each study, recording reads
and the site's accuracy. An ``uploader`` analyses images they bring (the upload tab, ``/predict``,
``/predict_study``, the MCP tools) and sees no patient list, no study of the worklist and no site data. A
``monitor`` is the hospital's monitoring (Prometheus): ``/metrics`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

ANALYSE = "analyse"  # the upload tab, /predict, /predict_study, the MCP tools
WORKLIST = "worklist"  # the Worklist and Performance tabs, /worklist, /record_read, /performance
METRICS = "metrics"  # Prometheus /metrics

PERMISSIONS = {ANALYSE: "analyse uploaded images", WORKLIST: "the worklist, its studies, reads and the site's accuracy",
               METRICS: "Prometheus /metrics"}  # fmt: skip
ROLES: dict[str, frozenset[str]] = {
    "reader": frozenset({ANALYSE, WORKLIST}),
    "uploader": frozenset({ANALYSE}),
    "monitor": frozenset({METRICS}),
}
LEAST_ROLE = "uploader"  # a user file line without roles (as `htpasswd -B` writes it), a proxied user in no group


def parse_roles(text: str, where: str) -> frozenset[str]:
    """Comma-separated role names; ValueError names an unknown one and ``where`` it stands."""
    roles = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise ValueError(f"{where}: unknown role {', '.join(unknown)} (roles: {', '.join(ROLES)})")
    return roles


def may(roles: Iterable[str], permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return any(permission in ROLES.get(role, ()) for role in roles)


def roles_that_may(permission: str) -> list[str]:
    return [role for role, allowed in ROLES.items() if permission in allowed]
