"""Search resolution (``models/search/sql.py`` with the index and the filter compiler) against
the real database — SQLite by default, PostgreSQL with ``TEST_DATABASE_URL``.

The fixture writes two small projects with known titles, fields, schema and tree, and indexes
them with :func:`models.search.index.reindex`; each test names the records it expects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, insert, text

from bulkjobs.errors import SelectionError
from models import Project, Record, RecordDeletion, SchemaItem
from models.engine import get_engine, get_write_engine
from models.resolve import resolve_into
from models.search.index import clear, rebuild, reindex
from models.search.sql import search_count, search_ids
from models.seed import seed
from models.selection import parse_search, parse_selection

NOW = time.time()
DAY = 86_400.0


@dataclass
class World:
    gids: dict[str, str] = field(default_factory=dict)  # name -> gid
    ids: dict[str, int] = field(default_factory=dict)  # name -> record / schema item id
    names: dict[tuple[str, int], str] = field(default_factory=dict)  # (kind, id) -> name
    a: str = "00000000-0000-4000-8000-00000000000a"
    b: str = "00000000-0000-4000-8000-00000000000b"

    def gid(self, name: str) -> str:
        return self.gids[name]

    def by_gid(self, *names: str) -> list[str]:
        """Names in gid order: the order of ties in a ranking."""
        return sorted(names, key=self.gids.__getitem__)


LIVE_A = ("root", "alpha", "kid", "grandkid", "beta", "gamma", "eps", "zeta")


def _gid(n: int) -> str:
    # Declaration order is gid order, so ties in a ranking read in the order written below.
    return f"00000000-0000-4000-8000-{n:012x}"


def _build(conn: Connection) -> World:
    w = World()
    for gid, langs in ((w.a, ["en", "nl"]), (w.b, ["en"])):
        conn.execute(insert(Project).values(
            gid=gid, name=gid[-1], status="active", languages=langs,
            channels={"__all__": "[all records]", "web": "Web", "print": "Print"},
            orderings={}, created_on=NOW,
        ))
    counter = [100]

    def schema(name: str, project: str, type_: str, item_name: str, label: dict[str, str],
               **extra: Any) -> None:
        counter[0] += 1
        w.gids[name], w.ids[name] = _gid(counter[0]), counter[0]
        w.names[("schema", counter[0])] = name
        conn.execute(insert(SchemaItem).values(
            id=counter[0], gid=w.gids[name], project_gid=project, type=type_, name=item_name,
            label=label, is_new=extra.pop("is_new", False),
            is_working_copy=extra.pop("is_working_copy", False), original=extra.pop("original",
                                                                                    None),
            is_base=False, is_extended=extra.pop("is_extended", False),
            classes=[w.gids[c] for c in extra.pop("classes", [])],
            fields=[w.gids[f] for f in extra.pop("fields", [])], layout=None,
            body=extra.pop("body", {}), created_on=NOW, updated_on=NOW,
        ))
        assert not extra

    a = w.a
    schema("f_body", a, "field", "body", {"en": "Body text", "nl": "Hoofdtekst"},
           body={"type": "textline", "is_localized": True})
    schema("f_price", a, "field", "price", {"en": "Price", "nl": "Prijs"},
           body={"type": "number", "min": 0, "max": 100})
    schema("f_code", a, "field", "code", {"en": "Code"},
           body={"type": "textline", "is_required": True, "max_length": 5})
    schema("f_tags", a, "field", "tags", {"en": "Tags"}, body={"type": "list"})
    schema("f_flag", a, "field", "flag", {"en": "Flag"}, body={"type": "boolean"})
    schema("c_common", a, "class", "common", {"en": "Common"}, fields=["f_body", "f_code"])
    schema("c_priced", a, "class", "priced", {"en": "Priced things"},
           fields=["f_price", "f_tags", "f_flag"])
    schema("d_page", a, "definition", "page", {"en": "Page"}, classes=["c_common"])
    schema("d_product", a, "definition", "product", {"en": "Product"},
           classes=["c_common", "c_priced"])
    # A working copy that adds a class: not in use until committed, so it changes nothing.
    schema("d_page_wc", a, "definition", "page", {"en": "Page"}, is_working_copy=True,
           original=w.gids["d_page"], classes=["c_common", "c_priced"])
    schema("c_fresh", a, "class", "fresh", {"en": "ÜBERSICHT"}, is_new=True)
    schema("d_ext", a, "definition", "product", {"en": "Product (extended)"}, is_extended=True,
           classes=["c_common", "c_priced"])
    schema("l_page", a, "layout", "page layout", {"en": "Page layout"})
    schema("l_y", a, "layout", "omega", {"en": "Other"})
    schema("l_x", a, "layout", "zeta_layout", {"en": "Omega"})
    schema("b_price", w.b, "field", "price", {"en": "Price"}, body={"type": "number"})

    def record(name: str, project: str, parent: str | None, definition: str | None,
               title: dict[str, str], fields: dict[str, Any], *, status: str = "published",
               channels: tuple[str, ...] = (), created: float = NOW - 2 * DAY,
               updated: float = NOW - DAY) -> None:
        counter[0] += 1
        rid = 1000 + counter[0]
        w.gids[name], w.ids[name] = _gid(counter[0]), rid
        w.names[("records", rid)] = name
        mpath = (conn.execute(text("SELECT mpath FROM record WHERE id = :i"),
                              {"i": w.ids[parent]}).scalar_one() if parent else "/") + f"{rid}/"
        conn.execute(insert(Record).values(
            id=rid, gid=w.gids[name], project_gid=project,
            parent_id=w.ids[parent] if parent else None, canonical_id=None, is_link=False,
            treelevel=mpath.count("/") - 2, mpath=mpath, childcount=0,
            definition=w.gids[definition] if definition else None, title=title, fields=fields,
            status="published" if status == "deleted" else status,
            channels=["__all__", *channels], orderings={}, created_on=created, updated_on=updated,
        ))
        if status == "deleted":
            conn.execute(insert(RecordDeletion).values(record_id=rid, deleted_root=rid))

    record("root", a, None, "d_page", {"en": "Root"}, {"nl": {"body": "wortel"}})
    record("alpha", a, "root", "d_product", {"en": "Apple garden", "nl": "Appel tuin"},
           {"en": {"body": "river stone", "code": "A1", "price": 10, "tags": ["red", "green"],
                   "flag": True},
            "nl": {"body": "rivier steen"}},
           channels=("web",), created=NOW - 10 * DAY)
    record("kid", a, "alpha", "d_product", {"en": "Stone bridge"},
           {"en": {"body": "apple pie recipe", "code": "K1", "price": 5}}, status="draft")
    record("grandkid", a, "kid", "d_page", {"en": "Deep thought"},
           {"en": {"body": "garden gnome", "code": "toolong"}})
    record("beta", a, "root", "d_page", {"en": "Garden river", "nl": ""},
           {"en": {"body": "apple", "code": ""}, "nl": {"body": "appel"}}, status="draft")
    record("gamma", a, "root", "d_product", {"en": "Winter market"},
           {"en": {"body": "snow", "code": "G", "price": 500, "flag": False}},
           channels=("print",), updated=NOW - 40 * DAY)
    record("delta", a, "root", "d_product", {"en": "Apple deleted"},
           {"en": {"body": "apple", "code": "D"}}, status="deleted")
    record("eps", a, "root", None, {"en": "", "nl": "Alleen Nederlands"}, {"en": {"code": "E"}})
    record("zeta", a, "root", "d_product", {"en": "Café Überschrift 1.5 x@y.com"},
           {"en": {"body": "foo-bar baz_qux", "code": "Z", "price": "cheap"}}, status="draft")
    record("broot", w.b, None, None, {"en": "Apple foreign garden"},
           {"en": {"body": "apple river stone garden price"}})
    record("bkid", w.b, "broot", None, {"en": "Apple"}, {}, status="draft")
    reindex(conn, [i for (kind, i) in w.names if kind == "records"])
    return w


@pytest.fixture
def world(db: Engine) -> Iterator[World]:
    """Two projects of known records and schema items, indexed; the index emptied first."""
    with get_write_engine().begin() as conn:
        clear(conn)
        built = _build(conn)
    yield built


def find(w: World, search: dict[str, Any], *, kind: str = "records", mode: str = "live",
         project: str | None = None) -> list[str]:
    parsed = parse_search(search, kind=kind)  # type: ignore[arg-type]
    with get_engine().connect() as conn:
        ids = search_ids(conn, project_gid=project or w.a, search=parsed, kind=kind,  # type: ignore[arg-type]
                         mode=mode, limit=1000)  # type: ignore[arg-type]
    return [w.names[(kind, i)] for i in ids]


def en(q: str | None = None, filter: Any = None, language: str = "en") -> dict[str, Any]:
    out: dict[str, Any] = {"language": language}
    if q is not None:
        out["q"] = q
    if filter is not None:
        out["filter"] = filter
    return out


# -- q: semantics and ranking (exact order) -------------------------------------------------

@pytest.mark.parametrize(
    ("search", "expected"),
    [
        pytest.param(en("apple"), ["alpha", "kid", "beta"], id="bare-title-match-first"),
        pytest.param(en("APPL"), ["alpha", "kid", "beta"], id="prefix-case-insensitive"),
        pytest.param(en("apple garden"), ["alpha", "beta", "kid", "grandkid"],
                     id="more-terms-then-title-then-gid"),
        pytest.param(en("+apple garden"), ["alpha", "beta", "kid"], id="must-bare-only-ranks"),
        pytest.param(en("+apple +garden"), ["alpha", "beta"], id="two-musts"),
        pytest.param(en("+apple -garden"), ["kid"], id="must-and-must-not"),
        pytest.param(en("apple -garden"), ["kid"], id="bare-and-must-not"),
        pytest.param(en("-apple"), [], id="only-must-not-finds-nothing"),
        pytest.param(en("stone"), ["kid", "alpha"], id="title-match-beats-gid"),
        pytest.param(en('"garden river"'), ["beta"], id="phrase-in-sequence"),
        pytest.param(en('"river garden"'), [], id="phrase-order-matters"),
        pytest.param(en('"garden riv"'), ["beta"], id="phrase-words-by-prefix"),
        pytest.param(en('"apple garden"'), ["alpha"], id="phrase-within-one-text-only"),
        pytest.param(en('-"apple garden" +apple'), ["kid", "beta"], id="must-not-phrase"),
        pytest.param(en("foo-bar"), ["zeta"], id="hyphenated-term-is-phrase"),
        pytest.param(en("qux"), ["zeta"], id="underscore-separates-in-text"),
        pytest.param(en("caf"), ["zeta"], id="accented-word-by-prefix"),
        pytest.param(en("ÜBER"), ["zeta"], id="unicode-case-folding"),
        pytest.param(en("com"), ["zeta"], id="email-address-is-words"),
        pytest.param(en("5"), ["zeta"], id="decimal-is-words-numbers-not-indexed"),
        pytest.param(en("a1"), ["alpha"], id="text-field-values-indexed"),
        pytest.param(en("zzz"), [], id="no-match"),
        pytest.param(en(""), [], id="blank-q-and-no-filter-finds-nothing"),
        pytest.param(en(), [], id="no-q-no-filter-finds-nothing"),
        pytest.param(en("", ["and", "", []]), list(LIVE_A), id="blank-q-filter-only-by-gid"),
        pytest.param(en("appel", language="nl"), ["alpha", "beta"], id="other-language"),
        pytest.param(en("apple", language="nl"), [], id="language-kept-apart"),
        pytest.param(en("wortel", language="nl"), ["root"], id="fields-only-language"),
        pytest.param(en("apple", language="fr"), [], id="unknown-language-matches-nothing"),
        pytest.param(en(filter=["and", "", []], language="fr"), list(LIVE_A),
                     id="unknown-language-filter-only"),
        pytest.param(en("apple", ["status", "is", "deleted"]), ["delta"],
                     id="status-filter-decides"),
        pytest.param(en("apple", ["status", "is_not", "draft"]), ["alpha", "delta"],
                     id="status-is-not-includes-deleted"),
        pytest.param(en("'; DROP TABLE record; --x"), [], id="sql-ish-q-is-plain-words"),
        pytest.param(en("OR AND NEAR"), [], id="fts-operators-are-words"),
    ],
)
def test_q(world: World, search: dict[str, Any], expected: list[str]) -> None:
    """q's +/-/bare/phrase/prefix semantics and the ranking order, in one project and language."""
    assert find(world, search) == expected


def test_mode_deleted_sees_deleted_records_only(world: World) -> None:
    """Mode "deleted" finds deleted records only, unless the filter asks for a status."""
    assert find(world, en("apple"), mode="deleted") == ["delta"]
    assert find(world, en(filter=["and", "", []]), mode="deleted") == ["delta"]
    assert find(world, en("apple", ["status", "is", "published"]), mode="deleted") == ["alpha"]


def test_never_another_projects_records(world: World) -> None:
    """Searches of project A never return project B's records, and B's own search finds them."""
    assert find(world, en("apple foreign")) == ["alpha", "kid", "beta"]
    assert find(world, en("foreign")) == []
    assert find(world, en(filter=["ancestor", "is", world.gid("broot")])) == []
    assert find(world, en(filter=["parent", "is", world.gid("broot")])) == []
    assert find(world, en("apple"), project=world.b) == ["broot", "bkid"]
    assert find(world, en("apple"), project="00000000-0000-4000-8000-0000000000ff") == []


# -- filters (sets, in gid order) -----------------------------------------------------------

def _all_but(*names: str) -> list[str]:
    return [n for n in LIVE_A if n not in names]


FILTER_CASES = [
    (["classes", "has", "priced"], ["alpha", "kid", "gamma", "zeta"], "classes-has-name"),
    (["classes", "has", "@c_priced"], ["alpha", "kid", "gamma", "zeta"], "classes-has-gid"),
    (["classes", "has_not", "priced"], ["root", "grandkid", "beta", "eps"],
     "classes-has-not-null-definition-included"),
    (["classes", "has", "common"], _all_but("eps"), "classes-shared"),
    (["classes", "has", "fresh"], [], "classes-unused"),
    (["definition", "is", "@d_page"], ["root", "grandkid", "beta"], "definition-is"),
    (["definition", "is_not", "@d_page"], ["alpha", "kid", "gamma", "eps", "zeta"],
     "definition-is-not"),
    (["channel", "has", "web"], ["alpha"], "channel-has"),
    (["channel", "has", "print"], ["gamma"], "channel-has-print"),
    (["channel", "has_not", "web"], _all_but("alpha"), "channel-has-not"),
    (["channel", "has", "__all__"], list(LIVE_A), "channel-all"),
    (["status", "is", "draft"], ["kid", "beta", "zeta"], "status-is"),
    (["status", "is", "published"], ["root", "alpha", "grandkid", "gamma", "eps"],
     "status-published"),
    (["status", "is", "deleted"], ["delta"], "status-deleted"),
    (["status", "is_not", "draft"], ["root", "alpha", "grandkid", "gamma", "delta", "eps"],
     "status-is-not"),
    (["parent", "is", "@alpha"], ["kid"], "parent-is"),
    (["parent", "is", "@root"], ["alpha", "beta", "gamma", "eps", "zeta"],
     "parent-is-live-children"),
    (["parent", "is", "00000000-0000-4000-8000-0000000000ff"], [], "parent-unknown"),
    (["ancestor", "is", "@alpha"], ["kid", "grandkid"], "ancestor-subtree"),
    (["ancestor", "is", "@kid"], ["grandkid"], "ancestor-deeper"),
    (["ancestor", "is", "@root"], _all_but("root"), "ancestor-root-not-itself"),
    (["value", "is", ["price", 10]], ["alpha"], "value-is-number"),
    (["value", "is", ["price", 10.0]], ["alpha"], "value-is-float"),
    (["value", "is", ["@f_price", 10]], ["alpha"], "value-by-field-gid"),
    (["value", "is", ["price", "10"]], [], "value-is-string-not-number"),
    (["value", "is", ["code", "A1"]], ["alpha"], "value-is-string"),
    (["value", "is", ["code", "a1"]], [], "value-is-exact"),
    (["value", "is", ["flag", True]], ["alpha"], "value-is-true"),
    (["value", "is", ["flag", False]], ["gamma"], "value-is-false"),
    (["value", "is_not", ["price", 10]], _all_but("alpha"), "value-is-not-includes-missing"),
    (["value", "has", ["body", "STONE"]], ["alpha"], "value-has-text"),
    (["value", "has", ["body", "pie"]], ["kid"], "value-has-inside"),
    (["value", "has", ["tags", "red"]], ["alpha"], "value-has-list-element"),
    (["value", "has", ["tags", "re"]], [], "value-has-list-exact-element"),
    (["value", "<", ["price", 50]], ["alpha", "kid"], "value-lt"),
    (["value", ">", ["price", 50]], ["gamma"], "value-gt-skips-strings"),
    (["value", "<", ["code", "B"]], ["alpha", "beta"], "value-lt-string"),
    (["value", ">", ["code", "Y"]], ["grandkid", "zeta"], "value-gt-string-code-points"),
    (["value", "is_empty", ["price"]], ["root", "grandkid", "beta", "eps"], "value-is-empty"),
    (["value", "is_empty", ["code"]], ["root", "beta"], "value-is-empty-string"),
    (["value", "is_empty", ["nosuch"]], list(LIVE_A), "value-is-empty-unknown-field"),
    (["updated_on", "<", [7, "days"]], _all_but("gamma"), "updated-fewer-days-ago"),
    (["updated_on", ">", [30, "days"]], ["gamma"], "updated-more-days-ago"),
    (["updated_on", "between", [NOW - 50 * DAY, NOW - 30 * DAY]], ["gamma"], "updated-between"),
    (["created_on", "<", [5, "days"]], _all_but("alpha"), "created-fewer-days-ago"),
    (["created_on", "between", [None, NOW - 5 * DAY]], ["alpha"], "created-between-open"),
    (["created_on", "between", [None, None]], list(LIVE_A), "between-unbounded"),
    (["validation", "is_empty"], ["root", "beta"], "validation-required-empty"),
    (["validation", "any"], ["root", "grandkid", "beta", "gamma", "zeta"], "validation-any"),
    (["validation", "not_translated"], ["root", "eps"], "not-translated-field-and-title"),
    (["and", "", [["classes", "has", "priced"], ["channel", "has", "web"]]], ["alpha"], "and"),
    (["or", "", [["parent", "is", "@alpha"], ["status", "is", "draft"]]],
     ["kid", "beta", "zeta"], "or"),
    (["not", "", ["definition", "is", "@d_page"]], ["alpha", "kid", "gamma", "eps", "zeta"],
     "not-null-definition-counts-as-not"),
    (["not", "", ["validation", "any"]], ["alpha", "kid", "eps"], "not-validation"),
    (["not", "", ["or", "", [["value", "is", ["price", 10]], ["value", "<", ["price", 6]]]]],
     _all_but("alpha", "kid"), "not-or-with-missing-values"),
    (["and", "", []], list(LIVE_A), "empty-and"),
    (["or", "", []], [], "empty-or"),
    (["not", "", ["or", "", []]], list(LIVE_A), "not-empty-or"),
]


def _resolve_refs(w: World, value: Any) -> Any:
    """``"@name"`` in a filter stands for that fixture item's gid."""
    if isinstance(value, str) and value.startswith("@"):
        return w.gid(value[1:])
    if isinstance(value, list):
        return [_resolve_refs(w, v) for v in value]
    return value


@pytest.mark.parametrize(("filter_", "expected"),
                         [pytest.param(f, e, id=i) for f, e, i in FILTER_CASES])
def test_filter(world: World, filter_: Any, expected: list[str]) -> None:
    """Each records filter property and operator selects exactly the expected live records."""
    assert find(world, en(filter=_resolve_refs(world, filter_))) == world.by_gid(*expected)


def test_not_translated_in_another_language(world: World) -> None:
    """not_translated looks at the search language: in nl, what is filled only in en."""
    assert find(world, en(filter=["validation", "not_translated"], language="nl")) == \
        world.by_gid("root", "kid", "grandkid", "beta", "gamma", "zeta")


def test_filter_and_q_together(world: World) -> None:
    """q and filter both apply; the ranking stays that of q."""
    assert find(world, en("apple garden", ["classes", "has", "priced"])) == ["alpha", "kid"]


def test_exclude(world: World) -> None:
    """exclude removes its gids from the search's own results."""
    parsed = parse_selection([{"search": en("apple"), "exclude": [world.gid("alpha")]}])
    with get_engine().connect() as conn:
        ids = search_ids(conn, project_gid=world.a, search=parsed.entries[0])  # type: ignore[arg-type]
    assert [world.names[("records", i)] for i in ids] == ["kid", "beta"]


def test_paging_and_count(world: World) -> None:
    """search_ids pages through the ranked result; search_count gives its size."""
    search = parse_search(en("apple garden"))
    with get_engine().connect() as conn:
        pages = [search_ids(conn, project_gid=world.a, search=search, offset=o, limit=2)
                 for o in (0, 2, 4)]
        total = search_count(conn, project_gid=world.a, search=search)
        with pytest.raises(ValueError):
            search_ids(conn, project_gid=world.a, search=search, offset=-1)
    assert [[world.names[("records", i)] for i in p] for p in pages] == \
        [["alpha", "beta"], ["kid", "grandkid"], []]
    assert total == 4


# -- schema items ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("search", "expected"),
    [
        pytest.param(en("pri"), ["f_price", "c_priced"], id="q-name-and-label"),
        pytest.param(en("things"), ["c_priced"], id="q-label-only"),
        pytest.param(en("tex"), ["f_body"], id="q-label-prefix"),
        pytest.param(en("product extended"), ["d_ext", "d_product"], id="q-more-terms-first"),
        pytest.param(en("omega"), ["l_x", "l_y"], id="q-label-match-before-name-match"),
        pytest.param(en("+product -extended"), ["d_product"], id="q-must-not"),
        pytest.param(en('"page lay"'), ["l_page"], id="q-phrase"),
        pytest.param(en("übers"), ["c_fresh"], id="q-unicode-case-folding"),
        pytest.param(en("prijs", language="nl"), ["f_price"], id="q-label-in-language"),
        pytest.param(en(filter=["is_committed", "is_false"]), ["d_page_wc", "c_fresh"],
                     id="is-committed-false"),
        pytest.param(en(filter=["is_extended", "is_true"]), ["d_ext"], id="is-extended-true"),
        pytest.param(en(filter=["type", "is", "field"]),
                     ["f_body", "f_price", "f_code", "f_tags", "f_flag"], id="type-is"),
        pytest.param(en(filter=["name", "is", "PRICE"]), ["f_price"], id="name-is-caseless"),
        pytest.param(en(filter=["name", "is", "pric"]), [], id="name-is-whole"),
        pytest.param(en(filter=["label", "is", "body TEXT"]), ["f_body"], id="label-is"),
        pytest.param(en(filter=["label", "is", "übersicht"]), ["c_fresh"],
                     id="label-is-unicode-caseless"),
        pytest.param(en(filter=["label", "is", "hoofdtekst"], language="nl"), ["f_body"],
                     id="label-is-language"),
        pytest.param(en(filter=["label", "q", "thin"]), ["c_priced"], id="label-q"),
        pytest.param(en(filter=["label", "q", "+priced -things"]), [], id="label-q-must-not"),
        pytest.param(en(filter=["name", "q", "page"]), ["d_page", "d_page_wc", "l_page"],
                     id="name-q"),
        pytest.param(en("page", ["not", "", ["is_committed", "is_true"]]), ["d_page_wc"],
                     id="q-and-filter"),
    ],
)
def test_schema_search(world: World, search: dict[str, Any], expected: list[str]) -> None:
    """Schema items: q over name and label, each schema property, never project B's items."""
    found = find(world, search, kind="schema")
    if "q" in search:
        assert found == expected
    else:
        assert found == world.by_gid(*expected)


def test_schema_search_needs_q_or_filter(world: World) -> None:
    """A schema search with neither q nor filter finds nothing, not every item."""
    assert find(world, en(), kind="schema") == []
    assert find(world, en("  "), kind="schema") == []


def test_schema_is_committed_true(world: World) -> None:
    """is_committed is_true is every item that is neither new nor a working copy."""
    everything = [n for (k, _), n in world.names.items() if k == "schema" and n != "b_price"]
    assert find(world, en(filter=["is_committed", "is_true"]), kind="schema") == \
        world.by_gid(*[n for n in everything if n not in ("d_page_wc", "c_fresh")])


# -- resolution into job_item ---------------------------------------------------------------

def _resolved(w: World, selection: Any, *, mode: str = "live", kind: str = "records") -> list[str]:
    parsed = parse_selection(selection, kind=kind)  # type: ignore[arg-type]
    with get_write_engine().begin() as conn:
        total = resolve_into(conn, token="search-test", project_gid=w.a, selection=parsed,
                             mode=mode)  # type: ignore[arg-type]
        ids = conn.execute(text(
            "SELECT item_id FROM job_item WHERE job_token = 'search-test' ORDER BY id"
        )).scalars().all()
        conn.execute(text("DELETE FROM job_item WHERE job_token = 'search-test'"))
    assert total == len(ids)
    return [w.names[(kind, i)] for i in ids]


def test_resolve_search_entry_in_rank_order(world: World) -> None:
    """A search entry inserts its whole result in rank order, after earlier entries' items."""
    assert _resolved(world, [world.gid("kid"), {"search": en("apple")}]) == \
        ["kid", "alpha", "beta"]


def test_resolve_exclude_is_per_entry(world: World) -> None:
    """exclude removes gids from its own entry only; a later entry may still bring them."""
    selection = [{"search": en("apple"), "exclude": [world.gid("alpha")]}, {"search": en("apple")}]
    assert _resolved(world, selection) == ["kid", "beta", "alpha"]


def test_resolve_mode_deleted(world: World) -> None:
    """Resolution in mode "deleted" takes deleted records only; a status filter overrides."""
    assert _resolved(world, [{"search": en("apple")}], mode="deleted") == ["delta"]
    assert _resolved(world, [{"search": en(filter=["status", "is", "draft"])}],
                     mode="deleted") == ["kid", "beta", "zeta"]


def test_resolve_schema_search(world: World) -> None:
    """A schema selection's search entry resolves to schema items of the project."""
    assert _resolved(world, [{"search": en("pri")}], kind="schema") == ["f_price", "c_priced"]


def test_resolve_with_children_entry(world: World) -> None:
    """Search and children entries make one ordered union."""
    selection = [{"children": world.gid("root")}, {"search": en("apple")}]
    assert _resolved(world, selection) == ["alpha", "beta", "gamma", "eps", "zeta", "kid"]


# -- keeping the index in step --------------------------------------------------------------

def _index_rows(conn: Connection, record_id: int) -> int:
    if conn.dialect.name == "postgresql":
        sql = "SELECT COUNT(*) FROM record_search WHERE record_id = :i"
    else:
        sql = "SELECT COUNT(*) FROM record_fts WHERE rowid >> 10 = :i"
    return int(conn.execute(text(sql), {"i": record_id}).scalar_one())


def test_reindex_follows_changes(world: World) -> None:
    """After a title change and reindex the new words are found and the old ones are not."""
    with get_write_engine().begin() as conn:
        conn.execute(text("UPDATE record SET title = :t WHERE id = :i"),
                     {"t": '{"en": "Pear orchard"}', "i": world.ids["alpha"]})
        assert find(world, en("pear")) == []  # not yet: the index is what q reads
        reindex(conn, [world.ids["alpha"]])
    assert find(world, en("pear")) == ["alpha"]
    assert find(world, en("apple")) == ["kid", "beta"]


def test_reindex_drops_removed_records(world: World) -> None:
    """Reindexing the id of a record that is gone removes its entries."""
    with get_write_engine().begin() as conn:
        assert _index_rows(conn, world.ids["zeta"]) == 2  # en and nl (the project's languages)
        conn.execute(text("DELETE FROM record WHERE id = :i"), {"i": world.ids["zeta"]})
        reindex(conn, [world.ids["zeta"]])
        reindex(conn, [])
        assert _index_rows(conn, world.ids["zeta"]) == 0
        assert _index_rows(conn, world.ids["alpha"]) == 2


def test_rebuild_gives_the_same_results(world: World) -> None:
    """rebuild() (used by the migration) indexes exactly what reindex() does."""
    queries = ("apple garden", "a1", '"garden riv"', "garden -apple")
    before = [find(world, en(q)) for q in queries]
    assert all(before)
    with get_write_engine().begin() as conn:
        rebuild(conn)
    assert [find(world, en(q)) for q in queries] == before


def test_seeder_indexes_what_it_writes(db: Engine) -> None:
    """Seeded records are found by a word of their body: the seeder indexes each chunk."""
    with get_write_engine().begin() as conn:
        clear(conn)
        project = seed(conn, records=300, projects=1, seed_value=1).projects[0]
    with get_engine().connect() as conn:
        expected = conn.execute(text(
            "SELECT COUNT(*) FROM record r WHERE r.project_gid = :p AND NOT EXISTS "
            "(SELECT 1 FROM record_deletion d WHERE d.record_id = r.id) "
            "AND CAST(r.fields AS TEXT) LIKE '%lighthouse%'"), {"p": project.gid}).scalar_one()
        found = search_count(conn, project_gid=project.gid,
                             search=parse_search({"language": "en", "q": "lighthouse"}))
    assert found == expected > 20


# -- robustness: anything the parsers accept runs ------------------------------------------

q_text = st.lists(st.sampled_from(
    ["apple", "gar", "a", "1", "ü", "日本", "+", "-", '"', " ", "  ", "x-y", "'", ";", "--", "*",
     ":", "(", ")", "OR", "NEAR", "^", "\\", "%", "_", "\x00", "\u08a1", "²"]
), max_size=12).map("".join)

valid_leaves = st.sampled_from([
    ["classes", "has", "priced"], ["definition", "is", "x"], ["channel", "has", "web"],
    ["status", "is", "deleted"], ["parent", "is", "x"], ["ancestor", "is", "y"],
    ["value", "is", ["body", "it's"]], ["value", "has", ["tags", 1]], ["value", "<", ["p", 1e300]],
    ["value", ">", ["code", "%"]], ["value", "is_empty", ["a b"]], ["updated_on", ">", [0, "days"]],
    ["created_on", "between", [-1e15, None]], ["validation", "any"],
    ["validation", "not_translated"], ["validation", "is_empty"],
])
valid_filters = st.recursive(
    valid_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda parts: ["and", "", parts]),
        st.lists(inner, max_size=3).map(lambda parts: ["or", "", parts]),
        inner.map(lambda part: ["not", "", part]),
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=q_text, filter_=st.one_of(st.none(), valid_filters),
       language=st.sampled_from(["en", "nl", "x-y"]))
def test_any_parsed_search_runs(world: World, q: str, filter_: Any, language: str) -> None:
    """Every q and filter the parsers accept runs as SQL and stays inside the project."""
    try:
        search = parse_search({"language": language, "q": q, "filter": filter_})
    except SelectionError:
        return
    with get_engine().connect() as conn:
        ids = search_ids(conn, project_gid=world.a, search=search, limit=1000)
    assert {world.names[("records", i)] for i in ids} <= set(LIVE_A) | {"delta"}
