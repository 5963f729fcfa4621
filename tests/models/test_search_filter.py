"""The search ``filter`` parser (``models/search/filter.py``): a pure function, tested without
services."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkjobs.errors import SelectionError
from models.search.filter import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_TEXT,
    Age,
    AncestorIs,
    And,
    Between,
    Committed,
    DefinitionIs,
    Extended,
    HasChannel,
    HasClass,
    Not,
    Or,
    ParentIs,
    StatusIs,
    TextIs,
    TextQuery,
    TypeIs,
    Validation,
    ValueCond,
    has_status,
    parse_filter,
    storable,
)
from models.search.query import Query, Term
from models.selection import Search, parse_search, parse_selection
from tests.models.adversarial import deep, nasty_json, nasty_numbers, nasty_text

G = "0f8e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
S = ["status", "is", "draft"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="null-is-no-filter"),
        pytest.param(["classes", "has", "article"], HasClass("article"), id="classes-has-name"),
        pytest.param(["classes", "has", G], HasClass(G), id="classes-has-gid"),
        pytest.param(["classes", "has_not", "article"], Not(HasClass("article")),
                     id="classes-has-not"),
        pytest.param(["definition", "is", G], DefinitionIs(G), id="definition-is"),
        pytest.param(["definition", "is_not", G], Not(DefinitionIs(G)), id="definition-is-not"),
        pytest.param(["channel", "has", "web"], HasChannel("web"), id="channel-has"),
        pytest.param(["channel", "has_not", "__all__"], Not(HasChannel("__all__")),
                     id="channel-has-not"),
        pytest.param(["status", "is", "draft"], StatusIs("draft"), id="status-is"),
        pytest.param(["status", "is", "published"], StatusIs("published"), id="status-published"),
        pytest.param(["status", "is_not", "deleted"], Not(StatusIs("deleted")),
                     id="status-is-not"),
        pytest.param(["parent", "is", G], ParentIs(G), id="parent-is"),
        pytest.param(["ancestor", "is", G], AncestorIs(G), id="ancestor-is"),
        pytest.param(["value", "is", ["price", 10]], ValueCond("price", "is", 10), id="value-is"),
        pytest.param(["value", "is", [G, "x"]], ValueCond(G, "is", "x"), id="value-is-field-gid"),
        pytest.param(["value", "is", ["flag", True]], ValueCond("flag", "is", True),
                     id="value-is-bool"),
        pytest.param(["value", "is_not", ["price", 1.5]], Not(ValueCond("price", "is", 1.5)),
                     id="value-is-not"),
        pytest.param(["value", "has", ["body", "apple"]], ValueCond("body", "has", "apple"),
                     id="value-has"),
        pytest.param(["value", "<", ["price", -3]], ValueCond("price", "<", -3), id="value-lt"),
        pytest.param(["value", ">", ["date", "2024-01-01"]], ValueCond("date", ">", "2024-01-01"),
                     id="value-gt-string"),
        pytest.param(["value", "is_empty", ["body"]], ValueCond("body", "is_empty"),
                     id="value-is-empty"),
        pytest.param(["value", "is_empty", ["body", None]], ValueCond("body", "is_empty"),
                     id="value-is-empty-null-value"),
        pytest.param(["value", "is", ["body", "'; DROP TABLE record; --"]],
                     ValueCond("body", "is", "'; DROP TABLE record; --"), id="sql-ish-operand"),
        pytest.param(["value", "is", ["body", "x" * MAX_TEXT]],
                     ValueCond("body", "is", "x" * MAX_TEXT), id="operand-at-length-limit"),
        pytest.param(["value", ">", ["price", 2**53]], ValueCond("price", ">", 2**53),
                     id="int-at-range-limit"),
        pytest.param(["value", ">", ["price", 1e300]], ValueCond("price", ">", 1e300),
                     id="huge-finite-float"),
        pytest.param(["updated_on", "<", [7, "days"]], Age("updated_on", "<", 7.0),
                     id="updated-lt-days"),
        pytest.param(["created_on", ">", [0.5, "days"]], Age("created_on", ">", 0.5),
                     id="created-gt-days"),
        pytest.param(["updated_on", "between", [1.5, 2]], Between("updated_on", 1.5, 2.0),
                     id="updated-between"),
        pytest.param(["created_on", "between", [None, 2]], Between("created_on", None, 2.0),
                     id="created-between-open-start"),
        pytest.param(["validation", "any"], Validation("any"), id="validation-any"),
        pytest.param(["validation", "is_empty", None], Validation("is_empty"),
                     id="validation-is-empty"),
        pytest.param(["validation", "not_translated"], Validation("not_translated"),
                     id="validation-not-translated"),
        pytest.param(["and", "", [S, ["channel", "has", "web"]]],
                     And((StatusIs("draft"), HasChannel("web"))), id="and"),
        pytest.param(["or", "", [S]], Or((StatusIs("draft"),)), id="or"),
        pytest.param(["not", "", S], Not(StatusIs("draft")), id="not"),
        pytest.param(["and", "", []], And(()), id="empty-and"),
        pytest.param(["or", "", []], Or(()), id="empty-or"),
        pytest.param(["not", "", ["or", "", [["not", "", S]]]], Not(Or((Not(StatusIs("draft")),))),
                     id="nested"),
    ],
)
def test_records_accepted(value: Any, expected: Any) -> None:
    """Every records property/operator parses to its typed condition (negatives as Not)."""
    assert parse_filter(value, kind="records") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(["is_committed", "is_true"], Committed(), id="committed-true"),
        pytest.param(["is_committed", "is_false", None], Not(Committed()), id="committed-false"),
        pytest.param(["is_extended", "is_true", None], Extended(), id="extended-true"),
        pytest.param(["is_extended", "is_false"], Not(Extended()), id="extended-false"),
        pytest.param(["type", "is", "field"], TypeIs("field"), id="type-is"),
        pytest.param(["type", "is", "layout"], TypeIs("layout"), id="type-is-layout"),
        pytest.param(["name", "is", "Article"], TextIs("name", "Article"), id="name-is"),
        pytest.param(["label", "is", "Body text"], TextIs("label", "Body text"), id="label-is"),
        pytest.param(["name", "q", "+art -x"],
                     TextQuery("name", Query((Term("must", ("art",)),
                                              Term("must_not", ("x",))))), id="name-q"),
        pytest.param(["label", "q", '"body te"'],
                     TextQuery("label", Query((Term("should", ("body", "te")),))), id="label-q"),
        pytest.param(
            ["or", "", [["type", "is", "class"], ["not", "", ["is_committed", "is_true"]]]],
            Or((TypeIs("class"), Not(Committed()))), id="logic",
        ),
    ],
)
def test_schema_accepted(value: Any, expected: Any) -> None:
    """Every schema property/operator parses to its typed condition."""
    assert parse_filter(value, kind="schema") == expected


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        # shape
        pytest.param("status", "records", "must be a [property, operator, operands] list",
                     id="not-a-list"),
        pytest.param({"status": "draft"}, "records", "not an object", id="object"),
        pytest.param([], "records", "not 0 items", id="empty-list"),
        pytest.param(["status"], "records", "not 1 items", id="one-item"),
        pytest.param(["status", "is", "draft", "x"], "records", "not 4 items", id="four-items"),
        pytest.param([3, "is", "draft"], "records", "property must be a string", id="prop-number"),
        pytest.param(["status", None, "draft"], "records", "operator of 'status' must be a string",
                     id="op-null"),
        # unknown property / operator, named
        pytest.param(["colour", "is", "red"], "records", "unknown filter property 'colour'",
                     id="unknown-property"),
        pytest.param(["x" * 100, "is", "red"], "records", "unknown filter property 'xxxx",
                     id="unknown-long-property-cut-short"),
        pytest.param(["status", "equals", "draft"], "records",
                     "unknown operator 'equals' for filter property 'status'", id="unknown-op"),
        pytest.param(["parent", "is_not", G], "records", "unknown operator 'is_not'",
                     id="parent-is-not"),
        pytest.param(["ancestor", "has", G], "records", "unknown operator 'has'",
                     id="ancestor-has"),
        pytest.param(["updated_on", "=", [1, "days"]], "records", "unknown operator '='",
                     id="updated-eq"),
        pytest.param(["validation", "is"], "records", "unknown operator 'is'",
                     id="validation-is"),
        pytest.param(["is_committed", "is_true"], "records", "unknown filter property "
                     "'is_committed' for records", id="schema-prop-on-records"),
        pytest.param(["status", "is", "draft"], "schema", "unknown filter property 'status' for "
                     "schema items", id="records-prop-on-schema"),
        pytest.param(["type", "has", "field"], "schema", "unknown operator 'has'", id="type-has"),
        pytest.param(["name", "has", "x"], "schema", "unknown operator 'has'", id="name-has"),
        # logic
        pytest.param(["and", "x", [S]], "records", "takes the empty operator", id="and-op"),
        pytest.param(["and", "", S[0]], "records", "needs a list of filters", id="and-not-list"),
        pytest.param(["or", ""], "records", "needs a list of filters", id="or-no-operand"),
        pytest.param(["not", ""], "records", "needs a filter", id="not-no-operand"),
        pytest.param(["not", "", "status"], "records", "must be a [property", id="not-string"),
        pytest.param(["and", "", [S, ["bogus", "is", 1]]], "records", "'bogus'",
                     id="bad-inside-and"),
        # operands
        pytest.param(["classes", "has", ""], "records", "class name or gid string",
                     id="classes-empty"),
        pytest.param(["classes", "has", 3], "records", "class name or gid string",
                     id="classes-number"),
        pytest.param(["definition", "is", "x" * 65], "records", "gid string", id="gid-too-long"),
        pytest.param(["definition", "is"], "records", "gid string", id="gid-absent"),
        pytest.param(["channel", "has", None], "records", "channel key string",
                     id="channel-null"),
        pytest.param(["status", "is", "archived"], "records", "one of draft, published, deleted",
                     id="status-unknown"),
        pytest.param(["parent", "is", ["x"]], "records", "gid string", id="parent-list"),
        pytest.param(["value", "is", "price"], "records", "[field name or gid, value]",
                     id="value-not-pair"),
        pytest.param(["value", "is", ["price"]], "records", "[field name or gid, value]",
                     id="value-one-item"),
        pytest.param(["value", "is", ["price", None]], "records", "use is_empty",
                     id="value-null"),
        pytest.param(["value", "is", ["price", [1]]], "records", "string or a number",
                     id="value-list"),
        pytest.param(["value", "<", ["price", True]], "records", "string or a number",
                     id="lt-bool"),
        pytest.param(["value", "is", ["price", math.nan]], "records", "finite", id="value-nan"),
        pytest.param(["value", ">", ["price", math.inf]], "records", "finite", id="value-inf"),
        pytest.param(["value", "is", ["price", 2**53 + 1]], "records", "out of range",
                     id="value-huge-int"),
        pytest.param(["value", "is", ["price", "x" * (MAX_TEXT + 1)]], "records", "at most",
                     id="value-too-long"),
        pytest.param(["value", "is", ["", 1]], "records", "field name must be non-empty",
                     id="field-empty"),
        pytest.param(["value", "is", ['a"b', 1]], "records", "without", id="field-quote"),
        pytest.param(["value", "is", [3, 1]], "records", "field name or gid", id="field-number"),
        pytest.param(["value", "is_empty", ["body", 1]], "records", "[field name or gid]",
                     id="is-empty-with-value"),
        pytest.param(["value", "is_empty"], "records", "[field name or gid]",
                     id="is-empty-absent"),
        pytest.param(["updated_on", "<", [7, "weeks"]], "records", '[n, "days"]', id="weeks"),
        pytest.param(["updated_on", "<", 7], "records", '[n, "days"]', id="days-bare-number"),
        pytest.param(["updated_on", ">", ["7", "days"]], "records", "must be a number",
                     id="days-string"),
        pytest.param(["updated_on", ">", [True, "days"]], "records", "must be a number",
                     id="days-bool"),
        pytest.param(["updated_on", ">", [-1, "days"]], "records", "between 0 and",
                     id="days-negative"),
        pytest.param(["created_on", "<", [math.inf, "days"]], "records", "finite",
                     id="days-inf"),
        pytest.param(["created_on", "between", [1]], "records", "[from_ts, until_ts]",
                     id="between-one"),
        pytest.param(["created_on", "between", [1, "x"]], "records", "must be a number",
                     id="between-string"),
        pytest.param(["created_on", "between", [math.nan, 1]], "records", "finite",
                     id="between-nan"),
        pytest.param(["validation", "any", "x"], "records", "takes no operand",
                     id="validation-operand"),
        pytest.param(["is_committed", "is_true", False], "schema", "takes no operand",
                     id="committed-operand"),
        pytest.param(["type", "is", "asset"], "schema", "one of definition, class, field, layout",
                     id="type-unknown"),
        pytest.param(["name", "is", 3], "schema", "string of at most", id="name-is-number"),
        pytest.param(["label", "q", '"open'], "schema", "label q: unbalanced quote",
                     id="label-q-bad"),
        pytest.param(["name", "q", None], "schema", "q string", id="name-q-null"),
    ],
)
def test_rejected(value: Any, kind: Any, reason: str) -> None:
    """Each malformed filter raises SelectionError naming the property, operator or operand."""
    with pytest.raises(SelectionError) as err:
        parse_filter(value, kind=kind)
    assert reason in err.value.reason, err.value.reason
    assert err.value.code == 1006


def _nested(depth: int) -> Any:
    node: Any = S
    for _ in range(depth - 1):
        node = ["not", "", node]
    return node


def test_depth_limit() -> None:
    """Nesting up to MAX_DEPTH levels (a triplet is one) is accepted; one more is rejected."""
    assert parse_filter(_nested(MAX_DEPTH)) is not None
    with pytest.raises(SelectionError, match="nested deeper than 32"):
        parse_filter(_nested(MAX_DEPTH + 1))


def test_very_deep_nesting_rejected_without_recursion_error() -> None:
    """Nesting far beyond the limit stops at the limit (no RecursionError)."""
    with pytest.raises(SelectionError, match="nested deeper"):
        parse_filter(_nested(5000))


def test_condition_limit() -> None:
    """A filter with more than MAX_CONDITIONS conditions is rejected; exactly that many is not."""
    parse_filter(["or", "", [S] * (MAX_CONDITIONS - 1)])
    with pytest.raises(SelectionError, match="more than 1000 conditions"):
        parse_filter(["or", "", [S] * MAX_CONDITIONS])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (["channel", "has", "web"], False),
        (S, True),
        (["not", "", ["and", "", [["channel", "has", "web"], S]]], True),
        (["or", "", [["channel", "has", "web"]]], False),
    ],
)
def test_has_status(value: Any, expected: bool) -> None:
    """has_status finds a status condition anywhere in the tree, and only then."""
    assert has_status(parse_filter(value)) is expected


def test_search_entry_carries_parsed_query_and_filter() -> None:
    """A selection's search entry parses to a Search with the typed q, filter and exclude."""
    parsed = parse_selection(
        [{"search": {"language": "en", "q": "+apple", "filter": S}, "exclude": [G]}]
    )
    assert parsed.entries == (
        Search(0, "en", Query((Term("must", ("apple",)),)), StatusIs("draft"), frozenset({G})),
    )


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"search": {"language": "en", "q": '"x'}}, "unbalanced quote"),
        ({"search": {"language": "en", "filter": ["colour", "is", 1]}}, "'colour'"),
        ({"search": {"language": 'e"n'}}, "not a language code"),
        ({"search": {"language": "x" * 36}}, "not a language code"),
    ],
)
def test_search_entry_errors_name_the_entry(entry: Any, reason: str) -> None:
    """A bad q, filter or language inside a selection names the entry index."""
    with pytest.raises(SelectionError) as err:
        parse_selection(["a", entry])
    assert err.value.entry == 1 and reason in err.value.reason


def test_schema_kind_parses_schema_filters() -> None:
    """A schema selection's search takes schema properties and refuses record ones."""
    parse_selection([{"search": {"language": "en", "filter": ["type", "is", "field"]}}],
                    kind="schema")
    with pytest.raises(SelectionError, match="for schema items"):
        parse_selection([{"search": {"language": "en", "filter": S}}], kind="schema")


def test_parse_search_on_its_own_names_no_entry() -> None:
    """parse_search (for records/search requests) raises errors without an entry index."""
    assert parse_search({"language": "nl"}) == Search(-1, "nl")
    with pytest.raises(SelectionError) as err:
        parse_search({"language": "nl", "filter": ["x", "is", 1]})
    assert err.value.entry is None


# -- property-based ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30,
)

PROPERTIES = ["classes", "definition", "channel", "status", "parent", "ancestor", "value",
              "updated_on", "created_on", "validation", "is_committed", "is_extended", "type",
              "name", "label", "and", "or", "not", "bogus"]
OPERATORS = ["", "is", "is_not", "has", "has_not", "<", ">", "is_empty", "between", "any",
             "not_translated", "is_true", "is_false", "q", "bogus"]
operands = st.one_of(
    json_values,
    st.sampled_from(["draft", "deleted", "field", "web", "x", "+a -b", '"x', G]),
    st.tuples(st.sampled_from(["price", "body", G, ""]), json_values).map(list),
    st.tuples(st.one_of(st.integers(), st.floats()), st.sampled_from(["days", "hours"])).map(list),
)


def triplets(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.sampled_from(["and", "or"]), st.just(""), st.lists(children, max_size=4)),
        st.tuples(st.just("not"), st.just(""), children),
        st.tuples(st.sampled_from(PROPERTIES), st.sampled_from(OPERATORS), children),
    ).map(list)


filter_like = st.recursive(
    st.one_of(
        st.tuples(st.sampled_from(PROPERTIES), st.sampled_from(OPERATORS), operands).map(list),
        st.tuples(st.sampled_from(PROPERTIES), st.sampled_from(OPERATORS)).map(list),
        json_values,
    ),
    triplets,
    max_leaves=25,
)


FILTER_TYPES = (And, Or, Not, HasClass, DefinitionIs, HasChannel, StatusIs, ParentIs, AncestorIs,
                ValueCond, Age, Between, Validation, Committed, Extended, TypeIs, TextIs,
                TextQuery)


def _check(value: Any, kind: Any) -> None:
    try:
        parsed = parse_filter(value, kind=kind)
    except SelectionError as err:
        # Clean: the 1006 error, a bounded reason (messages are echoed back to clients).
        assert err.code == 1006 and err.reason and len(err.reason) < 400
        assert err.entry is None
        return
    assert parsed is None if value is None else isinstance(parsed, FILTER_TYPES)


@settings(max_examples=500, deadline=None)
@given(value=json_values, kind=st.sampled_from(["records", "schema"]))
def test_arbitrary_json_only_clean_errors(value: Any, kind: Any) -> None:
    """On any JSON value the filter parser returns a filter or raises SelectionError."""
    _check(value, kind)


@settings(max_examples=1000, deadline=None)
@given(value=filter_like, kind=st.sampled_from(["records", "schema"]))
def test_filter_like_json_only_clean_errors(value: Any, kind: Any) -> None:
    """On near-miss filter trees the parser returns a filter or raises SelectionError."""
    _check(value, kind)


# -- adversarial input --------------------------------------------------------------------

hostile_operands = st.one_of(
    nasty_json,
    st.tuples(st.sampled_from(["price", "body", G]) | nasty_text, nasty_json).map(list),
    st.tuples(nasty_text, nasty_numbers).map(list),
    st.tuples(nasty_numbers, st.just("days")).map(list),
    st.tuples(nasty_numbers | st.none(), nasty_numbers | st.none()).map(list),
)
hostile_filters = st.recursive(
    st.tuples(st.sampled_from(PROPERTIES) | nasty_text, st.sampled_from(OPERATORS) | nasty_text,
              hostile_operands).map(list),
    triplets,
    max_leaves=12,
)


def _scalars(node: Any) -> list[Any]:
    """Every scalar a parsed filter carries (strings, numbers), walking the tree."""
    if isinstance(node, And | Or):
        return [s for p in node.parts for s in _scalars(p)]
    if isinstance(node, Not):
        return _scalars(node.part)
    if isinstance(node, TextQuery):
        return [w for t in node.query.terms for w in t.words]
    return [getattr(node, f) for f in node.__slots__]


def _check_hostile(value: Any, kind: Any) -> None:
    """Clean error, or a filter whose numbers are finite and bounded and strings bounded."""
    _check(value, kind)
    try:
        parsed = parse_filter(value, kind=kind)
    except SelectionError:
        return
    for scalar in _scalars(parsed):
        if isinstance(scalar, float):
            assert math.isfinite(scalar)
        elif isinstance(scalar, int) and not isinstance(scalar, bool):
            assert abs(scalar) <= 2**53
        elif isinstance(scalar, str):
            assert len(scalar) <= MAX_TEXT and storable(scalar), repr(scalar)


@settings(max_examples=1000, deadline=None)
@given(value=hostile_filters, kind=st.sampled_from(["records", "schema"]))
def test_hostile_filters_only_clean_errors(value: Any, kind: Any) -> None:
    """SQL in operands, NaN/inf/huge numbers and odd unicode give a bounded filter or 1006."""
    _check_hostile(value, kind)


@settings(max_examples=100, deadline=None)
@given(value=deep(), kind=st.sampled_from(["records", "schema"]))
def test_deep_nesting_of_any_shape_only_clean_errors(value: Any, kind: Any) -> None:
    """and/or/not/list/object nesting thousands of levels deep is a clean 1006."""
    _check_hostile(value, kind)
