"""The search index: what ``q`` terms are matched against, kept in step with ``record``.

Choice: the database's own full-text index, one entry per record and language of its
project, with two texts — the title in that language, and the record's text field values in
that language (the string values of the object ``fields[lang]``, joined by spaces).

* **SQLite: FTS5** — ``record_fts(title, body)``, tokenizer ``unicode61 remove_diacritics 0``
  (words are runs of letters and digits, case-folded, accents kept).  The rowid packs the
  record id and a language slot: ``rowid = (record_id << 10) | slot``; ``search_language``
  hands out the slots (1 … 1023).  A language filter is then arithmetic on the rowid FTS5
  returns anyway — no lookup per hit — and a record's entries are one rowid range.
* **PostgreSQL: tsvector + GIN** — ``record_search(record_id, lang, title, body)`` with the
  ``simple`` configuration (no stemming, no stop words: prefix matching stays literal) and a
  GIN index per text column.  Text is first cut into letter/digit words with
  ``regexp_replace`` so PostgreSQL's parser does not keep e-mail addresses, host names or
  ``1.5`` as single tokens: both databases then see the same words.

Why not an inverted term table of our own: a million records of a dozen words is tens of
millions of rows, slower to write and to range-scan than the engines' compressed posting
lists, and phrase matching would need positions we would have to store and join ourselves.
Both engines answer a prefix term (``lighthouse*``, ``lighthouse:*``) and an ordered phrase
of prefix words from the index alone.

Keeping it in step: :func:`reindex` (or :func:`reindex_range`) recomputes the entries of the
given records from the ``record`` table — delete, then ``INSERT … SELECT`` — so a record that
no longer exists loses its entries.  Callers that write titles or fields (record create and
update, version restore, permanent delete) call it in the same transaction.  Status changes
(delete, undelete) need no reindex: status is read from ``record`` at search time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Connection, text

from models import dialect
from models.dialect import is_pg
from models.search.query import Term

SLOT_BITS = 10
SLOT_MASK = (1 << SLOT_BITS) - 1
CHUNK = 50_000

# PostgreSQL: cut text into letter/digit words, as SQLite's unicode61 tokenizer does.
_PG_WORDS = "regexp_replace({}, '[^[:alnum:]]+', ' ', 'g')"


# -- keeping the index in step ------------------------------------------------------------

def reindex(conn: Connection, record_ids: Iterable[int]) -> None:
    """Recompute the index entries of these records (set-based, in chunks of ids).

    Ids of records that no longer exist simply lose their entries."""
    ids = sorted({int(i) for i in record_ids})
    for start in range(0, len(ids), CHUNK):
        chunk = dialect.json_ids(ids[start:start + CHUNK])
        rows = dialect.id_rows(conn, "ids", "x")
        where = f"r.id IN (SELECT x.value FROM {rows})"
        if is_pg(conn):
            conn.execute(text(
                f"DELETE FROM record_search WHERE record_id IN (SELECT x.value FROM {rows})"
            ), {"ids": chunk})
            _pg_insert(conn, where, {"ids": chunk})
        else:
            _sqlite_register_languages(conn, where, {"ids": chunk})
            conn.execute(text(
                "DELETE FROM record_fts WHERE rowid IN ("
                f"SELECT (x.value << {SLOT_BITS}) | s.slot FROM {rows}, search_language s)"
            ), {"ids": chunk})
            _sqlite_insert(conn, where, {"ids": chunk})


def unindex(conn: Connection, record_ids: Iterable[int]) -> None:
    """Remove the index entries of these (removed) records, in chunks of ids: one lookup
    per entry, nothing re-read."""
    ids = sorted({int(i) for i in record_ids})
    for start in range(0, len(ids), CHUNK):
        chunk = dialect.json_ids(ids[start:start + CHUNK])
        rows = dialect.id_rows(conn, "ids", "x")
        if is_pg(conn):
            conn.execute(text(
                f"DELETE FROM record_search WHERE record_id IN (SELECT x.value FROM {rows})"
            ), {"ids": chunk})
        else:
            conn.execute(text(
                "DELETE FROM record_fts WHERE rowid IN ("
                f"SELECT (x.value << {SLOT_BITS}) | s.slot FROM {rows}, search_language s)"
            ), {"ids": chunk})


def reindex_range(conn: Connection, first_id: int, last_id: int) -> None:
    """Recompute the index entries of every record with ``first_id <= id <= last_id``.

    The seeder calls this once per chunk of fresh rows; one range statement is cheaper than a
    list of ids."""
    params = {"lo": int(first_id), "hi": int(last_id)}
    where = "r.id BETWEEN :lo AND :hi"
    if is_pg(conn):
        conn.execute(text("DELETE FROM record_search WHERE record_id BETWEEN :lo AND :hi"),
                     params)
        _pg_insert(conn, where, params)
        return
    _sqlite_register_languages(conn, where, params)
    conn.execute(text(
        f"DELETE FROM record_fts WHERE rowid BETWEEN (:lo << {SLOT_BITS}) "
        f"AND ((:hi << {SLOT_BITS}) | {SLOT_MASK})"
    ), params)
    _sqlite_insert(conn, where, params)


def rebuild(conn: Connection) -> None:
    """Index every record from scratch (used by the migration that creates the index)."""
    clear(conn)
    bounds = conn.execute(text("SELECT MIN(id), MAX(id) FROM record")).first()
    if bounds is None or bounds[0] is None:
        return
    for lo in range(bounds[0], bounds[1] + 1, CHUNK):
        reindex_range(conn, lo, min(lo + CHUNK - 1, bounds[1]))


def clear(conn: Connection) -> None:
    """Drop every index entry (language slots are kept: they are only names)."""
    conn.execute(text("DELETE FROM record_search" if is_pg(conn) else "DELETE FROM record_fts"))


def _sqlite_register_languages(conn: Connection, where: str, params: Mapping[str, object]) -> None:
    # Every language of the records' projects gets a slot.  A code with a double quote
    # cannot be written as a JSON path label and is not indexed.
    conn.execute(text(
        "INSERT INTO search_language (code) "
        "SELECT DISTINCT l.value FROM project p, json_each(p.languages) l "
        f"WHERE p.gid IN (SELECT r.project_gid FROM record r WHERE {where}) "
        "AND l.type = 'text' AND instr(l.value, '\"') = 0 "
        "ON CONFLICT (code) DO NOTHING"
    ), params)


def _sqlite_insert(conn: Connection, where: str, params: Mapping[str, object]) -> None:
    path = "('$.\"' || s.code || '\"')"
    conn.execute(text(
        "INSERT INTO record_fts (rowid, title, body) "
        f"SELECT (r.id << {SLOT_BITS}) | s.slot, "
        f"COALESCE(json_extract(r.title, {path}), ''), "
        # typeof(key) = 'text': the members of an object, not the items of a list.
        "COALESCE((SELECT group_concat(f.value, ' ') "
        f"FROM json_each(r.fields, {path}) f "
        "WHERE f.type = 'text' AND typeof(f.key) = 'text'), '') "
        "FROM record r JOIN project p ON p.gid = r.project_gid, json_each(p.languages) l "
        f"JOIN search_language s ON s.code = l.value WHERE {where}"
    ), params)


def _pg_insert(conn: Connection, where: str, params: Mapping[str, object]) -> None:
    title = "COALESCE(x.t ->> l.lang, '')"
    body = ("COALESCE((SELECT string_agg(e.value #>> '{}', ' ') FROM jsonb_each("
            "CASE WHEN jsonb_typeof(x.f -> l.lang) = 'object' THEN x.f -> l.lang "
            "ELSE CAST('{}' AS jsonb) END) AS e WHERE jsonb_typeof(e.value) = 'string'), '')")
    conn.execute(text(
        "INSERT INTO record_search (record_id, lang, title, body) "
        "SELECT r.id, l.lang, "
        f"to_tsvector('simple', {_PG_WORDS.format(title)}), "
        f"to_tsvector('simple', {_PG_WORDS.format(body)}) "
        "FROM record r JOIN project p ON p.gid = r.project_gid "
        "CROSS JOIN LATERAL (SELECT CAST(r.title AS jsonb) AS t, CAST(r.fields AS jsonb) AS f) x "
        "CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof("
        "CAST(p.languages AS jsonb)) = 'array' THEN CAST(p.languages AS jsonb) "
        "ELSE CAST('[]' AS jsonb) END) AS l(lang) "
        f"WHERE {where}"
    ), params)


# -- matching -----------------------------------------------------------------------------

class TextMatch:
    """SQL that finds records by ``q`` terms in one language, through the index.

    Each method returns SQL text and adds its parameters to ``params`` (names are unique per
    instance, so several instances may share one dict).  Record ids come out as ``id``."""

    def __init__(self, conn: Connection, language: str, params: dict[str, object],
                 prefix: str = "tm") -> None:
        self.pg = is_pg(conn)
        self.params = params
        self.prefix = prefix
        self.count = 0
        self.lang = self._param(language)
        self.slot: int | None = None
        if not self.pg:
            # Resolved once here, so the FTS queries below carry a constant: an unknown
            # language has no entries, and its terms match nothing.
            self.slot = conn.execute(
                text("SELECT slot FROM search_language WHERE code = :c"), {"c": language}
            ).scalar()

    def _param(self, value: object) -> str:
        self.count += 1
        name = f"{self.prefix}{self.count}"
        self.params[name] = value
        return f":{name}"

    def term_hits(self, term: Term) -> str:
        """``SELECT id, ti …``: the records with this term; ``ti`` is 1 when their title has
        it, else 0."""
        if self.pg:
            # One index scan: the title test runs on the row the scan fetched anyway.
            query = self._param(_tsquery(term))
            return (f"SELECT record_id AS id, CASE WHEN title @@ to_tsquery('simple', {query}) "
                    "THEN 1 ELSE 0 END AS ti FROM record_search "
                    f"WHERE lang = {self.lang} AND (title @@ to_tsquery('simple', {query}) "
                    f"OR body @@ to_tsquery('simple', {query}))")
        # FTS5 does not say which column matched: a second, title-only match, whose (few) ids
        # SQLite keeps in an ephemeral index for the IN test.
        return (f"SELECT a.id, a.id IN ({self.hits_any((term,), title_only=True)}) AS ti "
                f"FROM ({self.hits_any((term,))}) AS a")

    def hits_any(self, terms: Sequence[Term], *, title_only: bool = False) -> str:
        """``SELECT id …``: the records with at least one of these terms."""
        if self.pg:
            query = self._param(" | ".join(f"({_tsquery(t)})" for t in terms))
            cond = f"title @@ to_tsquery('simple', {query})"
            if not title_only:
                cond = f"({cond} OR body @@ to_tsquery('simple', {query}))"
            return f"SELECT record_id AS id FROM record_search WHERE lang = {self.lang} AND {cond}"
        if self.slot is None:
            return "SELECT 0 AS id WHERE 1 = 0"
        match = " OR ".join(f"({_fts(t)})" for t in terms)
        if title_only:
            match = f"title : ({match})"
        return (f"SELECT rowid >> {SLOT_BITS} AS id FROM record_fts "
                f"WHERE record_fts MATCH {self._param(match)} "
                f"AND (rowid & {SLOT_MASK}) = {int(self.slot)}")

    def excludes(self, id_expr: str, terms: Sequence[Term]) -> str:
        """A predicate that is true when the record ``id_expr`` has none of these terms."""
        if self.pg:
            # An anti-join: PostgreSQL's NOT IN over a large subquery can fall back to a
            # nested scan once the hash does not fit in work_mem.
            query = self._param(" | ".join(f"({_tsquery(t)})" for t in terms))
            return (f"NOT EXISTS (SELECT 1 FROM record_search x WHERE x.record_id = {id_expr} "
                    f"AND x.lang = {self.lang} AND (x.title @@ to_tsquery('simple', {query}) "
                    f"OR x.body @@ to_tsquery('simple', {query})))")
        # SQLite builds the NOT IN list once, as an ephemeral index.
        return f"{id_expr} NOT IN ({self.hits_any(terms)})"


def _fts(term: Term) -> str:
    """An FTS5 phrase of prefix tokens: ``"garden"* + "riv"*``."""
    return " + ".join('"' + w.replace('"', '""') + '"*' for w in term.words)


def _tsquery(term: Term) -> str:
    """A tsquery phrase of prefix lexemes: ``garden:* <-> riv:*``.  Words are letters and
    digits only (see :func:`models.search.query.words`), so they need no quoting."""
    return " <-> ".join(f"{w}:*" for w in term.words)
