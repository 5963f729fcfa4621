"""Unicat-style webhook endpoints: ``webhooks/create|list|delete|deliveries`` (project owners
only).

Thin routes over :mod:`models.webhooks`; the secret is taken on create and never answered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import OwnerDep, SessionDep
from api.unicat.bodies import WebhookBody, WebhookCreateBody, WebhookDeliveriesBody
from api.unicat.envelope import ok
from api.unicat.responses import WebhookDeliveriesOut, WebhookListOut, WebhookOut, answers
from bulkjobs.errors import NotFound
from bulkjobs.settings import get_settings
from models import webhook_deliveries, webhooks

router = APIRouter(prefix="/api/p/{project}", tags=["unicat: webhooks"])


@router.post("/webhooks/create", **answers(WebhookOut))
def webhooks_create(project: str, body: WebhookCreateBody, actor: OwnerDep,
                    session: SessionDep) -> Any:
    """Send the project's job states to a URL (owners only); the secret signs each delivery."""
    hook = webhooks.create(session, project_gid=actor.project.gid, url=body.url,
                           events=body.events, secret=body.secret, user_gid=actor.user,
                           allow_private=get_settings().webhooks_allow_private)
    return ok({"webhook": hook.public()})


@router.post("/webhooks/list", **answers(WebhookListOut))
def webhooks_list(project: str, actor: OwnerDep, session: SessionDep) -> Any:
    """The project's webhooks, without their secrets (owners only)."""
    return ok({"webhooks": [h.public() for h in
                            webhooks.listed(session, project_gid=actor.project.gid)]})


@router.post("/webhooks/delete", **answers(WebhookOut))
def webhooks_delete(project: str, body: WebhookBody, actor: OwnerDep,
                    session: SessionDep) -> Any:
    """Stop sending to a webhook (owners only)."""
    webhooks.remove(session, project_gid=actor.project.gid, gid=body.webhook)
    return ok({"webhook": {"gid": body.webhook}})


@router.post("/webhooks/deliveries", **answers(WebhookDeliveriesOut))
def webhooks_deliveries(project: str, body: WebhookDeliveriesBody, actor: OwnerDep,
                        session: SessionDep) -> Any:
    """A webhook's deliveries, newest first, each with its attempts (owners only)."""
    hook = session.get(webhooks.Webhook, body.webhook)
    if hook is None or hook.project_gid != actor.project.gid:
        raise NotFound("No such webhook", info={"webhook": body.webhook})
    found, cursor = webhook_deliveries.page(session.connection(), webhook_gid=hook.gid,
                                            size=body.page_size, cursor=body.page_cursor)
    session.commit()
    return ok({"deliveries": found, "page.cursor": cursor})
