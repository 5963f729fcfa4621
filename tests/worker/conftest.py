"""Fixtures of the worker tests.  (Only named fixtures here — nothing autouse — so that the
in-process tests of this directory are unaffected.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.worker.deployment import Deployment, make_deployment


@pytest.fixture
def deployment(services: Engine) -> Iterator[Deployment]:
    """Real ``celery worker`` processes on a Redis database of their own (see
    :mod:`tests.worker.deployment`); every worker is stopped after the test."""
    yield from make_deployment()
