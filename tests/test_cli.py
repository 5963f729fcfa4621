"""The ``bulkjobs`` command line (SPEC §12), through typer's CliRunner and as a real
subprocess: seed's JSON, tokens, submitting (and a rejected selection), listing jobs, users,
API keys and stats — each on the test database, which the commands migrate themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from typer.testing import CliRunner

from bulkjobs.errors import Unauthorized
from bulkjobs.tokens import api_key_digest, verify
from cli.main import app
from models import Job
from models.accounts import user_for_api_key, user_for_password
from models.auth import ApiKey, Member, User
from models.engine import get_engine

pytestmark = pytest.mark.services

BULKJOBS = Path(sys.executable).parent / "bulkjobs"

#: Wide enough for tables to show every column whole.
WIDE = {"COLUMNS": "200"}


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


@pytest.fixture
def demo(services) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """``bulkjobs seed --records 30 --projects 2 --json``'s output, parsed."""
    result = cli("seed", "--records", "30", "--projects", "2", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_seed_json_prints_one_object_of_the_contracted_shape(demo):
    """--json prints exactly {"projects": [{gid, api_key, root, languages}], "users": [{username,
    password, gid, ops}]} with an owner, a member and one ops user."""
    assert set(demo) == {"projects", "users"}
    assert len(demo["projects"]) == 2
    for project in demo["projects"]:
        assert set(project) == {"gid", "api_key", "root", "languages"}
        assert isinstance(project["languages"], list) and project["languages"]
    assert [set(u) for u in demo["users"]] == [{"username", "password", "gid", "ops"}] * 3
    assert [u["ops"] for u in demo["users"]].count(True) == 1


def test_token_prints_a_jwt_of_that_user(demo):
    """`token --username` prints a JWT whose subject (and ops claim) is that user."""
    ops_user = next(u for u in demo["users"] if u["ops"])
    result = cli("token", "--username", ops_user["username"])
    assert result.exit_code == 0
    claims = verify(result.stdout.strip())
    assert claims.user == ops_user["gid"] and claims.ops is True
    assert cli("token", "--username", "nobody").exit_code == 1


def test_submit_queues_a_job_and_jobs_list_shows_it(demo):
    """`submit` prints the job token of a queued job; `jobs list` lists it."""
    project = demo["projects"][0]
    result = cli("submit", "bulk_delete_records", "--project", project["gid"],
                 "--selection", json.dumps([{"children": project["root"]}]))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    with get_engine().connect() as conn:
        status = conn.execute(select(Job.status).where(Job.token == token)).scalar_one()
    # queued, unless a worker of the end-to-end tests' session took it already
    assert status in ("queued", "processing", "done")
    listing = cli("jobs", "list", "--project", project["gid"])
    assert listing.exit_code == 0 and token[:8] in listing.stdout


@pytest.mark.parametrize(("selection", "message"), [
    ('[{"bad": 1}]', "entry 0"),
    ('{"not": "a list"}', "Selection"),
    ("not json", "not JSON"),
])
def test_submit_with_a_bad_selection_exits_non_zero_and_queues_nothing(demo, selection, message):
    """A selection error (1006) or unparsable JSON is reported and nothing is queued."""
    result = cli("submit", "bulk_delete_records", "--project", demo["projects"][0]["gid"],
                 "--selection", selection)
    assert result.exit_code != 0
    assert message in result.stderr
    assert result.stdout == ""
    assert jobs_count() == 0


def test_submit_to_an_unknown_project_is_refused(demo):
    """A project that does not exist is refused before anything is written."""
    result = cli("submit", "bulk_delete_records", "--project", "no-such-project",
                 "--selection", "[]")
    assert result.exit_code != 0 and jobs_count() == 0


def test_users_add_creates_a_member_who_can_log_in(demo):
    """`users add` creates the user with a hashed password and active memberships."""
    project = demo["projects"][0]["gid"]
    result = cli("users", "add", "carol", "--password", "s3cret", "--name", "Carol",
                 "--project", project, "--role", "owner")
    assert result.exit_code == 0, result.output
    gid = result.stdout.strip()
    with Session(get_engine()) as session:
        assert user_for_password(session, username="carol", password="s3cret").gid == gid
        member = session.get(Member, (project, gid))
    assert member is not None and member.status == "active" and member.roles == ["owner"]
    again = cli("users", "add", "carol", "--password", "x")
    assert again.exit_code == 1 and "exists" in again.stderr
    listing = cli("users", "list")
    assert listing.exit_code == 0 and "carol" in listing.stdout


def test_users_add_reads_the_password_from_the_environment(demo):
    """Without --password the password comes from BULKJOBS_PASSWORD (or a prompt)."""
    result = cli("users", "add", "dave", env={"BULKJOBS_PASSWORD": "from-env"})
    assert result.exit_code == 0, result.output
    with Session(get_engine()) as session:
        assert user_for_password(session, username="dave", password="from-env")


def test_apikeys_add_prints_a_working_key_once(demo):
    """`apikeys add` prints a key that opens the project; `apikeys list` never shows it."""
    owner = demo["users"][0]["username"]
    project = demo["projects"][1]["gid"]
    result = cli("apikeys", "add", "--username", owner, "--project", project, "--name", "ci")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    with Session(get_engine()) as session:
        assert user_for_api_key(session, project_gid=project, api_key=key).username == owner
    listing = cli("apikeys", "list", "--username", owner)
    assert listing.exit_code == 0 and "ci" in listing.stdout and key not in listing.stdout


def test_stats_as_json_and_as_a_table(demo):
    """`stats` shows queue depth, workers, jobs by status and throughput."""
    project = demo["projects"][0]
    cli("submit", "bulk_delete_records", "--project", project["gid"], "--selection", "[]")
    result = cli("stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert sum(stats["jobs"].values()) == 1  # queued, or run by an end-to-end test's worker
    assert set(stats) >= {"queue_depth", "workers", "jobs", "throughput"}
    table = cli("stats")
    assert table.exit_code == 0 and "queue depth" in table.stdout


def test_as_a_subprocess_seed_json_is_alone_on_stdout_and_errors_exit_non_zero(services):
    """The installed entry point: seed --json prints only the JSON object on stdout; a bad
    selection exits 2 with the reason on stderr; users add works non-interactively."""
    env = dict(os.environ)
    seeded = subprocess.run([str(BULKJOBS), "seed", "--records", "20", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    lines = seeded.stdout.splitlines()
    assert len(lines) == 1
    demo = json.loads(lines[0])
    project = demo["projects"][0]["gid"]
    bad = subprocess.run([str(BULKJOBS), "submit", "bulk_delete_records", "--project", project,
                          "--selection", '[{"children": 5}]'], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "entry 0" in bad.stderr
    added = subprocess.run([str(BULKJOBS), "users", "add", "erin", "--project", project],
                           env={**env, "BULKJOBS_PASSWORD": "pw"}, capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([str(BULKJOBS), "jobs", "list"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "token" in listed.stdout


@pytest.mark.parametrize(("pairs", "params"), [
    ([], {}),
    (["version=3"], {"version": 3}),
    (["version_id=9b2c-not-json"], {"version_id": "9b2c-not-json"}),
    (['version="3"'], {"version": "3"}),
    (['opts={"a": [1, true]}', "flag=false"], {"opts": {"a": [1, True]}, "flag": False}),
    (["note=a=b"], {"note": "a=b"}),
    (["empty="], {"empty": ""}),
])
def test_parse_params_reads_json_values_and_falls_back_to_text(pairs, params):
    """--param KEY=VALUE: the value is JSON when it parses, else the text."""
    from cli.jobs import parse_params

    assert parse_params(pairs) == params


@pytest.mark.parametrize("pair", ["no-equals", "=3", "selection=[]"])
def test_parse_params_refuses_malformed_pairs_and_the_selection(pair):
    """A pair without a key, or one naming the selection (that is --selection), is refused."""
    from cli.jobs import parse_params

    with pytest.raises(ValueError):
        parse_params([pair])


def test_submit_with_a_bad_param_exits_2_and_queues_nothing(demo):
    """A malformed --param is reported before anything is queued."""
    result = cli("submit", "bulk_delete_records", "--project", demo["projects"][0]["gid"],
                 "--selection", "[]", "--param", "oops")
    assert result.exit_code == 2 and "--param" in result.stderr
    assert jobs_count() == 0


def _record_with_history(project_gid: str) -> tuple[str, list[Any]]:
    """A live record of the seed with three versions (numbers 0, 1, 2) and those versions."""
    from tests.worker.helpers import records, versions

    rec = next(r for r in records(project_gid).values()
               if r.status != "deleted" and len(versions(r.id)) == 3)
    return rec.gid, versions(rec.id)


@pytest.mark.parametrize(("job", "param", "comment"), [
    ("restore_record_version", lambda v: f"version={v.id}", "Restored version 0"),
    ("revert_record_version", lambda v: "version=0", "Reverted to revision 0"),
])
def test_submit_a_version_restore_with_its_version_param(seeded, job, param, comment):
    """`submit restore_record_version|revert_record_version --param version=…` queues the job
    with that parameter beside the selection, and the job (run here in-process) makes
    version 0 the record's content again."""
    from bulkjobs.connections import get_synclog
    from tests.worker.helpers import cfg, job_row, records, run_to_end, versions

    project = seeded.projects[0]
    gid, history = _record_with_history(project.gid)
    first = history[0]
    assert records(project.gid)[gid].title != first.snapshot["title"]
    result = cli("submit", job, "--project", project.gid, "--selection", json.dumps([gid]),
                 "--param", param(first))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    row = job_row(token)
    expected = first.id if job == "restore_record_version" else 0
    assert row.params == {"selection": [gid], "version": expected}
    assert run_to_end(token, get_synclog(), cfg())[-1] == "done"
    assert job_row(token).status == "done"
    after = records(project.gid)[gid]
    assert after.title == first.snapshot["title"]
    latest = versions(after.id)[-1]
    assert latest.number == 3 and latest.comment == comment


def test_jobs_cancel_rejects_a_queued_job_and_refuses_an_unknown_one(demo):
    """`jobs cancel <token>` ends a job nobody runs yet as rejected with error "cancelled"
    (and says so); an unknown token exits 1."""
    from tests.worker.helpers import job_row

    project = demo["projects"][0]
    submitted = cli("submit", "bulk_delete_records", "--project", project["gid"],
                    "--selection", json.dumps([{"children": project["root"]}]))
    token = submitted.stdout.strip()
    result = cli("jobs", "cancel", token)
    assert result.exit_code == 0, result.output
    assert f"job {token}: rejected" in result.stderr
    row = job_row(token)
    assert row.status == "rejected" and row.info["error"] == "cancelled"
    listing = cli("jobs", "list", "--status", "rejected")
    assert token[:8] in listing.stdout
    unknown = cli("jobs", "cancel", "no-such-job")
    assert unknown.exit_code == 1 and "no job" in unknown.stderr


def test_apikeys_add_and_list_show_the_key_id_and_revoke_deletes_the_key(demo):
    """`apikeys add` names the new key's id (on stderr; stdout is the key alone), `apikeys
    list` shows it, and `apikeys revoke <id>` removes the key: it opens nothing, it leaves
    the listing, and revoking it again (or an unknown id) exits 1."""
    owner = demo["users"][0]["username"]
    project = demo["projects"][1]["gid"]
    result = cli("apikeys", "add", "--username", owner, "--project", project, "--name", "ci")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    with Session(get_engine()) as session:
        key_id = session.execute(select(ApiKey.key_id).where(
            ApiKey.key_hash == api_key_digest(key))).scalar_one()
    assert f"id {key_id}" in result.stderr
    assert key_id in cli("apikeys", "list", "--username", owner, env=WIDE).stdout
    revoked = cli("apikeys", "revoke", key_id)
    assert revoked.exit_code == 0 and "revoked" in revoked.stderr
    with Session(get_engine()) as session, pytest.raises(Unauthorized):
        user_for_api_key(session, project_gid=project, api_key=key)
    assert key_id not in cli("apikeys", "list", env=WIDE).stdout
    again = cli("apikeys", "revoke", key_id)
    assert again.exit_code == 1 and "no API key" in again.stderr


def test_users_disable_enable_and_remove_ops_change_the_user_row(demo):
    """`users disable` marks the user disabled and bumps their token version (and `users
    list` says so), `users enable` clears the flag only, `users remove-ops` clears ops;
    `token` refuses a disabled user; an unknown user exits 1 for each."""
    member = next(u for u in demo["users"] if not u["ops"])
    ops_user = next(u for u in demo["users"] if u["ops"])
    assert cli("users", "disable", member["username"]).exit_code == 0
    with Session(get_engine()) as session:
        row = session.get(User, member["gid"])
        assert row is not None and row.disabled and row.token_version == 1
    listing = cli("users", "list", env=WIDE).stdout
    assert "disabled" in listing and member["username"] in listing  # a column of its own
    refused = cli("token", "--username", member["username"])
    assert refused.exit_code == 1 and "disabled" in refused.stderr
    assert cli("users", "enable", member["username"]).exit_code == 0
    assert cli("users", "remove-ops", ops_user["username"]).exit_code == 0
    with Session(get_engine()) as session:
        row = session.get(User, member["gid"])
        assert row is not None and not row.disabled and row.token_version == 1
        ops_row = session.get(User, ops_user["gid"])
        assert ops_row is not None and not ops_row.ops and ops_row.token_version == 0
    for command in ("disable", "enable", "remove-ops"):
        unknown = cli("users", command, "nobody")
        assert unknown.exit_code == 1 and "no user" in unknown.stderr


def test_every_listing_has_json_and_prints_tokens_whole(demo):
    """`jobs list`, `users list` and `apikeys list` take --json (one array of objects keyed
    by column); in a table on a narrow terminal tokens, gids and ids are printed whole."""
    project = demo["projects"][0]
    token = cli("submit", "bulk_delete_records", "--project", project["gid"],
                "--selection", json.dumps([{"children": project["root"]}])).stdout.strip()
    jobs = json.loads(cli("jobs", "list", "--json").stdout)
    assert [j["token"] for j in jobs] == [token]
    assert jobs[0]["status"] == "queued" and jobs[0]["project"] == project["gid"]
    narrow = cli("jobs", "list", env={"COLUMNS": "40"})
    assert narrow.exit_code == 0 and token in narrow.stdout and project["gid"] in narrow.stdout
    users = json.loads(cli("users", "list", "--json").stdout)
    assert sorted(u["username"] for u in users) == sorted(u["username"] for u in demo["users"])
    assert all(u["gid"] in cli("users", "list", env={"COLUMNS": "40"}).stdout for u in users)
    keys = json.loads(cli("apikeys", "list", "--json").stdout)
    assert {k["project"] for k in keys} == {p["gid"] for p in demo["projects"]}
    assert all(set(k) == {"id", "name", "user", "project", "created"} for k in keys)


def test_jobs_list_refuses_an_unknown_status(demo):
    result = cli("jobs", "list", "--status", "bogus")
    assert result.exit_code == 2
    assert "bogus" in result.output and "queued" in result.output


def test_jobs_cancel_of_a_finished_job_says_so_and_exits_1(demo):
    project = demo["projects"][0]
    token = cli("submit", "bulk_delete_records", "--project", project["gid"],
                "--selection", json.dumps([{"children": project["root"]}])).stdout.strip()
    assert cli("jobs", "cancel", token).exit_code == 0  # queued: cancelled, now rejected
    again = cli("jobs", "cancel", token)
    assert again.exit_code == 1
    assert "has finished (rejected)" in again.stderr
