"""The search ``q`` (SPEC §4.1): a pure function from text to a typed :class:`Query`.

Grammar, as a user types it::

    q     := term (whitespace term)*
    term  := [+|-] word-ish          a bare run of non-space characters
           | [+|-] '"' phrase '"'    words in sequence; the closing quote ends the term

* Matching is case-insensitive and by prefix: a record matches a word when one of its own
  words starts with it.  "Words" are runs of Unicode letters and digits — exactly what the
  search index keeps (:mod:`models.search.index`), so a term and the indexed text are cut the
  same way.  A bare term that holds several words (``foo-bar``) is a phrase, as if quoted.
* ``+term`` must be present, ``-term`` must be absent, a bare term is optional.  With at least
  one ``+`` term the results are the records with every ``+`` term and no ``-`` term (bare
  terms only rank); otherwise the records with at least one bare term and no ``-`` term.  So a
  query of ``-`` terms only finds nothing; an empty ``q`` is the same as no ``q`` (and a
  search with neither ``q`` nor ``filter`` finds nothing, see :mod:`models.search.sql`).
* A phrase matches its words in sequence, each word by prefix (``"garden riv"`` matches
  "Garden river"), inside one text: the title, or the text field values.
* Repeated terms count once.

:func:`parse_q` never touches a database.  Malformed input — an unbalanced quote, a sign or a
quoted phrase with nothing to search for, a ``q`` longer than :data:`MAX_Q_LENGTH` characters
or with more than :data:`MAX_TERMS` terms — raises :class:`~bulkjobs.errors.SelectionError`.
A bare term of punctuation only (``&`` in ``rock & roll``) carries nothing to search for and
is skipped, unless nothing else is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bulkjobs.errors import SelectionError

MAX_Q_LENGTH = 1000
MAX_TERMS = 64
MAX_WORDS = 128

Occur = Literal["must", "must_not", "should"]

# Letters and digits of any script; underscore and everything else separate words.  SQLite's
# unicode61 tokenizer (remove_diacritics 0) and the PostgreSQL normalisation in
# ``models/search/index.py`` cut text the same way.
_WORD = re.compile(r"[^\W_]+")
_SIGNS = {"+": "must", "-": "must_not"}


@dataclass(frozen=True, slots=True)
class Term:
    """One term: lower-case words (more than one: a phrase) and how it must occur."""

    occur: Occur
    words: tuple[str, ...]

    @property
    def is_phrase(self) -> bool:
        return len(self.words) > 1


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed ``q``.  ``terms`` keep their order of first appearance."""

    terms: tuple[Term, ...] = ()

    @property
    def must(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.occur == "must")

    @property
    def must_not(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.occur == "must_not")

    @property
    def should(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.occur == "should")

    @property
    def positive(self) -> tuple[Term, ...]:
        """The terms that rank: ``must`` terms first, then ``should`` terms."""
        return self.must + self.should

    def __bool__(self) -> bool:
        return bool(self.terms)


def words(text: str) -> list[str]:
    """The lower-case words of ``text``, as the search index cuts them."""
    return _WORD.findall(text.lower())


def parse_q(q: str | None) -> Query:
    """Parse ``q`` or raise :class:`SelectionError`; ``None`` and blank text give ``Query()``."""
    if q is None:
        return Query()
    if not isinstance(q, str):
        raise SelectionError("'q' must be a string")
    if len(q) > MAX_Q_LENGTH:
        raise SelectionError(f"'q' is longer than {MAX_Q_LENGTH} characters")
    terms: list[Term] = []
    skipped = False
    for sign, raw, quoted in _scan(q):
        found = tuple(words(raw))
        shown = f'{sign}"{raw}"' if quoted else f"{sign}{raw}"
        if not found:
            if sign or quoted:
                raise SelectionError(f"term {shown!r} has no letters or digits to search for")
            skipped = True
            continue
        term = Term(_SIGNS.get(sign, "should"), found)  # type: ignore[arg-type]
        if term not in terms:
            terms.append(term)
        if len(terms) > MAX_TERMS:
            raise SelectionError(f"'q' has more than {MAX_TERMS} terms")
    if skipped and not terms:
        raise SelectionError("'q' has no letters or digits to search for")
    if sum(len(t.words) for t in terms) > MAX_WORDS:
        raise SelectionError(f"'q' has more than {MAX_WORDS} words")
    return Query(tuple(terms))


def _scan(q: str) -> list[tuple[str, str, bool]]:
    """Split ``q`` into ``(sign, text, quoted)`` triples; raises on quote and sign errors."""
    out: list[tuple[str, str, bool]] = []
    i, n = 0, len(q)
    while i < n:
        if q[i].isspace():
            i += 1
            continue
        sign = ""
        if q[i] in _SIGNS:
            sign = q[i]
            i += 1
            if i == n or q[i].isspace():
                raise SelectionError(f"empty term after {sign!r} in 'q'")
        if q[i] == '"':
            end = q.find('"', i + 1)
            if end < 0:
                raise SelectionError("unbalanced quote in 'q'")
            if end + 1 < n and not q[end + 1].isspace():
                raise SelectionError("a closing quote in 'q' must be followed by white space")
            out.append((sign, q[i + 1:end], True))
            i = end + 1
            continue
        j = i
        while j < n and not q[j].isspace():
            j += 1
        raw = q[i:j]
        if '"' in raw:
            # A quote inside a term is almost always a typo for a phrase; say so rather than
            # guess where the phrase was meant to start.
            raise SelectionError("a quote in 'q' may only open a term (unbalanced quote?)")
        out.append((sign, raw, False))
        i = j
    return out
