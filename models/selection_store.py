"""The parsed form of a selection, as a job stores it (``job.selection``).

A selection is parsed once, when its job is submitted (:func:`models.selection.
parse_selection`); the typed :class:`~models.selection.Selection` is stored with the job
(:func:`dump`) and its runs read it back (:func:`load`) instead of parsing the request's
JSON again.  The Celery message still carries only the token.

The form is plain JSON: every node is ``{"@": <type name>, <field>: <value>, …}``, tuples
and frozensets as lists (frozensets sorted, so equal selections store equal text).  Only the
types of :data:`TYPES` are made back — never a name from elsewhere — and anything else in the
stored text (a row written by another version of the product) raises :class:`ValueError`,
upon which the runner parses the request's selection instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models.search import filter as filters
from models.search.query import Query, Term
from models.selection import Children, Failed, Gids, Search, Selection

#: Every type a parsed selection is made of, by name.
TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    Selection, Gids, Children, Search, Failed, Query, Term,
    filters.And, filters.Or, filters.Not, filters.HasClass, filters.DefinitionIs,
    filters.HasChannel, filters.StatusIs, filters.ParentIs, filters.AncestorIs,
    filters.ValueCond, filters.Age, filters.Between, filters.Validation, filters.Committed,
    filters.Extended, filters.TypeIs, filters.TextIs, filters.TextQuery)}
#: Fields held as frozensets (the rest of the sequences are tuples).
_SETS = frozenset({("Children", "exclude"), ("Search", "exclude")})
#: The version of this form; a stored selection of another one is parsed again.
VERSION = 1


def dump(selection: Selection) -> dict[str, Any]:
    """The JSON form of a parsed selection."""
    return {"v": VERSION, "selection": _dump(selection)}


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if name not in TYPES:
            raise TypeError(f"{name} is not part of a selection")
        return {"@": name, **{f.name: _dump(getattr(value, f.name))
                              for f in dataclasses.fields(value)}}
    if isinstance(value, frozenset):
        return sorted(_dump(v) for v in value)
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    return value


def load(stored: Any) -> Selection:
    """The parsed selection :func:`dump` stored; :class:`ValueError` for anything else."""
    if not isinstance(stored, dict) or stored.get("v") != VERSION:
        raise ValueError("not a stored selection of this version")
    selection = _load(stored.get("selection"))
    if not isinstance(selection, Selection):
        raise ValueError("not a stored selection")
    return selection


def _load(value: Any) -> Any:
    if isinstance(value, dict):
        cls = TYPES.get(str(value.get("@")))
        if cls is None:
            raise ValueError(f"unknown node {value.get('@')!r}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in value:
                raise ValueError(f"{cls.__name__} without {f.name!r}")
            raw = _load(value[f.name])
            if (cls.__name__, f.name) in _SETS:
                raw = frozenset(raw)
            elif isinstance(raw, list):
                raw = tuple(raw)
            kwargs[f.name] = raw
        return cls(**kwargs)
    if isinstance(value, list):
        return [_load(v) for v in value]
    return value
