"""The search ``q`` parser (``models/search/query.py``): a pure function, tested without
services."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkjobs.errors import SelectionError
from models.search.query import MAX_Q_LENGTH, MAX_TERMS, Query, Term, parse_q, words
from tests.models.adversarial import SQL_FRAGMENTS, WEIRD_TEXT, nasty_text


def T(occur: str, *ws: str) -> Term:  # noqa: N802 - reads like a constructor in the tables
    return Term(occur, ws)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("q", "terms"),
    [
        pytest.param(None, (), id="none-is-no-query"),
        pytest.param("", (), id="empty"),
        pytest.param("   \t\n ", (), id="blank"),
        pytest.param("apple", (T("should", "apple"),), id="bare"),
        pytest.param("Apple GARDEN", (T("should", "apple"), T("should", "garden")),
                     id="case-folded"),
        pytest.param("+apple", (T("must", "apple"),), id="must"),
        pytest.param("-apple", (T("must_not", "apple"),), id="must-not"),
        pytest.param("+cms 225", (T("must", "cms"), T("should", "225")), id="unicat-example"),
        pytest.param('"apple garden"', (T("should", "apple", "garden"),), id="phrase"),
        pytest.param('+"apple  garden"', (T("must", "apple", "garden"),), id="must-phrase"),
        pytest.param('-"apple garden" x', (T("must_not", "apple", "garden"), T("should", "x")),
                     id="must-not-phrase"),
        pytest.param('"one"', (T("should", "one"),), id="one-word-phrase-is-a-word"),
        pytest.param("foo-bar", (T("should", "foo", "bar"),), id="joined-words-are-a-phrase"),
        pytest.param("foo_bar", (T("should", "foo", "bar"),), id="underscore-separates"),
        pytest.param("x@y.com 1.5", (T("should", "x", "y", "com"), T("should", "1", "5")),
                     id="punctuation-separates"),
        pytest.param("++apple", (T("must", "apple"),), id="second-sign-is-punctuation"),
        pytest.param("+-apple", (T("must", "apple"),), id="sign-then-minus"),
        pytest.param("apple apple +apple", (T("should", "apple"), T("must", "apple")),
                     id="repeats-count-once"),
        pytest.param("rock & roll", (T("should", "rock"), T("should", "roll")),
                     id="punctuation-only-bare-term-skipped"),
        pytest.param("Überschrift CAFÉ", (T("should", "überschrift"), T("should", "café")),
                     id="unicode-case-folded-accents-kept"),
        pytest.param("日本語 테스트", (T("should", "日本語"), T("should", "테스트")),
                     id="other-scripts"),
        pytest.param("'; DROP TABLE record; /*",
                     (T("should", "drop"), T("should", "table"), T("should", "record")),
                     id="sql-ish-text-is-just-words"),
    ],
)
def test_accepted(q: str | None, terms: tuple[Term, ...]) -> None:
    """Each accepted form parses to its terms, in order of first appearance."""
    assert parse_q(q) == Query(terms)


@pytest.mark.parametrize(
    ("q", "reason"),
    [
        pytest.param('"apple', "unbalanced quote", id="unclosed-phrase"),
        pytest.param('apple "garden', "unbalanced quote", id="unclosed-later"),
        pytest.param('ap"ple', "may only open a term", id="quote-inside-term"),
        pytest.param('"apple"x', "followed by white space", id="text-glued-to-phrase"),
        pytest.param("+", "empty term after '+'", id="lone-plus"),
        pytest.param("-", "empty term after '-'", id="lone-minus"),
        pytest.param("apple + garden", "empty term after '+'", id="plus-then-space"),
        pytest.param("+!!", "no letters or digits", id="sign-with-punctuation-only"),
        pytest.param('""', "no letters or digits", id="empty-phrase"),
        pytest.param('-" . "', "no letters or digits", id="punctuation-phrase"),
        pytest.param("&& ||", "no letters or digits", id="only-punctuation"),
        pytest.param("apple --", "no letters or digits", id="sql-comment-is-a-signed-nothing"),
        pytest.param("a" * (MAX_Q_LENGTH + 1), "longer than", id="too-long"),
        pytest.param(" ".join(f"w{i}" for i in range(MAX_TERMS + 1)), "more than 64 terms",
                     id="too-many-terms"),
        pytest.param(" ".join('"' + " ".join("ab" for _ in range(10)) + f' x{i}"'
                              for i in range(12)), "more than 128 words", id="too-many-words"),
    ],
)
def test_rejected(q: str, reason: str) -> None:
    """Each malformed q raises SelectionError (code 1006) with a reason saying why."""
    with pytest.raises(SelectionError) as err:
        parse_q(q)
    assert reason in err.value.reason and err.value.code == 1006


def test_q_not_a_string_rejected() -> None:
    """A q that is not a string (called directly, past the selection parser) is rejected."""
    with pytest.raises(SelectionError, match="must be a string"):
        parse_q(3)  # type: ignore[arg-type]


def test_limits_accepted() -> None:
    """Exactly MAX_Q_LENGTH characters and exactly MAX_TERMS terms are still accepted."""
    assert len(parse_q("a" * MAX_Q_LENGTH).terms) == 1
    assert len(parse_q(" ".join(f"w{i}" for i in range(MAX_TERMS))).terms) == MAX_TERMS


def test_query_views() -> None:
    """must / must_not / should / positive split the terms; positive puts must first."""
    query = parse_q("a +b -c d +e")
    assert [t.words for t in query.must] == [("b",), ("e",)]
    assert [t.words for t in query.must_not] == [("c",)]
    assert [t.words for t in query.should] == [("a",), ("d",)]
    assert [t.words for t in query.positive] == [("b",), ("e",), ("a",), ("d",)]
    assert bool(query) and not parse_q("")
    assert parse_q('"a b"').terms[0].is_phrase and not parse_q("a").terms[0].is_phrase


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Apple garden 12", ["apple", "garden", "12"]),
        ("foo_bar-baz", ["foo", "bar", "baz"]),
        ("  ", []),
        ("Ωmega ÄÖÜ", ["ωmega", "äöü"]),
        ("a1b2 ³", ["a1b2", "³"]),
    ],
)
def test_words(value: str, expected: list[str]) -> None:
    """words() cuts text into lower-case runs of letters and digits, like the index does."""
    assert words(value) == expected


_WORD = re.compile(r"[^\W_]+")
q_alphabet = st.sampled_from(list('ab +-"\' \t_.é日\x00;%*:()^') + ["AND", "OR", "NEAR", "\\"])


def _check(q: str) -> None:
    try:
        query = parse_q(q)
    except SelectionError as err:
        assert err.code == 1006 and err.reason
        return
    assert isinstance(query, Query) and len(query.terms) <= MAX_TERMS
    assert len(set(query.terms)) == len(query.terms)
    for term in query.terms:
        assert term.occur in ("must", "must_not", "should") and term.words
        assert all(_WORD.fullmatch(w) and w == w.lower() for w in term.words)


@settings(max_examples=500, deadline=None)
@given(q=st.text(max_size=200))
def test_arbitrary_text_only_clean_errors(q: str) -> None:
    """On any text parse_q returns a Query of clean lower-case words or raises SelectionError."""
    _check(q)


@settings(max_examples=500, deadline=None)
@given(q=st.lists(q_alphabet, max_size=40).map("".join))
def test_syntax_heavy_text_only_clean_errors(q: str) -> None:
    """Text dense in signs, quotes and FTS operators parses cleanly or raises SelectionError."""
    _check(q)


@settings(max_examples=500, deadline=None)
@given(q=nasty_text)
def test_hostile_text_only_clean_errors(q: str) -> None:
    """SQL/FTS fragments, NUL, lone surrogates, bidi and combining marks parse or give 1006."""
    _check(q)


@settings(max_examples=100, deadline=None)
@given(q=st.text(st.characters(codec=None, exclude_categories=()),
                 min_size=MAX_Q_LENGTH - 50, max_size=MAX_Q_LENGTH + 50))
def test_text_near_the_length_limit_only_clean_errors(q: str) -> None:
    """Long text of any code points, just under and over the limit, parses or gives 1006."""
    _check(q)


@pytest.mark.parametrize("fragment", SQL_FRAGMENTS + WEIRD_TEXT)
def test_hostile_fragment_keeps_only_words(fragment: str) -> None:
    """Whatever a fragment holds, only its letters and digits ever become search words."""
    _check(fragment)
    _check(f"+apple {fragment} -pear")
