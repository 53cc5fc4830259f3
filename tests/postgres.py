"""A real PostgreSQL for the tests (``mura_mt.bench.postgres``): skipped locally without one, a failure in CI,
whose .ci/run installs Debian's postgresql."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mura_mt.bench.postgres import postgres_bin, running_postgres
from tests.services import required


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Yields the URL of a fresh database on a running server."""
    with required(
        postgres_bin() is not None,
        "CI must run the PostgreSQL tests: postgresql is not installed (.ci/run installs it)",
        "PostgreSQL not installed (apt-get install postgresql; .ci/run does)",
        running_postgres(),
    ) as url:
        yield url
