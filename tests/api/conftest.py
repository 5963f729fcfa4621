"""Fixtures of the HTTP API tests: an in-process client of the app, and the first seeded
project."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import app
from models.seed import SeededProject, SeedResult


@pytest.fixture
def client() -> TestClient:
    """Server errors come back as answers (500 in the dialect's envelope), not exceptions."""
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def project(seeded: SeedResult) -> SeededProject:
    return seeded.projects[0]
