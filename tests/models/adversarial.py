"""Hypothesis strategies for hostile input, shared by the parser fuzz tests.

What an attacker (or a broken client) puts in a JSON body: SQL and FTS fragments, strings that
trip up JSON paths and tokenizers (quotes, backslashes, NUL, lone surrogates, bidi overrides,
combining marks, non-ASCII white space), numbers at and past every limit (NaN, ±inf, 2**53 + 1,
10**400, -0.0, the smallest subnormal), and nesting far deeper than any limit.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

#: Fragments that would do harm if they ever reached SQL, a JSON path or an FTS MATCH
#: expression as text rather than as a bound value.
SQL_FRAGMENTS = [
    "'; DROP TABLE record; --",
    "\" OR 1=1 --",
    "' OR '1'='1",
    "%' OR 1=1 --",
    "1; DELETE FROM job",
    "' UNION SELECT password_hash, gid FROM \"user\" --",
    "*/ SELECT 1 /*",
    "$.en\") OR json_extract(fields, '$') --",
    "$[0]",
    "a.b[0].c",
    "NEAR(apple garden, 2)",
    "title:apple",
    "{title body}: apple",
    "apple*",
    "^apple",
    "'; SELECT pg_sleep(10); --",
    "\\",
    "\\\"",
    "%",
    "_",
]

#: Strings that are hard on encoders, tokenizers and normalisers.
WEIRD_TEXT = [
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "\u202eevil", "\u200b", "\ufeff",
    "e\u0301", "İ", "ß", "ﬃ", "Ω" * 70, "👩‍👩‍👧", "\u2028", "\u00a0\u3000", "＋apple",
    "ｰapple", "\t\n\r\x0b\x0c", "\U0010ffff",
]


def _repeat(text: str) -> st.SearchStrategy[str]:
    return st.integers(min_value=60, max_value=1200).map(lambda n: (text * n)[:n])


#: Strings around the length limits (64-character keys, 1,000-character texts).
long_text = st.sampled_from(["x", "日本語", "Ω", "'; DROP TABLE record; --"]).flatmap(_repeat)

nasty_text = st.one_of(
    st.sampled_from(SQL_FRAGMENTS + WEIRD_TEXT),
    long_text,
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    st.lists(st.sampled_from(SQL_FRAGMENTS + WEIRD_TEXT + ["apple", "+", "-", '"', " "]),
             max_size=8).map(" ".join),
)

#: Numbers at and past every limit a parser might check.
EDGE_NUMBERS: list[int | float] = [
    math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0, -1, 2**31, 2**53,
    2**53 + 1, -(2**53) - 1, 2**63, 2**64, 10**400, -(10**400),
]

nasty_numbers = st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(), st.floats())

nasty_scalars = st.one_of(st.none(), st.booleans(), nasty_numbers, nasty_text)

nasty_json = st.recursive(
    nasty_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=20,
)

WRAPPERS = ("list", "dict", "not", "and", "or")


def wrap(leaf: Any, depth: int, kind: str) -> Any:
    """``leaf`` nested ``depth`` times, iteratively (no recursion while building)."""
    node = leaf
    for _ in range(depth):
        if kind == "list":
            node = [node]
        elif kind == "dict":
            node = {"search": node}
        elif kind == "not":
            node = ["not", "", node]
        else:
            node = [kind, "", [node]]
    return node


@st.composite
def deep(draw: st.DrawFn, max_depth: int = 5000) -> Any:
    """A value nested far deeper than any limit (up to ``max_depth`` levels)."""
    depth = draw(st.integers(min_value=30, max_value=max_depth))
    return wrap(draw(nasty_scalars), depth, draw(st.sampled_from(WRAPPERS)))
