"""The init data that ``auth``, ``login`` and ``init`` answer with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from bulkjobs import keys
from bulkjobs.connections import get_synclog
from models.auth import Member, Project, User
from models.queries import SCHEMA_DATA_KEYS, schema_public
from models.schema import SchemaItem

CC_VERSION = "2026.11.001"
LANGUAGE_NAMES = {"en": "English", "nl": "Nederlands", "de": "Deutsch", "fr": "Français"}


def init_payload(session: Session, *, user: User, project: Project,
                 omit_extended: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """``result`` and ``data`` of an init answer; ``omit_extended`` leaves out the records'
    extended definitions (Unicat's ``omit_extended_definitions``)."""
    members = session.execute(select(Member).where(Member.project_gid == project.gid)).scalars()
    members = list(members)
    mine = session.execute(select(Member).where(Member.user_gid == user.gid,
                                                Member.status == "active")).scalars()
    user_gids = {m.user_gid for m in members} | {user.gid}
    users = session.execute(select(User).where(User.gid.in_(user_gids))).scalars()
    log = get_synclog()
    data: dict[str, Any] = {
        "cc.users": {u.gid: u.public() for u in users},
        "cc.projects": {project.gid: project.public()},
        "cc.projects_members": [m.public() for m in members],
        "cc.languages": {lang: LANGUAGE_NAMES.get(lang, lang) for lang in project.languages},
        "definitions": {}, "classes": {}, "fields": {}, "layouts": {},
        "queries": {}, "modules": {},
    }
    query = select(SchemaItem).where(SchemaItem.project_gid == project.gid)
    if omit_extended:
        query = query.where(SchemaItem.is_extended.is_(False))
    items = session.execute(query)
    for item in items.scalars():
        data[SCHEMA_DATA_KEYS[item.type]][item.gid] = schema_public(item)
    result = {
        "user": user.gid,
        "user_projects": {m.project_gid: m.roles for m in mine},
        "project": project.gid,
        "project_members": [m.user_gid for m in members],
        "last_backed_up": None,
        "cc.version": CC_VERSION,
        "cc.cursor": log.cursor(keys.CC_SPACE),
        "cursor": log.cursor(project.gid),
    }
    return result, data
