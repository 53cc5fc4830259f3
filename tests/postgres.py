"""A real PostgreSQL for the tests (``mura_mt.bench.postgres``): skipped locally without one, a failure in CI,
whose .ci/run installs Debian's postgresql."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from mura_mt.bench.postgres import postgres_bin, running_postgres


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Yields the URL of a fresh database on a running server."""
    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: postgresql is not installed (.ci/run installs it)")
        pytest.skip("PostgreSQL not installed (apt-get install postgresql; .ci/run does)")
    try:
        context = running_postgres()
        url = context.__enter__()
    except RuntimeError as err:
        pytest.fail(str(err))
    try:
        yield url
    finally:
        context.__exit__(None, None, None)
