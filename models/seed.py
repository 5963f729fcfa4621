"""Demo data, written with bulk inserts so that a million records take seconds, not minutes.

Shape of each project's tree (``n`` records in all, the root included):

* the root;
* *heads*: children of the root, each the top of a subtree of up to 100 records
  (the head, 9 children, 9 × 10 grandchildren);
* every tenth subtree is soft-deleted (deleted together, as one deletion of its head);
* a few links under the root point at the first child of every hundredth subtree;
* every ninth record's text (an article's body, a section's summary) carries one more word
  (``MARKER``: "lighthouse" / "vuurtoren"),
  so that about a ninth of the records — some 100,000 live ones in a million — share a search
  term (``bench/selection.py`` resolves that search); ``marker_every`` changes the nine
  (``1``: every record but the root, which has no text, so that one search selects them
  all, each as its own item: ``bench/catalogue.py``).

Record ids are assigned here (not by the database) so that materialised paths can be written
in the same insert; PostgreSQL's sequence is moved past them afterwards.  Every record gets
version 0; every fiftieth record has two more versions.  Rows are generated and inserted in
chunks, so memory stays flat whatever ``n`` is; each chunk is added to the search index
(:func:`models.search.index.reindex_range`) right after it is written.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, select, text

from bulkjobs.tokens import api_key_digest, hash_password, new_api_key
from models.auth import ALL_CHANNEL, ApiKey, Member, Project, User
from models.history import version_id
from models.records import Record
from models.schema import SchemaItem
from models.search.index import reindex_range

SUBTREE = 100
CHUNK = 5000
LANGUAGES = ["en", "nl"]

WORDS = {
    "en": (
        "apple garden river stone summer winter kitchen market bridge harbour window"
        " letter mountain forest candle silver copper engine meadow island valley"
        " lantern compass ticket blanket pepper orange violet thunder whisper anchor"
    ).split(),
    "nl": (
        "appel tuin rivier steen zomer winter keuken markt brug haven raam brief berg"
        " bos kaars zilver koper motor weide eiland vallei lantaarn kompas kaartje deken"
        " peper oranje paars donder fluistering anker"
    ).split(),
}

MARKER = {"en": "lighthouse", "nl": "vuurtoren"}
MARKER_EVERY = 9

Progress = Callable[[int], None]


@dataclass
class SeededProject:
    gid: str
    api_key: str
    root: str
    languages: list[str]
    records: int = 0
    heads: list[str] = field(default_factory=list)


@dataclass
class SeededUser:
    username: str
    password: str
    gid: str
    ops: bool


@dataclass
class SeedResult:
    projects: list[SeededProject]
    users: list[SeededUser]

    def as_json(self) -> dict[str, Any]:
        return {
            "projects": [
                {"gid": p.gid, "api_key": p.api_key, "root": p.root, "languages": p.languages}
                for p in self.projects
            ],
            "users": [
                {"username": u.username, "password": u.password, "gid": u.gid, "ops": u.ops}
                for u in self.users
            ],
        }


def new_gid() -> str:
    return str(uuid.uuid4())


def seed(
    conn: Connection, *, records: int = 1000, projects: int = 1, seed_value: int | None = None,
    progress: Progress | None = None, deleted_every: int = 10,
    marker_every: int = MARKER_EVERY,
) -> SeedResult:
    """Create demo users, projects, schema items and ``records`` records per project."""
    rng = random.Random(seed_value)
    now = time.time()
    users = _seed_users(conn, rng)
    owner, member, ops = users
    out: list[SeededProject] = []
    for index in range(projects):
        project = _seed_project(conn, index, owner, member, now)
        defs = _seed_schema(conn, project.gid, now)
        _seed_records(
            conn, project, records, defs, rng, now, progress=progress,
            deleted_every=deleted_every, marker_every=marker_every,
        )
        out.append(project)
    if conn.dialect.name == "postgresql":
        conn.execute(text(
            "SELECT setval(pg_get_serial_sequence('record', 'id'), "
            "(SELECT COALESCE(MAX(id), 1) FROM record))"
        ))
        conn.execute(text(
            "SELECT setval(pg_get_serial_sequence('schema_item', 'id'), "
            "(SELECT COALESCE(MAX(id), 1) FROM schema_item))"
        ))
        # Fresh statistics: without them the planner takes the freshly loaded search index
        # and record table for nearly empty and picks nested loops over a million rows.
        conn.execute(text("ANALYZE record"))
        conn.execute(text("ANALYZE record_search"))
    return SeedResult(out, users)


def _unique_username(conn: Connection, base: str) -> str:
    taken = {r[0] for r in conn.execute(
        select(User.username).where(User.username.like(f"{base}%"))
    )}
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _seed_users(conn: Connection, rng: random.Random) -> list[SeededUser]:
    users = []
    for base, name, ops in (("owner", "Olivia Owner", False), ("member", "Max Member", False),
                            ("ops", "Otto Ops", True)):
        username = _unique_username(conn, base)
        password = f"{base}-" + "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789")
                                        for _ in range(10))
        gid = new_gid()
        conn.execute(insert(User).values(
            gid=gid, username=username, name=name, password_hash=hash_password(password), ops=ops,
        ))
        users.append(SeededUser(username, password, gid, ops))
    return users


def _seed_project(
    conn: Connection, index: int, owner: SeededUser, member: SeededUser, now: float
) -> SeededProject:
    gid = new_gid()
    channels = {ALL_CHANNEL: "[all records]", new_gid(): "Web", new_gid(): "Print"}
    orderings = {new_gid(): "Alphabetical", new_gid(): "Newest first"}
    conn.execute(insert(Project).values(
        gid=gid, name=f"Demo project {index + 1}", status="active", languages=LANGUAGES,
        channels=channels, orderings=orderings, created_on=now,
    ))
    conn.execute(insert(Member), [
        {"project_gid": gid, "user_gid": owner.gid, "roles": ["owner"], "status": "active"},
        {"project_gid": gid, "user_gid": member.gid, "roles": ["member"], "status": "active"},
    ])
    key = new_api_key()
    conn.execute(insert(ApiKey).values(
        key_hash=api_key_digest(key), user_gid=owner.gid, project_gid=gid, created_on=now,
    ))
    return SeededProject(gid=gid, api_key=key, root="", languages=list(LANGUAGES))


def _seed_schema(conn: Connection, project_gid: str, now: float) -> dict[str, str]:
    """A base definition, an article and a section definition, their classes and fields."""
    gids = {k: new_gid() for k in ("base", "section", "article", "cls_article",
                                   "cls_common", "f_body", "f_price", "f_summary",
                                   "layout_article")}

    def item(key: str, type_: str, name: str, label: str, **extra: Any) -> dict[str, Any]:
        return {
            "gid": gids[key], "project_gid": project_gid, "type": type_, "name": name,
            "label": {"en": label, "nl": label}, "is_new": False, "is_working_copy": False,
            "original": None, "is_base": False, "is_extended": False, "classes": [],
            "fields": [], "layout": None, "body": {}, "created_on": now, "updated_on": now,
            **extra,
        }

    conn.execute(insert(SchemaItem), [
        item("f_body", "field", "body", "Body", body={"type": "textline", "is_localized": True}),
        item("f_price", "field", "price", "Price", body={"type": "number", "is_localized": False}),
        item("f_summary", "field", "summary", "Summary",
             body={"type": "textline", "is_localized": True}),
        item("cls_common", "class", "common", "Common", fields=[gids["f_summary"]]),
        item("cls_article", "class", "article", "Article",
             fields=[gids["f_body"], gids["f_price"]]),
        item("layout_article", "layout", "article", "Article layout",
             body={"root": {"type": "vertical", "components": []}}),
        item("base", "definition", "base", "Base", is_base=True),
        item("section", "definition", "section", "Section", classes=[gids["cls_common"]]),
        item("article", "definition", "article", "Article",
             classes=[gids["cls_common"], gids["cls_article"]], layout=gids["layout_article"]),
    ])
    return gids


RECORD_COLUMNS = (
    "id", "gid", "project_gid", "parent_id", "canonical_id", "is_link", "treelevel", "mpath",
    "childcount", "definition", "title", "fields", "status", "channels", "orderings",
    "created_on", "updated_on",
)
DELETION_COLUMNS = ("record_id", "deleted_root")
VERSION_COLUMNS = (
    "id", "record_id", "number", "created_at", "editor", "comment", "snapshot", "is_published",
    "is_current",
)
POOL = 4096  # distinct random bodies/title words, cycled: randomness is not the point here


def _seed_records(
    conn: Connection, project: SeededProject, n: int, defs: dict[str, str], rng: random.Random,
    now: float, *, progress: Progress | None, deleted_every: int, marker_every: int,
) -> None:
    channel_keys = list(conn.execute(
        select(Project.channels).where(Project.gid == project.gid)
    ).scalar_one())
    ordering_keys = list(conn.execute(
        select(Project.orderings).where(Project.gid == project.gid)
    ).scalar_one())
    start = (conn.execute(select(func.max(Record.id))).scalar() or 0) + 1
    rows = _record_rows(project, n, start, defs, rng, now, channel_keys, ordering_keys,
                        deleted_every, marker_every)
    written = 0
    batch: list[tuple[Any, ...]] = []
    versions: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        versions.extend(_versions_for(row, now))
        if len(batch) >= CHUNK:
            _flush(conn, batch, versions)
            written += len(batch)
            batch, versions = [], []
            if progress:
                progress(written)
    if batch:
        _flush(conn, batch, versions)
        written += len(batch)
        if progress:
            progress(written)
    project.records = written


def _flush(conn: Connection, batch: list[tuple[Any, ...]], versions: list[tuple[Any, ...]]) -> None:
    """Write rows straight through the driver: COPY on PostgreSQL, executemany on SQLite;
    then index the chunk's records (their ids are consecutive) in one set-based statement.
    A record row is ``RECORD_COLUMNS`` followed by its delete generation (or ``None``)."""
    records = [row[:-1] for row in batch]
    deletions = [(row[0], row[-1]) for row in batch if row[-1] is not None]
    for table, columns, rows in (("record", RECORD_COLUMNS, records),
                                 ("record_deletion", DELETION_COLUMNS, deletions),
                                 ("record_version", VERSION_COLUMNS, versions)):
        if not rows:
            continue
        if conn.dialect.name == "postgresql":
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            conn.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )
    if batch:
        reindex_range(conn, batch[0][0], batch[-1][0])


def _versions_for(row: tuple[Any, ...], now: float) -> list[tuple[Any, ...]]:
    rid, title, fields, definition, channels = row[0], row[10], row[11], row[9], row[13]
    status = row[12]
    count = 3 if rid % 50 == 0 else 1
    out = []
    for number in range(count):
        draft = f' (draft {number + 1})"}}'
        snap_title = title if number == count - 1 else title.replace('"}', draft)
        snapshot = (f'{{"title":{snap_title},"fields":{fields},"definition":"{definition}",'
                    f'"channels":{channels},"status":"{status}"}}')
        out.append((
            version_id(), rid, number, now - (count - number) * 60,
            '{"type":"user","id":"seed"}', "Initial version" if number == 0 else f"Edit {number}",
            # the latest version is the one a published record was published at
            snapshot, status == "published" and number == count - 1, number == count - 1,
        ))
    return out


def _record_rows(
    project: SeededProject, n: int, start: int, defs: dict[str, str], rng: random.Random,
    now: float, channel_keys: list[str], ordering_keys: list[str], deleted_every: int,
    marker_every: int,
) -> Iterator[tuple[Any, ...]]:
    """Yield record rows (in ``RECORD_COLUMNS`` order, JSON pre-serialised, then the delete
    generation) in id order: root, then subtrees of up to 100, then links."""
    next_id = start
    root_gid = new_gid()
    project.root = root_gid
    links = n // (SUBTREE * 100)  # one per 10,000 records
    budget = max(0, n - 1 - links)
    heads = (budget + SUBTREE - 1) // SUBTREE
    links = min(links, (heads + 99) // 100)
    root_id = next_id
    next_id += 1
    words = {lang: [rng.choice(WORDS[lang]) for _ in range(POOL)] for lang in LANGUAGES}
    bodies = {lang: [" ".join(rng.choice(WORDS[lang]) for _ in range(6)) for _ in range(POOL)]
              for lang in LANGUAGES}
    web, printed = channel_keys[1], channel_keys[2]
    alpha, newest = ordering_keys

    def row(
        gid: str, rid: int, parent: int | None, mpath: str, level: int, childcount: int,
        definition: str, counter: int, deleted_root: int | None = None,
        canonical: int | None = None, position: int = 0,
    ) -> tuple[Any, ...]:
        status = "published" if counter % 3 else "draft"
        chans = '["__all__"' + (f',"{web}"' if counter % 2 == 0 else "") + (
            f',"{printed}"' if counter % 5 == 0 else "") + "]"
        k = (counter * 2654435761) % POOL
        en1, en2 = words["en"][k], words["en"][(k + 7) % POOL]
        nl1, nl2 = words["nl"][k], words["nl"][(k + 7) % POOL]
        title = (f'{{"en":"{en1.capitalize()} {en2} {counter}",'
                 f'"nl":"{nl1.capitalize()} {nl2} {counter}"}}')
        price = counter % 1000
        body_en, body_nl = bodies["en"][k], bodies["nl"][k]
        if marker_every and counter % marker_every == 0:
            body_en, body_nl = f"{body_en} {MARKER['en']}", f"{body_nl} {MARKER['nl']}"
        # Each record has the fields of its definition's classes: articles body, price and
        # summary; sections only a summary (which carries their text); the root none.
        if definition == defs["article"]:
            fields = (f'{{"en":{{"body":"{body_en}","price":{price},"summary":""}},'
                      f'"nl":{{"body":"{body_nl}","price":{price},"summary":""}}}}')
        elif definition == defs["section"]:
            fields = f'{{"en":{{"summary":"{body_en}"}},"nl":{{"summary":"{body_nl}"}}}}'
        else:
            fields = '{"en":{},"nl":{}}'
        return (
            rid, gid, project.gid, parent, canonical, canonical is not None, level, mpath,
            childcount, definition, title, fields, status, chans,
            f'{{"{alpha}":{position},"{newest}":{-position}}}', now, now, deleted_root,
        )

    yield row(root_gid, root_id, None, f"/{root_id}/", 0, heads + links, defs["base"], 0)
    counter = 1
    remaining = budget
    link_targets: list[int] = []
    for h in range(heads):
        size = min(SUBTREE, remaining)
        remaining -= size
        head_id = next_id
        head_path = f"/{root_id}/{head_id}/"
        deleted = head_id if deleted_every and h % deleted_every == deleted_every - 1 else None
        kids = min(9, size - 1)
        head_gid = new_gid()
        project.heads.append(head_gid)
        yield row(head_gid, head_id, root_id, head_path, 1, kids, defs["section"], counter,
                  deleted, position=heads - h)
        next_id += 1
        counter += 1
        left = size - 1 - kids
        child_ids = list(range(next_id, next_id + kids))
        next_id += kids
        grand_counts = [min(10, max(0, left - 10 * i)) for i in range(kids)]
        for i, cid in enumerate(child_ids):
            yield row(new_gid(), cid, head_id, f"{head_path}{cid}/", 2, grand_counts[i],
                      defs["section"], counter, deleted, position=kids - i)
            counter += 1
        if h % 100 == 0 and child_ids and not deleted:
            link_targets.append(child_ids[0])
        for i, cid in enumerate(child_ids):
            for j in range(grand_counts[i]):
                gid = next_id
                next_id += 1
                yield row(new_gid(), gid, cid, f"{head_path}{cid}/{gid}/", 3, 0,
                          defs["article"], counter, deleted, position=grand_counts[i] - j)
                counter += 1
    for target in link_targets[:links]:
        lid = next_id
        next_id += 1
        yield row(new_gid(), lid, root_id, f"/{root_id}/{lid}/", 1, 0, defs["article"], counter,
                  canonical=target)
        counter += 1
