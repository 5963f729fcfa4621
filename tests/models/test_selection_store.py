"""models.selection_store: a parsed selection stored with its job and read back equal."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import selection as selection_module
from models.search import filter as filter_module
from models.search import query as query_module
from models.selection import parse_selection
from models.selection_store import TYPES, dump, load

G = "0f8e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"

RECORD_FILTERS = [
    ["classes", "has", "article"], ["classes", "has_not", G], ["definition", "is", G],
    ["channel", "has", "web"], ["status", "is", "draft"], ["status", "is_not", "deleted"],
    ["parent", "is", G], ["ancestor", "is", G], ["value", "is", ["price", 10]],
    ["value", "is", ["flag", True]], ["value", "is_not", ["price", 1.5]],
    ["value", "has", ["body", "apple"]], ["value", "<", ["price", -3]],
    ["value", "is_empty", ["body"]], ["updated_on", "<", [7, "days"]],
    ["created_on", "between", [None, 2]], ["validation", "any"],
    ["validation", "not_translated"],
]
SCHEMA_FILTERS = [
    ["is_committed", "is_true"], ["is_extended", "is_false"], ["type", "is", "field"],
    ["name", "is", "Article"], ["label", "q", '"body te" +x -y'],
]


def combined(leaves: list[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(st.sampled_from(leaves), lambda inner: st.one_of(
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, max_size=3))
        .map(lambda t: [t[0], "", t[1]]),
        inner.map(lambda f: ["not", "", f])), max_leaves=6)


gid = st.text("abcdef0123456789-", min_size=1, max_size=12)
words = st.lists(st.sampled_from(["apple", "+pear", "-fig", '"red wine"', "ünï", "x1"]),
                 max_size=4).map(" ".join)


def search(kind: str) -> st.SearchStrategy[Any]:
    filters = combined(RECORD_FILTERS if kind == "records" else SCHEMA_FILTERS)
    return st.fixed_dictionaries(
        {"search": st.fixed_dictionaries({"language": st.sampled_from(["en", "nl"])},
                                         optional={"q": words, "filter": filters})},
        optional={"exclude": st.lists(gid, max_size=3)})


children = st.fixed_dictionaries({"children": gid}, optional={
    "channel": gid, "ordering": gid, "exclude": st.lists(gid, max_size=3)})


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["records", "schema"]))
def test_every_parsed_selection_is_read_back_equal(data: st.DataObject, kind: str) -> None:
    """dump → JSON text → load gives back the very selection that was parsed."""
    entry = st.one_of(gid, search(kind), *([children] if kind == "records" else []))
    raw = data.draw(st.lists(entry, max_size=6))
    parsed = parse_selection(raw, kind=kind)  # type: ignore[arg-type]
    assert load(json.loads(json.dumps(dump(parsed)))) == parsed


def test_an_internal_entry_is_read_back() -> None:
    """A retry's ``failures_of`` entry survives the round trip."""
    parsed = parse_selection([G, {"failures_of": G}], internal=True)
    assert load(dump(parsed)) == parsed


def test_every_node_type_of_a_selection_can_be_stored() -> None:
    """Each dataclass of the selection and search modules is known to the store (a node
    type added to a parser without it would fail here, not in a job)."""
    nodes = {name for module in (selection_module, filter_module, query_module)
             for name, cls in inspect.getmembers(module, inspect.isclass)
             if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__}
    assert nodes <= set(TYPES), nodes - set(TYPES)


@pytest.mark.parametrize("stored", [
    None, [], {"v": 0, "selection": {}}, {"v": 1},
    {"v": 1, "selection": {"@": "Gids", "index": 0}},
    {"v": 1, "selection": {"@": "os.system", "command": "true"}},
    {"v": 1, "selection": {"@": "Gids", "index": 0, "gids": ["a"]}},
])
def test_anything_else_is_a_value_error(stored: Any) -> None:
    """Another version's form, a missing field, an unknown type name or a non-selection root
    is refused with ValueError (the runner then parses the request's selection)."""
    with pytest.raises(ValueError):
        load(stored)
