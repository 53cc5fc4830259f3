"""The real servers the tests start (Orthanc, PostgreSQL): skipped locally where one is not installed, a failure in
CI, whose .ci/run installs them, and a failure when one is installed but does not start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


def needed(present: bool, in_ci: str, locally: str) -> None:
    """Nothing when ``present``; else a skip here (``locally`` says what to install) and a failure in CI."""
    if not present:
        if os.environ.get("CI"):
            pytest.fail(in_ci)
        pytest.skip(locally)


@contextlib.contextmanager
def required(installed: bool, in_ci: str, locally: str, starting) -> Iterator:
    """Yields what ``starting`` (a context manager that raises RuntimeError when it cannot start) yields."""
    needed(installed, in_ci, locally)
    try:
        value = starting.__enter__()
    except RuntimeError as err:
        pytest.fail(str(err))
    try:
        yield value
    finally:
        starting.__exit__(None, None, None)
