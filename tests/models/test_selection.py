"""Selection parsing (``models/selection.py``): a pure function, tested without services."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkjobs.errors import SelectionError
from models.search.filter import storable
from models.selection import (
    MAX_ENTRIES,
    MAX_GID_LENGTH,
    MAX_GIDS,
    Children,
    Gids,
    Search,
    Selection,
    parse_selection,
)
from tests.models.adversarial import SQL_FRAGMENTS, deep, nasty_json, nasty_text

A, B, C, D = ("a" * 8, "b" * 8, "c" * 8, "d" * 8)
SEARCH_OK = {"search": {"language": "en", "q": "apple", "filter": ["status", "is", "draft"]}}


@pytest.mark.parametrize(
    ("value", "entries"),
    [
        pytest.param([], (), id="empty"),
        pytest.param([A], (Gids(0, (A,)),), id="one-gid"),
        pytest.param([A, B, A], (Gids(0, (A, B, A)),), id="gid-run-keeps-order-and-repeats"),
        pytest.param([""], (Gids(0, ("",)),), id="empty-string-gid-is-just-unknown"),
        pytest.param(["x" * MAX_GID_LENGTH], (Gids(0, ("x" * MAX_GID_LENGTH,)),),
                     id="gid-at-length-limit"),
        pytest.param([{"children": A}], (Children(0, A),), id="children-bare"),
        pytest.param(
            [{"children": A, "channel": "web", "ordering": "alpha", "exclude": [B, C]}],
            (Children(0, A, "web", "alpha", frozenset({B, C})),),
            id="children-all-keys",
        ),
        pytest.param(
            [{"children": A, "channel": None, "ordering": None, "exclude": None}],
            (Children(0, A),),
            id="children-null-options-mean-default",
        ),
        pytest.param([{"children": A, "exclude": []}], (Children(0, A),),
                     id="children-empty-exclude"),
        pytest.param(
            [A, B, {"children": C}, D, A],
            (Gids(0, (A, B)), Children(2, C), Gids(3, (D, A))),
            id="runs-split-by-objects-keep-first-index",
        ),
        pytest.param(
            [{"children": A}, {"children": A, "exclude": [B]}],
            (Children(0, A), Children(1, A, exclude=frozenset({B}))),
            id="repeated-children-entries",
        ),
    ],
)
def test_accepted_forms(value: list[Any], entries: tuple[Any, ...]) -> None:
    """Every accepted entry form parses to the typed entries, in order, with entry indexes."""
    assert parse_selection(value) == Selection(kind="records", entries=entries)


@pytest.mark.parametrize(
    ("raw", "language", "exclude"),
    [
        pytest.param({"search": {"language": "en"}}, "en", frozenset(), id="language-only"),
        pytest.param(SEARCH_OK, "en", frozenset(), id="q-and-filter"),
        pytest.param({"search": {"language": "nl", "q": None, "filter": None}, "exclude": [A]},
                     "nl", frozenset({A}), id="nulls-and-exclude"),
    ],
)
def test_search_entries_parse(raw: dict[str, Any], language: str, exclude: frozenset[str]) -> None:
    """A well-formed search entry parses to a Search with its index, language and exclude."""
    parsed = parse_selection([A, raw, B])
    assert [type(e) for e in parsed.entries] == [Gids, Search, Gids]
    search = parsed.entries[1]
    assert isinstance(search, Search)
    assert (search.index, search.language, search.exclude) == (1, language, exclude)
    assert (search.filter is None) == (raw["search"].get("filter") is None)
    assert parsed.entries[2] == Gids(2, (B,))


def test_schema_kind_accepts_plain_gids() -> None:
    """A schema selection of plain gids parses like a records one, tagged with its kind."""
    assert parse_selection([A, B], kind="schema") == Selection("schema", (Gids(0, (A, B)),))


@pytest.mark.parametrize(
    ("value", "kind", "entry", "reason"),
    [
        # not a list at all: no entry to name
        pytest.param(None, "records", None, "must be a list", id="null"),
        pytest.param(A, "records", None, "must be a list", id="string"),
        pytest.param({"children": A}, "records", None, "must be a list", id="object"),
        pytest.param(3, "records", None, "must be a list", id="number"),
        # entries of the wrong type
        pytest.param([A, None], "records", 1, "not null", id="entry-null"),
        pytest.param([A, B, 7], "records", 2, "not a number", id="entry-int"),
        pytest.param([1.5], "records", 0, "not a number", id="entry-float"),
        pytest.param([True], "records", 0, "not a boolean", id="entry-bool"),
        pytest.param([A, [B]], "records", 1, "not a list", id="entry-list"),
        pytest.param(["x" * (MAX_GID_LENGTH + 1)], "records", 0, "too long", id="gid-too-long"),
        pytest.param([{}], "records", 0, "'children' or a 'search'", id="empty-object"),
        pytest.param([{"gid": A}], "records", 0, "'children' or a 'search'", id="object-no-kind"),
        # children entries
        pytest.param([A, {"children": A, "limit": 3}], "records", 1, "unknown key 'limit'",
                     id="children-unknown-key"),
        pytest.param([{"children": A, "search": {}}], "records", 0, "unknown key 'search'",
                     id="children-and-search"),
        pytest.param([{"children": 5}], "records", 0, "children must be a gid string",
                     id="children-not-string"),
        pytest.param([{"children": None}], "records", 0, "children must be a gid string",
                     id="children-null"),
        pytest.param([{"children": A, "channel": 3}], "records", 0, "channel must be a key",
                     id="channel-not-string"),
        pytest.param([{"children": A, "channel": ""}], "records", 0, "channel must be a key",
                     id="channel-empty"),
        pytest.param([{"children": A, "ordering": ["x"]}], "records", 0,
                     "ordering must be a key", id="ordering-not-string"),
        pytest.param([{"children": A, "exclude": B}], "records", 0, "exclude must be a list",
                     id="exclude-string"),
        pytest.param([{"children": A, "exclude": {"gid": B}}], "records", 0,
                     "exclude must be a list", id="exclude-object"),
        pytest.param([{"children": A, "exclude": [B, 3]}], "records", 0,
                     "exclude item must be a gid string", id="exclude-non-string-item"),
        pytest.param([A, {"children": A}], "schema", 1, "do not support children",
                     id="children-for-schema"),
        # search entries
        pytest.param([{"search": {"language": "en"}, "page": 1}], "records", 0,
                     "unknown key 'page' in search entry", id="search-unknown-key"),
        pytest.param([{"search": "apple"}], "records", 0, "'search' must be an object",
                     id="search-not-object"),
        pytest.param([{"search": {"language": "en", "sort": "x"}}], "records", 0,
                     "unknown key 'sort' in search object", id="search-object-unknown-key"),
        pytest.param([{"search": {"q": "x"}}], "records", 0, "'language' string",
                     id="search-no-language"),
        pytest.param([{"search": {"language": ""}}], "records", 0, "'language' string",
                     id="search-empty-language"),
        pytest.param([{"search": {"language": "en", "q": 3}}], "records", 0,
                     "'q' must be a string", id="search-q-not-string"),
        pytest.param([{"search": {"language": "x" * 36}}], "records", 0,
                     "not a language code", id="search-language-too-long"),
        pytest.param([{"search": {"language": 'e"n'}}], "records", 0,
                     "not a language code", id="search-language-quote"),
        pytest.param([{"search": {"language": "en"}, "exclude": "x"}], "records", 0,
                     "exclude must be a list", id="search-bad-exclude"),
        pytest.param([A, {"search": {"language": "en", "q": "+!!"}}], "records", 1,
                     "no letters or digits", id="search-bad-q"),
        pytest.param([A, B, {"search": {"language": "en", "filter": ["colour", "is", "red"]}}],
                     "records", 2, "colour", id="search-filter-unknown-property"),
        pytest.param([{"search": {"language": "en", "filter": ["status", "is", "gone"]}}],
                     "records", 0, "status is: operand", id="search-filter-bad-operand"),
        pytest.param([{"search": {"language": "en", "filter": ["status", "was", "draft"]}}],
                     "records", 0, "was", id="search-filter-unknown-operator"),
        pytest.param([SEARCH_OK], "schema", 0, "unknown filter property 'status'",
                     id="schema-search-record-filter"),
    ],
)
def test_malformed_forms(value: Any, kind: Any, entry: int | None, reason: str) -> None:
    """Every malformed form raises a 1006 SelectionError naming the entry index and reason."""
    with pytest.raises(SelectionError) as caught:
        parse_selection(value, kind=kind)
    err = caught.value
    assert err.code == 1006 and err.status == 422
    assert err.entry == entry
    assert reason in err.reason
    assert err.info["reason"] == err.reason
    if entry is None:
        assert "entry" not in err.info
    else:
        assert err.info["entry"] == entry


def test_first_bad_entry_is_reported() -> None:
    """When several entries are bad, the error names the first one in list order."""
    with pytest.raises(SelectionError) as caught:
        parse_selection([A, {"children": A}, {"bogus": 1}, 5])
    assert caught.value.entry == 2


@pytest.mark.parametrize(
    ("value", "entry", "reason"),
    [
        pytest.param([A] * MAX_GIDS + [B], MAX_GIDS, f"more than {MAX_GIDS} plain gids",
                     id="too-many-gids"),
        pytest.param([{"children": A}] * (MAX_ENTRIES + 1), MAX_ENTRIES,
                     f"more than {MAX_ENTRIES} entries", id="too-many-entries"),
        pytest.param([B, B] + [{"children": A}] * (MAX_ENTRIES + 1), MAX_ENTRIES + 2,
                     f"more than {MAX_ENTRIES} entries", id="too-many-entries-after-gids"),
    ],
)
def test_limits_rejected(value: list[Any], entry: int, reason: str) -> None:
    """One entry over a limit is rejected, naming the first entry beyond it."""
    with pytest.raises(SelectionError) as caught:
        parse_selection(value)
    assert caught.value.entry == entry
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([A] * MAX_GIDS, id="gids-at-limit"),
        pytest.param([{"children": A}] * MAX_ENTRIES, id="entries-at-limit"),
        pytest.param([A] * MAX_GIDS + [{"children": A}] * MAX_ENTRIES, id="both-at-limit"),
    ],
)
def test_limits_accepted(value: list[Any]) -> None:
    """Exactly at each limit a selection is still accepted (gids and objects count apart)."""
    parsed = parse_selection(value)
    count = sum(len(e.gids) if isinstance(e, Gids) else 1 for e in parsed.entries)
    assert count == len(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=6),
    max_leaves=40,
)

gid_text = st.text(min_size=1, max_size=40)
valid_children = st.fixed_dictionaries(
    {"children": gid_text},
    optional={"channel": gid_text, "ordering": gid_text,
              "exclude": st.lists(gid_text, max_size=3)},
)
filters = st.recursive(
    st.sampled_from([
        ["status", "is", "draft"], ["channel", "has_not", "web"], ["value", "is", ["price", 3]],
        ["updated_on", "<", [3, "days"]], ["validation", "any"], ["is_committed", "is_true"],
        ["name", "q", "+body"],
    ]),
    lambda inner: st.tuples(st.sampled_from(["and", "or"]), st.just(""),
                            st.lists(inner, max_size=3)).map(list)
    | inner.map(lambda f: ["not", "", f]),
    max_leaves=6,
)
valid_search = st.fixed_dictionaries(
    {"search": st.fixed_dictionaries(
        {"language": st.sampled_from(["en", "nl"]) | gid_text},
        optional={"q": st.text(max_size=20) | st.just('+apple -"river stone" pear'),
                  "filter": filters})},
    optional={"exclude": st.lists(gid_text, max_size=3)},
)


def _slots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (the value itself, dict values, list items)."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _slots(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _slots(v, (*path, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = new if len(path) == 1 else _replace(value[path[0]], path[1:], new)
    return copy


@st.composite
def near_miss(draw: st.DrawFn) -> Any:
    """A well-formed entry with one place (or one extra key) replaced by arbitrary JSON."""
    entry = draw(valid_children | valid_search)
    if draw(st.booleans()):
        path = draw(st.sampled_from(_slots(entry)))
        return _replace(entry, path, draw(json_values))
    holders = [p for p in _slots(entry) if isinstance(_get(entry, p), dict)]
    path = draw(st.sampled_from(holders))
    return _replace(entry, (*path, draw(st.text(max_size=10))), draw(json_values))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


# Valid entries first, so that a near miss later in the list is reached by the parser.
entry_like = st.one_of(gid_text, valid_children, valid_search, near_miss(), near_miss(),
                       near_miss(), json_values)


def _check(value: Any, kind: Any) -> None:
    try:
        parsed = parse_selection(value, kind=kind)
    except SelectionError as err:
        assert err.code == 1006 and err.reason
        if err.entry is not None:
            assert isinstance(value, list) and 0 <= err.entry < len(value)
        return
    assert isinstance(parsed, Selection) and parsed.kind == kind
    assert isinstance(value, list)


@settings(max_examples=400, deadline=None)
@given(value=json_values, kind=st.sampled_from(["records", "schema"]))
def test_arbitrary_json_only_clean_errors(value: Any, kind: Any) -> None:
    """On any JSON value the parser returns a Selection or raises SelectionError, nothing else."""
    _check(value, kind)


@settings(max_examples=600, deadline=None)
@given(value=st.lists(entry_like, max_size=4), kind=st.sampled_from(["records", "schema"]))
def test_entry_like_lists_only_clean_errors(value: list[Any], kind: Any) -> None:
    """On lists of near-miss entries the parser returns a Selection or a clean SelectionError."""
    _check(value, kind)


# -- adversarial input --------------------------------------------------------------------


@st.composite
def hostile_entry(draw: st.DrawFn) -> Any:
    """A well-formed entry with one place replaced by hostile JSON or by very deep nesting."""
    entry = draw(valid_children | valid_search)
    path = draw(st.sampled_from(_slots(entry)))
    return _replace(entry, path, draw(nasty_json | deep()))


@settings(max_examples=500, deadline=None)
@given(value=st.lists(st.one_of(nasty_text, hostile_entry(), nasty_json), max_size=4),
       kind=st.sampled_from(["records", "schema"]))
def test_hostile_entries_only_clean_errors(value: list[Any], kind: Any) -> None:
    """SQL fragments, edge numbers, odd unicode and deep nesting give a Selection or a 1006;
    every string a parsed selection keeps is text any database can bind."""
    _check(value, kind)
    try:
        parsed = parse_selection(value, kind=kind)
    except SelectionError:
        return
    for text in _strings(parsed):
        assert storable(text), repr(text)


def _strings(selection: Selection) -> list[str]:
    """The gids, keys and languages a parsed selection keeps."""
    out: list[str] = []
    for entry in selection.entries:
        if isinstance(entry, Gids):
            out += entry.gids
        elif isinstance(entry, Children):
            out += [entry.parent, entry.channel or "", entry.ordering or "", *entry.exclude]
        else:
            out += [entry.language, *entry.exclude]
    return out


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x\udfffy"])
@pytest.mark.parametrize("where", ["gid", "children", "channel", "exclude", "language"])
def test_unstorable_text_is_a_selection_error(bad: str, where: str) -> None:
    """NUL or an unpaired surrogate anywhere a string is kept is a 1006 naming the entry."""
    entry: Any = {"gid": bad, "children": {"children": bad}, "channel": {"children": A,
                  "channel": bad}, "exclude": {"children": A, "exclude": [bad]},
                  "language": {"search": {"language": bad}}}[where]
    with pytest.raises(SelectionError) as caught:
        parse_selection([A, entry])
    assert caught.value.entry == 1


@settings(max_examples=100, deadline=None)
@given(value=deep(), kind=st.sampled_from(["records", "schema"]))
def test_deep_nesting_only_clean_errors(value: Any, kind: Any) -> None:
    """Nesting thousands of levels deep is a clean SelectionError, never a RecursionError."""
    _check(value, kind)
    _check([value], kind)


@pytest.mark.parametrize("fragment", SQL_FRAGMENTS)
def test_sql_fragments_are_kept_as_plain_values(fragment: str) -> None:
    """A gid, exclude or channel holding SQL is kept verbatim as data, never interpreted."""
    parsed = parse_selection([fragment, {"children": A, "channel": fragment[:MAX_GID_LENGTH],
                                         "exclude": [fragment]}])
    assert parsed.entries == (
        Gids(0, (fragment,)), Children(1, A, channel=fragment, exclude=frozenset({fragment})),
    )
