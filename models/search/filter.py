"""The search ``filter`` (SPEC §4.2): a pure function from JSON to a typed filter tree.

A filter is a triplet ``[property, operator, operands]`` (``operands`` may be left out where
an operator takes none), or boolean logic: ``["and", "", [F…]]``, ``["or", "", [F…]]``,
``["not", "", F]``, nested at most :data:`MAX_DEPTH` levels (a plain triplet is one level).
:func:`parse_filter` returns the tree or raises :class:`~bulkjobs.errors.SelectionError`
naming the property or operator at fault; it never touches a database.

Negative operators are parsed into :class:`Not` around the positive condition
(``["status", "is_not", "deleted"]`` → ``Not(StatusIs("deleted"))``), so resolution only
knows positive conditions.  ``["and", "", []]`` matches everything, ``["or", "", []]``
nothing.

Records (``kind="records"``):

==========================  ========================  =========================================
property                    operators                 operands
==========================  ========================  =========================================
``classes``                 ``has``, ``has_not``      class name or gid; a record's classes
                                                      are its definition's ``classes``
``definition``              ``is``, ``is_not``        definition gid
``channel``                 ``has``, ``has_not``      channel key
``status``                  ``is``, ``is_not``        ``draft``, ``published``, ``deleted``
``parent``                  ``is``                    record gid (direct children)
``ancestor``                ``is``                    record gid (its whole subtree, itself
                                                      excluded)
``value``                   ``is``, ``is_not``,       ``[field name or gid, value]``; the
                            ``has``, ``<``, ``>``,    value of that field in the search's
                            ``is_empty``              language; ``is_empty`` takes ``[field]``
``updated_on``,             ``<``, ``>``              ``[n, "days"]``: fewer (``<``) / more
``created_on``                                        (``>``) than n days ago
                            ``between``               ``[from_ts, until_ts]``, inclusive; a
                                                      ``null`` end is open
``validation``              ``any``, ``is_empty``,    none
                            ``not_translated``
==========================  ========================  =========================================

``value`` semantics: ``is`` compares a string exactly, a number numerically, a boolean as
such; ``has`` finds a string case-insensitively inside a text value, or an element equal to
the operand inside a list value; ``<``/``>`` compare numbers with numbers and strings with
strings (code-point order); a value of another type never matches.  ``is_empty``: the field
is missing, ``null``, ``""``, ``[]`` or ``{}``.

``validation`` semantics (checked against the fields of the record's definition: the fields
of its classes, committed items only).  A field's JSON ``body`` may say ``is_required``,
``is_localized``, ``type``, ``min``/``max`` (numbers) and ``max_length`` (text).

* ``is_empty`` — a required field is empty in the search's language;
* ``any`` — any validation fails: a required field is empty, or a filled value has the wrong
  type (``number`` fields hold numbers; ``textline``/``text``/``textarea``/``html`` fields
  hold strings) or lies outside ``min``/``max``/``max_length``.  An empty optional field is
  not a failure;
* ``not_translated`` — localized text is empty in the search's language but filled in
  another: the title, or a field whose body says ``"is_localized": true``.

Schema items (``kind="schema"``): ``is_committed`` and ``is_extended`` (``is_true``,
``is_false``; operand ``null`` or absent), ``type`` (``is``: ``definition``, ``class``,
``field``, ``layout``), ``name`` and ``label`` (``q``: a search ``q`` over that text alone,
see :mod:`models.search.query`; ``is``: the whole text, case-insensitive; ``label`` in the
search's language).

Operands are checked here: gids and keys are non-empty strings of at most 64 characters,
other strings at most :data:`MAX_TEXT`; numbers are finite, not booleans, and integers lie
within ±2⁵³.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bulkjobs.errors import SelectionError
from models.search.query import Query, parse_q

MAX_DEPTH = 32
MAX_CONDITIONS = 1000
MAX_TEXT = 1000
MAX_KEY = 64
MAX_INT = 2**53
MAX_DAYS = 1_000_000
STATUSES = ("draft", "published", "deleted")
SCHEMA_TYPES = ("definition", "class", "field", "layout")

Kind = Literal["records", "schema"]
Scalar = str | int | float | bool | None


# -- boolean logic ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Filter


# -- records ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HasClass:
    ref: str  # class name or gid


@dataclass(frozen=True, slots=True)
class DefinitionIs:
    gid: str


@dataclass(frozen=True, slots=True)
class HasChannel:
    key: str


@dataclass(frozen=True, slots=True)
class StatusIs:
    status: str


@dataclass(frozen=True, slots=True)
class ParentIs:
    gid: str


@dataclass(frozen=True, slots=True)
class AncestorIs:
    gid: str


@dataclass(frozen=True, slots=True)
class ValueCond:
    field: str  # field name or gid
    op: Literal["is", "has", "<", ">", "is_empty"]
    value: Scalar = None


@dataclass(frozen=True, slots=True)
class Age:
    """``updated_on``/``created_on`` fewer (``<``) or more (``>``) than ``days`` days ago."""

    prop: Literal["updated_on", "created_on"]
    op: Literal["<", ">"]
    days: float


@dataclass(frozen=True, slots=True)
class Between:
    prop: Literal["updated_on", "created_on"]
    since: float | None
    until: float | None


@dataclass(frozen=True, slots=True)
class Validation:
    op: Literal["any", "is_empty", "not_translated"]


# -- schema items -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Committed:
    """``not is_new and not is_working_copy``."""


@dataclass(frozen=True, slots=True)
class Extended:
    pass


@dataclass(frozen=True, slots=True)
class TypeIs:
    type: str


@dataclass(frozen=True, slots=True)
class TextIs:
    prop: Literal["name", "label"]
    text: str


@dataclass(frozen=True, slots=True)
class TextQuery:
    prop: Literal["name", "label"]
    query: Query


Filter = (
    And | Or | Not | HasClass | DefinitionIs | HasChannel | StatusIs | ParentIs | AncestorIs
    | ValueCond | Age | Between | Validation | Committed | Extended | TypeIs | TextIs | TextQuery
)

_ABSENT: Any = object()


def parse_filter(value: Any, *, kind: Kind = "records") -> Filter | None:
    """Parse a filter or raise :class:`SelectionError`; ``None`` means no filter."""
    if value is None:
        return None
    return _Parser(kind).parse(value, 1)


def has_status(node: Filter | None) -> bool:
    """True when the filter has a ``status`` condition anywhere (it then decides which
    statuses a search sees, instead of the job's mode)."""
    if isinstance(node, And | Or):
        return any(has_status(p) for p in node.parts)
    if isinstance(node, Not):
        return has_status(node.part)
    return isinstance(node, StatusIs)


# -- parsing ------------------------------------------------------------------------------

Handler = Callable[[str, str, Any], Filter]


class _Parser:
    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.conditions = 0
        self.table = _RECORDS if kind == "records" else _SCHEMA

    def parse(self, value: Any, depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise SelectionError(f"filter is nested deeper than {MAX_DEPTH} levels")
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise SelectionError(f"filter has more than {MAX_CONDITIONS} conditions")
        if not isinstance(value, list):
            raise SelectionError(
                f"filter must be a [property, operator, operands] list, not {_type(value)}"
            )
        if len(value) not in (2, 3):
            raise SelectionError(
                f"filter must be a [property, operator, operands] list, not {len(value)} items"
            )
        prop, op = value[0], value[1]
        operand = value[2] if len(value) == 3 else _ABSENT
        if not isinstance(prop, str):
            raise SelectionError(f"filter property must be a string, not {_type(prop)}")
        if not isinstance(op, str):
            raise SelectionError(f"operator of {_show(prop)} must be a string, not {_type(op)}")
        if prop in ("and", "or", "not"):
            return self._logic(prop, op, operand, depth)
        handlers = self.table.get(prop)
        if handlers is None:
            what = "records" if self.kind == "records" else "schema items"
            raise SelectionError(f"unknown filter property {_show(prop)} for {what}")
        handler = handlers.get(op)
        if handler is None:
            raise SelectionError(
                f"unknown operator {_show(op)} for filter property {prop!r} "
                f"(expected one of: {', '.join(handlers)})"
            )
        return handler(prop, op, operand)

    def _logic(self, prop: str, op: str, operand: Any, depth: int) -> Filter:
        if op != "":
            raise SelectionError(f"{prop!r} takes the empty operator \"\", not {_show(op)}")
        if prop == "not":
            if operand is _ABSENT:
                raise SelectionError("'not' needs a filter as its operand")
            return Not(self.parse(operand, depth + 1))
        if not isinstance(operand, list):
            raise SelectionError(f"{prop!r} needs a list of filters, not {_type(operand)}")
        parts = tuple(self.parse(p, depth + 1) for p in operand)
        return And(parts) if prop == "and" else Or(parts)


# -- operand checks -----------------------------------------------------------------------

def storable(text: str) -> bool:
    """Can ``text`` be bound as an SQL parameter on every database?  Not if it holds NUL
    (PostgreSQL refuses it in text, SQLite ends a JSON path at it) or an unpaired surrogate
    (JSON allows ``"\\ud800"``; UTF-8 has no encoding for it)."""
    if text.isascii():  # a flag lookup in CPython: UUIDs and keys take this path
        return "\x00" not in text
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _key(prop: str, op: str, value: Any, what: str = "gid") -> str:
    if value is _ABSENT or not isinstance(value, str) or not value or len(value) > MAX_KEY:
        raise SelectionError(f"{prop} {op}: operand must be a {what} string "
                             f"(1 to {MAX_KEY} characters)")
    return _storable(prop, op, value)


def _text(prop: str, op: str, value: Any, what: str = "string") -> str:
    if value is _ABSENT or not isinstance(value, str) or len(value) > MAX_TEXT:
        raise SelectionError(f"{prop} {op}: operand must be a {what} of at most "
                             f"{MAX_TEXT} characters")
    return _storable(prop, op, value)


def _storable(prop: str, op: str, value: str) -> str:
    if not storable(value):
        raise SelectionError(f"{prop} {op}: operand holds a NUL character or an unpaired "
                             "surrogate")
    return value


def _number(prop: str, op: str, value: Any, what: str = "operand") -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SelectionError(f"{prop} {op}: {what} must be a number, not {_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SelectionError(f"{prop} {op}: {what} must be a finite number")
    if abs(value) > MAX_INT and isinstance(value, int):
        raise SelectionError(f"{prop} {op}: {what} is out of range (at most ±2**53)")
    return value


def _none(prop: str, op: str, value: Any) -> None:
    if value is not _ABSENT and value is not None:
        raise SelectionError(f"{prop} {op} takes no operand (null or absent), not {_type(value)}")


def _choice(prop: str, op: str, value: Any, choices: tuple[str, ...]) -> str:
    if value is _ABSENT or not isinstance(value, str) or value not in choices:
        raise SelectionError(f"{prop} {op}: operand must be one of {', '.join(choices)}")
    return value


# -- handlers -----------------------------------------------------------------------------

def _neg(handler: Handler) -> Handler:
    def negated(prop: str, op: str, value: Any) -> Filter:
        return Not(handler(prop, op, value))
    return negated


def _classes(prop: str, op: str, value: Any) -> Filter:
    return HasClass(_key(prop, op, value, "class name or gid"))


def _definition(prop: str, op: str, value: Any) -> Filter:
    return DefinitionIs(_key(prop, op, value))


def _channel(prop: str, op: str, value: Any) -> Filter:
    return HasChannel(_key(prop, op, value, "channel key"))


def _status(prop: str, op: str, value: Any) -> Filter:
    return StatusIs(_choice(prop, op, value, STATUSES))


def _parent(prop: str, op: str, value: Any) -> Filter:
    return ParentIs(_key(prop, op, value))


def _ancestor(prop: str, op: str, value: Any) -> Filter:
    return AncestorIs(_key(prop, op, value))


def _field(prop: str, op: str, value: Any) -> str:
    field = _text(prop, op, value, "field name or gid")
    # Field names become JSON path labels on SQLite, where a double quote cannot be escaped.
    if not field or '"' in field or "\\" in field:
        raise SelectionError(f"{prop} {op}: field name must be non-empty, without '\"' or '\\'")
    return field


def _value(prop: str, op: str, value: Any) -> Filter:
    if op == "is_empty":
        if not isinstance(value, list) or len(value) not in (1, 2) or (
                len(value) == 2 and value[1] is not None):
            raise SelectionError(f"{prop} {op}: operand must be [field name or gid]")
        return ValueCond(_field(prop, op, value[0]), "is_empty")
    if not isinstance(value, list) or len(value) != 2:
        raise SelectionError(f"{prop} {op}: operand must be [field name or gid, value]")
    field, operand = _field(prop, op, value[0]), value[1]
    allowed: tuple[type, ...] = (str, int, float) if op in ("<", ">") else (str, int, float, bool)
    if operand is None:
        raise SelectionError(f"{prop} {op}: value must not be null (use is_empty)")
    if not isinstance(operand, allowed) or (op in ("<", ">") and isinstance(operand, bool)):
        raise SelectionError(f"{prop} {op}: value must be a string or a number"
                             + ("" if op in ("<", ">") else " or a boolean"))
    if isinstance(operand, str):
        operand = _text(prop, op, operand, "value")
    elif not isinstance(operand, bool):
        operand = _number(prop, op, operand, "value")
    real_op = "is" if op == "is_not" else op
    cond = ValueCond(field, real_op, operand)  # type: ignore[arg-type]
    return Not(cond) if op == "is_not" else cond


def _age(prop: str, op: str, value: Any) -> Filter:
    if not isinstance(value, list) or len(value) != 2 or value[1] != "days":
        raise SelectionError(f"{prop} {op}: operand must be [n, \"days\"]")
    days = _number(prop, op, value[0], "n")
    if not 0 <= days <= MAX_DAYS:
        raise SelectionError(f"{prop} {op}: n must be between 0 and {MAX_DAYS}")
    return Age(prop, op, float(days))  # type: ignore[arg-type]


def _between(prop: str, op: str, value: Any) -> Filter:
    if not isinstance(value, list) or len(value) != 2:
        raise SelectionError(f"{prop} {op}: operand must be [from_ts, until_ts]")
    ends = [None if v is None else float(_number(prop, op, v, "timestamp")) for v in value]
    return Between(prop, ends[0], ends[1])  # type: ignore[arg-type]


def _validation(prop: str, op: str, value: Any) -> Filter:
    _none(prop, op, value)
    return Validation(op)  # type: ignore[arg-type]


def _flag(node: Filter) -> Handler:
    def handler(prop: str, op: str, value: Any) -> Filter:
        _none(prop, op, value)
        return node if op == "is_true" else Not(node)
    return handler


def _type_is(prop: str, op: str, value: Any) -> Filter:
    return TypeIs(_choice(prop, op, value, SCHEMA_TYPES))


def _text_is(prop: str, op: str, value: Any) -> Filter:
    return TextIs(prop, _text(prop, op, value))  # type: ignore[arg-type]


def _text_q(prop: str, op: str, value: Any) -> Filter:
    text = _text(prop, op, value, "q string")
    try:
        query = parse_q(text)
    except SelectionError as err:
        raise SelectionError(f"{prop} q: {err.reason}") from None
    return TextQuery(prop, query)  # type: ignore[arg-type]


_RECORDS: dict[str, dict[str, Handler]] = {
    "classes": {"has": _classes, "has_not": _neg(_classes)},
    "definition": {"is": _definition, "is_not": _neg(_definition)},
    "channel": {"has": _channel, "has_not": _neg(_channel)},
    "status": {"is": _status, "is_not": _neg(_status)},
    "parent": {"is": _parent},
    "ancestor": {"is": _ancestor},
    "value": {op: _value for op in ("is", "is_not", "has", "<", ">", "is_empty")},
    "updated_on": {"<": _age, ">": _age, "between": _between},
    "created_on": {"<": _age, ">": _age, "between": _between},
    "validation": {op: _validation for op in ("any", "is_empty", "not_translated")},
}

_SCHEMA: dict[str, dict[str, Handler]] = {
    "is_committed": {"is_true": _flag(Committed()), "is_false": _flag(Committed())},
    "is_extended": {"is_true": _flag(Extended()), "is_false": _flag(Extended())},
    "type": {"is": _type_is},
    "name": {"q": _text_q, "is": _text_is},
    "label": {"q": _text_q, "is": _text_is},
}


def _show(value: str) -> str:
    """A property or operator for an error message, cut short: messages are echoed back."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _type(value: Any) -> str:
    if value is _ABSENT:
        return "nothing"
    return {
        type(None): "null", bool: "a boolean", int: "a number", float: "a number",
        str: "a string", list: "a list", dict: "an object",
    }.get(type(value), type(value).__name__)
