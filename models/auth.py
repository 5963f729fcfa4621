"""Projects, users, memberships and API keys."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

ALL_CHANNEL = "__all__"


class Project(SQLModel, table=True):
    gid: str = Field(primary_key=True, max_length=36)
    name: str
    status: str = "active"  # active | deleted
    languages: list[str] = Field(default_factory=lambda: ["en"], sa_column=Column(JSON))
    channels: dict[str, str] = Field(
        default_factory=lambda: {ALL_CHANNEL: "[all records]"}, sa_column=Column(JSON)
    )
    orderings: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    created_on: float = 0.0

    def public(self) -> dict[str, Any]:
        return {
            "gid": self.gid, "name": self.name, "status": self.status,
            "options": {
                "languages": self.languages, "channels": self.channels,
                "orderedchannels": list(self.channels), "orderings": self.orderings,
            },
        }


class User(SQLModel, table=True):
    gid: str = Field(primary_key=True, max_length=36)
    username: str = Field(unique=True, index=True)
    name: str = ""
    password_hash: str = ""
    ops: bool = False
    # A disabled user can neither log in nor use a token issued before.
    disabled: bool = False
    # Tokens carry the version of their login ("ver"); one older than this is refused, so
    # bumping it ends every session of the user at once.
    token_version: int = 0

    def public(self) -> dict[str, Any]:
        return {"gid": self.gid, "username": self.username, "name": self.name}


class Member(SQLModel, table=True):
    project_gid: str = Field(primary_key=True, foreign_key="project.gid", max_length=36)
    user_gid: str = Field(primary_key=True, foreign_key="user.gid", max_length=36, index=True)
    roles: list[str] = Field(default_factory=lambda: ["member"], sa_column=Column(JSON))
    status: str = "active"  # active | invited

    def public(self) -> dict[str, Any]:
        return {
            "project_gid": self.project_gid, "user_gid": self.user_gid, "status": self.status,
            "roles": self.roles,
            "options": {"notifications": {}, "rate_limit_per_second": None},
        }


def new_key_id() -> str:
    """A short public id of an API key (not a secret: listed, and carried by its tokens)."""
    return secrets.token_hex(6)


class ApiKey(SQLModel, table=True):
    """An API key, stored as its SHA-256 digest.  Keys are 256-bit random strings, so a fast
    digest is enough (unlike passwords, which get scrypt).  ``key_id`` names the key in
    listings and in the JWTs made from it; revoking deletes the row."""

    __table_args__ = (UniqueConstraint("user_gid", "project_gid", "name"),)

    key_hash: str = Field(primary_key=True, max_length=64)
    user_gid: str = Field(foreign_key="user.gid", max_length=36, index=True)
    project_gid: str = Field(foreign_key="project.gid", max_length=36)
    name: str = "default"
    created_on: float = 0.0
    key_id: str = Field(default_factory=new_key_id, max_length=16, unique=True, index=True)
