"""A typed filter tree (:mod:`models.search.filter`) turned into one SQL predicate.

Records are ``r`` (table ``record``), schema items ``s`` (table ``schema_item``).  Every
condition is written once per database where the two differ (JSON access, case folding,
word matching); the semantics are the ones documented in :mod:`models.search.filter`.

Three-valued logic: a leaf may come out NULL where data is missing (a record without a
definition, a field that is not there); at the top of a ``WHERE`` NULL already means "no".
Under ``not`` it must mean "no" as well, so :class:`Not` is compiled as
``NOT COALESCE(<part>, FALSE)`` — which also makes ``or``/``and`` below a ``not`` come out
right, because a NULL there only ever stands for false.

SQLite has no Unicode case folding and no regular expressions built in, so two small,
deterministic Python functions are registered on the connection (:func:`sqlite_functions`):
``bj_lower`` (``str.lower``) and ``bj_words_match`` (does a text hold a ``q`` term, cut into
words exactly as :func:`models.search.query.words` does).  They serve schema items (a small
table) and ``value has``; record text search goes through the index instead.
"""

from __future__ import annotations

import json
from functools import lru_cache

from sqlalchemy import Connection, text

from models import dialect
from models.records import DELETED, deleted_sql, live_sql
from models.search.filter import (
    Age,
    AncestorIs,
    And,
    Between,
    Committed,
    DefinitionIs,
    Extended,
    Filter,
    HasChannel,
    HasClass,
    Kind,
    Not,
    Or,
    ParentIs,
    StatusIs,
    TextIs,
    TextQuery,
    TypeIs,
    Validation,
    ValueCond,
)
from models.search.query import Query, Term, words

DAY = 86_400.0
TEXT_TYPES = ("textline", "text", "textarea", "html")


class Params:
    """Named bind parameters for one statement: ``p(value)`` → ``":f3"``."""

    def __init__(self, prefix: str = "f") -> None:
        self.values: dict[str, object] = {}
        self.prefix = prefix

    def name(self, value: object) -> str:
        key = f"{self.prefix}{len(self.values) + 1}"
        self.values[key] = value
        return key

    def __call__(self, value: object) -> str:
        return ":" + self.name(value)


# -- SQLite helper functions --------------------------------------------------------------

def sqlite_functions(conn: Connection) -> None:
    """Register ``bj_lower`` and ``bj_words_match`` on this SQLite connection (idempotent)."""
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.driver_connection
    raw.create_function("bj_lower", 1, _lower, deterministic=True)  # type: ignore[union-attr]
    raw.create_function(  # type: ignore[union-attr]
        "bj_words_match", 2, _words_match, deterministic=True
    )


def _lower(value: object) -> str | None:
    return None if value is None else str(value).lower()


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> tuple[str, ...]:
    return tuple(json.loads(pattern))


def _words_match(value: object, pattern: str) -> int:
    """1 when the words of ``value`` hold the pattern's words in sequence, each by prefix."""
    if value is None:
        return 0
    have, want = words(str(value)), _pattern(pattern)
    for i in range(len(have) - len(want) + 1):
        if all(have[i + j].startswith(w) for j, w in enumerate(want)):
            return 1
    return 0


# -- the compiler -------------------------------------------------------------------------

class FilterSQL:
    """Compiles filters (and schema ``q`` text conditions) for one search statement.

    ``ctes`` collects the common table expressions the predicates refer to; the statement
    puts them in its ``WITH`` clause."""

    def __init__(self, conn: Connection, *, kind: Kind, project_gid: str, language: str,
                 params: Params, now: float) -> None:
        self.conn = conn
        self.pg = dialect.is_pg(conn)
        self.kind = kind
        self.p = params
        self.proj = params(project_gid)
        self.project_gid = project_gid
        self.language = language
        self.lang = params(language)
        # SQLite JSON path of the search language (the selection parser keeps quotes out).
        self.lang_path = params(f'$."{language}"')
        self.now = now
        self.ctes: dict[str, str] = {}
        self._field_names: dict[str, str] = {}

    def compile(self, node: Filter) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.compile(p) for p in node.parts) + ")" \
                if node.parts else "(1 = 1)"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.compile(p) for p in node.parts) + ")" \
                if node.parts else "(1 = 0)"
        if isinstance(node, Not):
            return f"(NOT COALESCE({self.compile(node.part)}, FALSE))"
        leaf = getattr(self, "_" + type(node).__name__.lower())
        return "(" + leaf(node) + ")"

    # -- records ------------------------------------------------------------------------

    def _hasclass(self, node: HasClass) -> str:
        ref = self.p(node.ref)
        return (
            "r.definition IN (SELECT d.gid FROM schema_item d, "
            f"{self._elements('d.classes', 'dc')} "
            f"WHERE d.project_gid = {self.proj} AND d.type = 'definition' "
            "AND NOT d.is_working_copy AND dc.value IN (SELECT k.gid FROM schema_item k "
            f"WHERE k.project_gid = {self.proj} AND k.type = 'class' "
            f"AND NOT k.is_working_copy AND (k.gid = {ref} OR k.name = {ref})))"
        )

    def _definitionis(self, node: DefinitionIs) -> str:
        return f"r.definition = {self.p(node.gid)}"

    def _haschannel(self, node: HasChannel) -> str:
        return dialect.json_array_has(self.conn, "r.channels", self.p.name(node.key))

    def _statusis(self, node: StatusIs) -> str:
        if node.status == DELETED:
            return deleted_sql("r")
        return f"(r.status = {self.p(node.status)} AND {live_sql('r')})"

    def _parentis(self, node: ParentIs) -> str:
        return (f"r.parent_id = (SELECT pa.id FROM record pa WHERE pa.gid = {self.p(node.gid)} "
                f"AND pa.project_gid = {self.proj})")

    def _ancestoris(self, node: AncestorIs) -> str:
        # The subtree range of SPEC's materialised path, the ancestor itself left out; two
        # scalar subqueries (not a join) so the mpath index can serve the range.
        gid = self.p(node.gid)
        find = f"FROM record an WHERE an.gid = {gid} AND an.project_gid = {self.proj}"
        return (f"r.mpath > (SELECT an.mpath {find}) AND r.mpath < "
                f"(SELECT substr(an.mpath, 1, length(an.mpath) - 1) || '0' {find})")

    def _age(self, node: Age) -> str:
        cutoff = self.p(self.now - node.days * DAY)
        # "<": fewer than n days ago, i.e. after the cut-off; ">": more, i.e. before it.
        return f"r.{node.prop} {'>' if node.op == '<' else '<'} {cutoff}"

    def _between(self, node: Between) -> str:
        parts = []
        if node.since is not None:
            parts.append(f"r.{node.prop} >= {self.p(node.since)}")
        if node.until is not None:
            parts.append(f"r.{node.prop} <= {self.p(node.until)}")
        return " AND ".join(parts) or "1 = 1"

    def _valuecond(self, node: ValueCond) -> str:
        name = self._field_name(node.field)
        value = node.value
        if self.pg:
            j = f"(CAST(r.fields AS jsonb) -> {self.lang} -> {self.p(name)})"
            if node.op == "is_empty":
                return _pg_empty(j)
            if node.op == "is":
                return f"{j} = CAST({self.p(json.dumps(value))} AS jsonb)"
            if node.op in ("<", ">"):
                if isinstance(value, str):
                    return (f"jsonb_typeof({j}) = 'string' "
                            f"AND ({j} #>> '{{}}') COLLATE \"C\" {node.op} {self.p(value)}")
                return (f"jsonb_typeof({j}) = 'number' "
                        f"AND {j} {node.op} CAST({self.p(json.dumps(value))} AS jsonb)")
            in_list = (f"(jsonb_typeof({j}) = 'array' "
                       f"AND {j} @> CAST({self.p(json.dumps([value]))} AS jsonb))")
            if isinstance(value, str):
                return (f"(jsonb_typeof({j}) = 'string' AND "
                        f"strpos(lower({j} #>> '{{}}'), {self.p(value.lower())}) > 0) "
                        f"OR {in_list}")
            return in_list
        path = self.p(f'$."{self.language}"."{name}"')
        t, v = f"json_type(r.fields, {path})", f"json_extract(r.fields, {path})"
        if node.op == "is_empty":
            return _sqlite_empty(t, v)
        if node.op in ("is", "<", ">"):
            op = "=" if node.op == "is" else node.op
            if isinstance(value, bool):
                return f"{t} = '{'true' if value else 'false'}'"
            kinds = "('text')" if isinstance(value, str) else "('integer', 'real')"
            return f"{t} IN {kinds} AND {v} {op} {self.p(value)}"
        elements = f"SELECT 1 FROM json_each(r.fields, {path}) e WHERE "
        if isinstance(value, bool):
            elements += f"e.type = '{'true' if value else 'false'}'"
        elif isinstance(value, str):
            elements += f"e.type = 'text' AND e.value = {self.p(value)}"
        else:
            elements += f"e.type IN ('integer', 'real') AND e.value = {self.p(value)}"
        in_list = f"({t} = 'array' AND EXISTS ({elements}))"
        if isinstance(value, str):
            return (f"({t} = 'text' AND instr(bj_lower({v}), {self.p(value.lower())}) > 0) "
                    f"OR {in_list}")
        return in_list

    def _validation(self, node: Validation) -> str:
        self._deffield()
        if self.pg:
            j = f"(CAST(r.fields AS jsonb) -> {self.lang} -> df.name)"
            empty = _pg_empty(j)
            number_bad = (f"jsonb_typeof({j}) <> 'number' OR {j} < df.fmin OR {j} > df.fmax")
            text_bad = (f"jsonb_typeof({j}) <> 'string' "
                        f"OR length({j} #>> '{{}}') > df.maxlen")
            join = ""
            other = ("EXISTS (SELECT 1 FROM jsonb_each("
                     f"{_pg_object('CAST(r.fields AS jsonb)')}) ol WHERE ol.key <> {self.lang} "
                     f"AND NOT {_pg_empty('(ol.value -> df.name)')})")
            t = "CAST(r.title AS jsonb)"
            title_filled = (f"COALESCE(jsonb_typeof({t} -> {self.lang}) = 'string' "
                            f"AND ({t} ->> {self.lang}) <> '', FALSE)")
            title_elsewhere = (f"EXISTS (SELECT 1 FROM jsonb_each({_pg_object(t)}) ot "
                               f"WHERE ot.key <> {self.lang} AND jsonb_typeof(ot.value) = "
                               "'string' AND (ot.value #>> '{}') <> '')")
        else:
            empty = _sqlite_empty("fv.type", "fv.value")
            number_bad = ("fv.type NOT IN ('integer', 'real') OR fv.value < df.fmin "
                          "OR fv.value > df.fmax")
            text_bad = "fv.type <> 'text' OR length(fv.value) > df.maxlen"
            join = (f"LEFT JOIN json_each(r.fields, {self.lang_path}) fv "
                    "ON fv.key = df.name ")
            other = ("EXISTS (SELECT 1 FROM json_each(r.fields) ol, json_each("
                     "CASE WHEN ol.type = 'object' THEN ol.value ELSE '{}' END) ov "
                     f"WHERE ol.key <> {self.lang} AND ov.key = df.name "
                     f"AND NOT {_sqlite_empty('ov.type', 'ov.value')})")
            title_filled = (f"COALESCE(json_type(r.title, {self.lang_path}) = 'text' "
                            f"AND json_extract(r.title, {self.lang_path}) <> '', FALSE)")
            title_elsewhere = ("EXISTS (SELECT 1 FROM json_each(r.title) ot "
                               f"WHERE ot.key <> {self.lang} AND ot.type = 'text' "
                               "AND ot.value <> '')")
        if node.op == "is_empty":
            cond = f"df.required AND {empty}"
        elif node.op == "any":
            types = ", ".join(f"'{t}'" for t in TEXT_TYPES)
            # A NULL below (no min, an unknown type) leaves that check out: inside EXISTS a
            # NULL condition is simply not a failure.
            cond = (f"(df.required AND {empty}) OR (NOT {empty} AND ("
                    f"(df.ftype = 'number' AND ({number_bad})) OR "
                    f"(df.ftype IN ({types}) AND ({text_bad}))))")
        else:
            cond = f"df.localized AND {empty} AND {other}"
        fields = (f"EXISTS (SELECT 1 FROM deffield df {join}"
                  f"WHERE df.definition = r.definition AND ({cond}))")
        if node.op != "not_translated":
            return fields
        return f"{fields} OR (NOT {title_filled} AND {title_elsewhere})"

    def _deffield(self) -> None:
        """The fields of every definition of the project, with their validation rules."""
        if "deffield" in self.ctes:
            return
        if self.pg:
            b = "fb.b"
            cols = (f"{b} ->> 'type' AS ftype, "
                    f"COALESCE({b} -> 'is_required' = CAST('true' AS jsonb), FALSE) AS required, "
                    f"COALESCE({b} -> 'is_localized' = CAST('true' AS jsonb), FALSE) "
                    "AS localized, "
                    f"CASE WHEN jsonb_typeof({b} -> 'min') = 'number' THEN {b} -> 'min' END "
                    "AS fmin, "
                    f"CASE WHEN jsonb_typeof({b} -> 'max') = 'number' THEN {b} -> 'max' END "
                    "AS fmax, "
                    f"CASE WHEN jsonb_typeof({b} -> 'max_length') = 'number' "
                    f"THEN CAST({b} ->> 'max_length' AS numeric) END AS maxlen")
            body = ", LATERAL (SELECT CAST(f.body AS jsonb) AS b) fb"
        else:
            def num(key: str) -> str:
                return (f"CASE WHEN json_type(f.body, '$.{key}') IN ('integer', 'real') "
                        f"THEN json_extract(f.body, '$.{key}') END")
            cols = ("json_extract(f.body, '$.type') AS ftype, "
                    "COALESCE(json_type(f.body, '$.is_required') = 'true', 0) AS required, "
                    "COALESCE(json_type(f.body, '$.is_localized') = 'true', 0) AS localized, "
                    f"{num('min')} AS fmin, {num('max')} AS fmax, {num('max_length')} AS maxlen")
            body = ""
        self.ctes["deffield"] = (
            f"SELECT d.gid AS definition, f.name AS name, {cols} "
            f"FROM schema_item d, {self._elements('d.classes', 'dc')}, schema_item c, "
            f"{self._elements('c.fields', 'cf')}, schema_item f{body} "
            f"WHERE d.project_gid = {self.proj} AND d.type = 'definition' "
            "AND NOT d.is_working_copy "
            f"AND c.gid = dc.value AND c.project_gid = {self.proj} AND c.type = 'class' "
            "AND NOT c.is_working_copy "
            f"AND f.gid = cf.value AND f.project_gid = {self.proj} AND f.type = 'field' "
            "AND NOT f.is_working_copy"
        )

    # -- schema items -------------------------------------------------------------------

    def _committed(self, node: Committed) -> str:
        return "NOT s.is_new AND NOT s.is_working_copy"

    def _extended(self, node: Extended) -> str:
        return "s.is_extended"

    def _typeis(self, node: TypeIs) -> str:
        return f"s.type = {self.p(node.type)}"

    def _textis(self, node: TextIs) -> str:
        column = "s.name" if node.prop == "name" else self.label()
        lower = "lower" if self.pg else "bj_lower"
        return f"{lower}({column}) = {self.p(node.text.lower())}"

    def _textquery(self, node: TextQuery) -> str:
        return self.text_query(node.query, ["s.name" if node.prop == "name" else self.label()])

    def label(self) -> str:
        """A schema item's label in the search language (NULL when it has none)."""
        if self.pg:
            return (f"CASE WHEN jsonb_typeof(CAST(s.label AS jsonb) -> {self.lang}) = 'string' "
                    f"THEN CAST(s.label AS jsonb) ->> {self.lang} END")
        return (f"CASE WHEN json_type(s.label, {self.lang_path}) = 'text' "
                f"THEN json_extract(s.label, {self.lang_path}) END")

    def text_query(self, query: Query, texts: list[str]) -> str:
        """``q`` semantics over a few texts (a term is present when any text holds it)."""
        def has(term: Term) -> str:
            return "(" + " OR ".join(self.text_has(t, term) for t in texts) + ")"
        parts = [has(t) for t in query.must] + [f"NOT {has(t)}" for t in query.must_not]
        if not query.must and query.should:
            parts.append("(" + " OR ".join(has(t) for t in query.should) + ")")
        return " AND ".join(parts) or "1 = 1"

    def text_has(self, expr: str, term: Term) -> str:
        """True when the text ``expr`` holds ``term`` (never NULL)."""
        if self.pg:
            # Words are letters and digits only, so they are safe inside the pattern.
            pattern = self.p(" " + "[[:alnum:]]* ".join(term.words))
            return (f"((' ' || regexp_replace(lower(COALESCE({expr}, '')), "
                    f"'[^[:alnum:]]+', ' ', 'g')) ~ {pattern})")
        return f"bj_words_match({expr}, {self.p(json.dumps(list(term.words)))})"

    # -- helpers ------------------------------------------------------------------------

    def _elements(self, column: str, alias: str) -> str:
        """The string items of a JSON list column as rows ``<alias>.value``."""
        if self.pg:
            return (f"jsonb_array_elements_text(CASE WHEN jsonb_typeof(CAST({column} AS jsonb)) "
                    f"= 'array' THEN CAST({column} AS jsonb) ELSE CAST('[]' AS jsonb) END) "
                    f"AS {alias}(value)")
        return f"json_each({column}) AS {alias}"

    def _field_name(self, ref: str) -> str:
        """A field gid of the project stands for that field's name; anything else is a name."""
        if ref not in self._field_names:
            name = self.conn.execute(text(
                "SELECT name FROM schema_item WHERE gid = :g AND project_gid = :p "
                "AND type = 'field'"
            ), {"g": ref, "p": self.project_gid}).scalar()
            self._field_names[ref] = name if isinstance(name, str) and '"' not in name else ref
        return self._field_names[ref]


def _sqlite_empty(t: str, v: str) -> str:
    return (f"({t} IS NULL OR {t} = 'null' OR ({t} = 'text' AND {v} = '') "
            f"OR ({t} IN ('array', 'object') AND {v} IN ('[]', '{{}}')))")


def _pg_empty(j: str) -> str:
    return (f"COALESCE({j} IN (CAST('null' AS jsonb), CAST('\"\"' AS jsonb), "
            f"CAST('[]' AS jsonb), CAST('{{}}' AS jsonb)), TRUE)")


def _pg_object(j: str) -> str:
    return f"CASE WHEN jsonb_typeof({j}) = 'object' THEN {j} ELSE CAST('{{}}' AS jsonb) END"
