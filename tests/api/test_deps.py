"""Request dependencies shared by the dialects (unit, no services)."""

from __future__ import annotations

import pytest

from api.deps import Actor
from bulkjobs.tokens import Claims
from models.auth import Project


@pytest.mark.parametrize(("languages", "expected"), [
    (["nl", "en"], "nl"), (["en"], "en"), ([], "en"),
])
def test_actor_language_is_the_projects_first(languages: list[str], expected: str) -> None:
    """The DatoCMS and Plone dialects speak the project's first language, ``en`` without
    any."""
    project = Project(gid="p", name="p", languages=languages)
    actor = Actor(claims=Claims(user="u", ops=False, exp=0), project=project)
    assert actor.language == expected
