"""Selection parsing: a pure function from request JSON to a typed selection.

A selection is a JSON list; each entry is a gid string, a children entry or a search entry
(SPEC §4).  :func:`parse_selection` either returns a :class:`Selection` or raises
:class:`~bulkjobs.errors.SelectionError` naming the entry index and the reason; it never
touches the database, so a malformed selection is rejected before anything is queued.

Rules (stated in the README too):

* Entries are evaluated in list order and concatenated; a gid seen before is dropped.
* ``exclude`` removes gids from its own entry's results only.
* Unknown gids and gids of another project are skipped silently at resolution.
* Every string kept (gids, keys, languages, filter operands) is text any database can bind:
  one holding NUL or an unpaired surrogate (JSON can spell ``"\\ud800"``) is a
  ``SelectionError``, since it cannot name anything and would make the database raise.
* Limits: at most ``MAX_ENTRIES`` children/search entries and at most ``MAX_GIDS`` plain gid
  strings (plain gids are counted separately, so a selection of 100,000 gids is allowed).
* ``{"failures_of": <token>}`` (:class:`Failed`, the failed items of a job) is internal: it
  parses only with ``internal=True`` (a selection the product stored itself, such as a
  retry's); from a client it is an object without a known key, and refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bulkjobs.errors import SelectionError
from models.search.filter import Filter, parse_filter, storable
from models.search.query import Query, parse_q

MAX_ENTRIES = 10_000
MAX_GIDS = 100_000
MAX_EXCLUDES = 100_000
MAX_GID_LENGTH = 64
MAX_LANGUAGE_LENGTH = 35  # the longest BCP 47 tag in common use

Kind = Literal["records", "schema"]


@dataclass(frozen=True, slots=True)
class Gids:
    """A run of consecutive plain gid entries (kept together so they resolve in one query)."""

    index: int  # index of the first gid of the run
    gids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Children:
    index: int
    parent: str
    channel: str | None = None
    ordering: str | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Search:
    """A search entry, parsed: ``q`` (:mod:`models.search.query`) and ``filter``
    (:mod:`models.search.filter`; ``None`` when there is none).  ``index`` is the entry's
    index in its selection (-1 for a search parsed on its own, see :func:`parse_search`)."""

    index: int
    language: str
    q: Query = Query()
    filter: Filter | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Failed:
    """The failed items of a finished job (``{"failures_of": <token>}``), as its failure rows
    name them (:mod:`models.failures`), each taken as a plain gid is.  Internal: only a job
    the product queued itself (a retry) holds one; clients cannot send it."""

    index: int
    job: str


Entry = Gids | Children | Search | Failed


@dataclass(frozen=True, slots=True)
class Selection:
    kind: Kind
    entries: tuple[Entry, ...] = field(default_factory=tuple)


CHILDREN_KEYS = frozenset({"children", "channel", "ordering", "exclude"})
SEARCH_KEYS = frozenset({"search", "exclude"})
SEARCH_OBJECT_KEYS = frozenset({"language", "q", "filter"})
#: The internal entry :class:`Failed`.
FAILED_KEY = "failures_of"


def parse_selection(value: Any, *, kind: Kind = "records", internal: bool = False
                    ) -> Selection:
    """Parse a selection or raise :class:`SelectionError` (application error 1006).
    ``internal``: the selection of a job the product queued itself, which may hold
    :class:`Failed` entries (a client's never does)."""
    if not isinstance(value, list):
        raise SelectionError("selection must be a list")
    entries: list[Entry] = []
    run: list[str] = []
    run_start = 0
    gid_count = 0
    dict_count = 0
    for index, raw in enumerate(value):
        if isinstance(raw, str):
            if not run:
                run_start = index
            gid_count += 1
            if gid_count > MAX_GIDS:
                raise SelectionError(f"more than {MAX_GIDS} plain gids", entry=index)
            run.append(_gid(raw, index, "gid"))
            continue
        if run:
            entries.append(Gids(run_start, tuple(run)))
            run = []
        dict_count += 1
        if dict_count > MAX_ENTRIES:
            raise SelectionError(f"more than {MAX_ENTRIES} entries", entry=index)
        if internal and isinstance(raw, dict) and FAILED_KEY in raw:
            entries.append(_parse_failed(raw, index))
            continue
        entries.append(_parse_entry(raw, index, kind))
    if run:
        entries.append(Gids(run_start, tuple(run)))
    return Selection(kind=kind, entries=tuple(entries))


def _parse_entry(raw: Any, index: int, kind: Kind) -> Entry:
    if not isinstance(raw, dict):
        raise SelectionError(
            f"entry must be a gid string or an object, not {_type_name(raw)}", entry=index
        )
    if "children" in raw:
        if kind == "schema":
            raise SelectionError("schema items do not support children entries", entry=index)
        return _parse_children(raw, index)
    if "search" in raw:
        return _parse_search(raw, index, kind)
    raise SelectionError("entry object needs a 'children' or a 'search' key", entry=index)


def _parse_children(raw: dict[str, Any], index: int) -> Children:
    unknown = set(raw) - CHILDREN_KEYS
    if unknown:
        raise SelectionError(f"unknown key {sorted(unknown)[0]!r} in children entry", entry=index)
    return Children(
        index=index,
        parent=_gid(raw["children"], index, "children"),
        channel=_optional_key(raw.get("channel"), index, "channel"),
        ordering=_optional_key(raw.get("ordering"), index, "ordering"),
        exclude=_exclude(raw.get("exclude"), index),
    )


def _parse_failed(raw: dict[str, Any], index: int) -> Failed:
    if set(raw) != {FAILED_KEY}:
        raise SelectionError(f"unknown key in {FAILED_KEY} entry", entry=index)
    return Failed(index=index, job=_gid(raw[FAILED_KEY], index, FAILED_KEY))


def _parse_search(raw: dict[str, Any], index: int, kind: Kind) -> Search:
    unknown = set(raw) - SEARCH_KEYS
    if unknown:
        raise SelectionError(f"unknown key {sorted(unknown)[0]!r} in search entry", entry=index)
    search = parse_search(raw["search"], kind=kind, index=index)
    return replace(search, exclude=_exclude(raw.get("exclude"), index))


def parse_search(value: Any, *, kind: Kind = "records", index: int | None = None) -> Search:
    """Parse a search object ``{"language", "q"?, "filter"?}`` — of a selection entry, or of
    a ``records/search`` request (``index`` None: errors then name no entry)."""
    if not isinstance(value, dict):
        raise SelectionError("'search' must be an object", entry=index)
    unknown = set(value) - SEARCH_OBJECT_KEYS
    if unknown:
        raise SelectionError(f"unknown key {sorted(unknown)[0]!r} in search object", entry=index)
    language = value.get("language")
    if not isinstance(language, str) or not language:
        raise SelectionError("search needs a 'language' string", entry=index)
    # The language becomes a JSON path label on SQLite, where a double quote cannot be escaped.
    if (len(language) > MAX_LANGUAGE_LENGTH or '"' in language or "\\" in language
            or not storable(language)):
        raise SelectionError("search 'language' is not a language code", entry=index)
    q = value.get("q")
    if q is not None and not isinstance(q, str):
        raise SelectionError("'q' must be a string", entry=index)
    try:
        return Search(index=-1 if index is None else index, language=language, q=parse_q(q),
                      filter=parse_filter(value.get("filter"), kind=kind))
    except SelectionError as err:
        if err.entry is not None or index is None:
            raise
        raise SelectionError(err.reason, entry=index) from None


def _gid(value: Any, index: int, what: str) -> str:
    if not isinstance(value, str):
        raise SelectionError(f"{what} must be a gid string, not {_type_name(value)}", entry=index)
    if len(value) > MAX_GID_LENGTH:
        raise SelectionError(f"{what} is too long to be a gid", entry=index)
    if not storable(value):
        raise SelectionError(f"{what} holds a NUL character or an unpaired surrogate",
                             entry=index)
    return value


def _optional_key(value: Any, index: int, what: str) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not value or len(value) > MAX_GID_LENGTH
            or not storable(value)):
        raise SelectionError(f"{what} must be a key string", entry=index)
    return value


def _exclude(value: Any, index: int) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise SelectionError("exclude must be a list of gids", entry=index)
    if len(value) > MAX_EXCLUDES:
        raise SelectionError(f"exclude has more than {MAX_EXCLUDES} gids", entry=index)
    return frozenset(_gid(v, index, "exclude item") for v in value)


def _type_name(value: Any) -> str:
    return {
        type(None): "null", bool: "a boolean", int: "a number", float: "a number",
        str: "a string", list: "a list", dict: "an object",
    }.get(type(value), type(value).__name__)
