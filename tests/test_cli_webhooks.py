"""``bulkjobs webhooks list|create|delete|deliveries``: a project's webhooks from the command
line, with the API's checks (owners or ops only, URL, events, secret, private addresses
only with WEBHOOKS_ALLOW_PRIVATE=true) and never the secret printed back (typer's
CliRunner, on the test database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bulkjobs.connections import get_synclog
from bulkjobs.settings import get_settings
from cli.main import app
from models import webhook_deliveries
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult
from models.webhooks import EVENTS, Webhook
from tests.worker.helpers import new_job

pytestmark = pytest.mark.services

SECRET = "s3cret-s3cret-s3cret"
PUBLIC_URL = "https://93.184.216.34/hooks"  # an IP literal: no name to resolve


def cli(*args: str, columns: int = 200, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns), **env})


def hooks() -> list[str]:
    with get_engine().connect() as conn:
        return sorted(conn.execute(select(Webhook.gid)).scalars())  # type: ignore[call-overload]


def create(project: str, *args: str, **env: str) -> Any:
    return cli("webhooks", "create", "--project", project, "--url", PUBLIC_URL,
               "--secret", SECRET, "--json", *args, **env)


def test_webhooks_create_list_and_delete(seeded: SeedResult) -> None:
    """create prints the new webhook (all events by default) without its secret, list shows
    it (the gid whole on a narrow terminal), delete removes it; deleting again exits 1."""
    project = seeded.projects[0].gid
    made = create(project)
    assert made.exit_code == 0, made.output
    [hook] = json.loads(made.stdout)
    assert set(hook) == {"gid", "url", "events", "created_by", "created"}
    assert hook["url"] == PUBLIC_URL and hook["events"] == list(EVENTS)
    assert SECRET not in made.output
    listed = cli("webhooks", "list", "--project", project, "--json")
    assert json.loads(listed.stdout) == [hook] and SECRET not in listed.output
    narrow = cli("webhooks", "list", "--project", project, columns=40)
    assert narrow.exit_code == 0 and hook["gid"] in narrow.stdout
    assert cli("webhooks", "list", "--project", seeded.projects[1].gid, "--json").stdout \
        == "[]\n"
    gone = cli("webhooks", "delete", hook["gid"], "--project", project)
    assert gone.exit_code == 0 and "deleted" in gone.stderr
    assert hooks() == []
    again = cli("webhooks", "delete", hook["gid"], "--project", project)
    assert again.exit_code == 1 and "No such webhook" in again.stderr


def test_webhooks_create_takes_events_and_the_secret_from_the_environment(
        seeded: SeedResult) -> None:
    """--event picks the events; the secret may come from BULKJOBS_WEBHOOK_SECRET."""
    result = cli("webhooks", "create", "--project", seeded.projects[0].gid, "--url", PUBLIC_URL,
                 "--event", "job.done", "--json", BULKJOBS_WEBHOOK_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["events"] == ["job.done"]
    with get_engine().connect() as conn:
        assert conn.execute(select(Webhook.secret)).scalar_one() == SECRET  # type: ignore[call-overload]


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "http://127.0.0.1:9/hook"], "WEBHOOKS_ALLOW_PRIVATE"),
    (["--url", "http://10.1.2.3/hook"], "WEBHOOKS_ALLOW_PRIVATE"),
    (["--url", "ftp://93.184.216.34/hook"], "http or https"),
    (["--event", "job.exploded"], "Unknown webhook event"),
    (["--secret", "short"], "secret is 16 to 256"),
])
def test_webhooks_create_refuses_what_the_api_refuses(seeded: SeedResult, args: list[str],
                                                      message: str) -> None:
    """Each refusal exits 1 with the API's reason and makes no webhook."""
    result = create(seeded.projects[0].gid, *args)
    assert result.exit_code == 1
    assert message in result.stderr and result.stdout == ""
    assert hooks() == []


def test_webhooks_create_to_a_private_address_with_allow_private(
        seeded: SeedResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """WEBHOOKS_ALLOW_PRIVATE=true lets a webhook point at the deployment's own network."""
    monkeypatch.setenv("WEBHOOKS_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    try:
        result = create(seeded.projects[0].gid, "--url", "http://127.0.0.1:9/hook")
    finally:
        monkeypatch.delenv("WEBHOOKS_ALLOW_PRIVATE")
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["url"] == "http://127.0.0.1:9/hook"


def test_webhooks_need_a_known_project_and_an_owner(seeded: SeedResult) -> None:
    """An unknown project, or a user who is a member but not an owner, exits 1 with the
    reason; an owner may."""
    project = seeded.projects[0].gid
    unknown = cli("webhooks", "list", "--project", "no-such-project")
    assert unknown.exit_code == 1 and "no project 'no-such-project'" in unknown.stderr
    owner, member = (u.username for u in seeded.users if not u.ops)
    refused = create(project, "--username", member)
    assert refused.exit_code == 1 and "Only an owner" in refused.stderr
    assert hooks() == []
    assert create(project, "--username", owner).exit_code == 0


def test_webhooks_deliveries_lists_each_delivery_and_pages(seeded: SeedResult) -> None:
    """A job's states written to the webhook's outbox are listed newest first (--json with
    their attempts; the table with the delivery id and job token whole), --limit pages with
    the printed cursor; another project's webhook or an unknown one exits 1."""
    project = seeded.projects[0]
    hook = json.loads(create(project.gid).stdout)[0]["gid"]
    token = new_job(get_synclog(), project, "bulk_delete_records", [project.heads[0]])
    with get_write_engine().begin() as conn:
        for event in ("job.processing", "job.done"):
            webhook_deliveries.outbox(conn, token, event)
    result = cli("webhooks", "deliveries", hook, "--project", project.gid, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [(d["event"], d["job"], d["status"], d["attempts"]) for d in found] == [
        ("job.done", token, "pending", []), ("job.processing", token, "pending", [])]
    narrow = cli("webhooks", "deliveries", hook, "--project", project.gid, columns=40)
    assert narrow.exit_code == 0
    assert token in narrow.stdout and found[0]["delivery"] in narrow.stdout
    first = cli("webhooks", "deliveries", hook, "--project", project.gid, "--json",
                "--limit", "1")
    assert [d["event"] for d in json.loads(first.stdout)] == ["job.done"]
    cursor = first.stderr.split("--cursor", 1)[1].split()[0]
    rest = cli("webhooks", "deliveries", hook, "--project", project.gid, "--json",
               "--limit", "1", "--cursor", cursor)
    assert [d["event"] for d in json.loads(rest.stdout)] == ["job.processing"]
    bad = cli("webhooks", "deliveries", hook, "--project", project.gid, "--cursor", "%%%")
    assert bad.exit_code == 2 and "invalid page.cursor" in bad.stderr
    other = cli("webhooks", "deliveries", hook, "--project", seeded.projects[1].gid)
    assert other.exit_code == 1 and "no webhook" in other.stderr
    unknown = cli("webhooks", "deliveries", "nope", "--project", project.gid)
    assert unknown.exit_code == 1 and "no webhook" in unknown.stderr
