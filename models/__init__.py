"""Tables, engine, queries and selection resolution.  Every table is re-exported here."""

from models.auth import ALL_CHANNEL, ApiKey, Member, Project, User
from models.failures import JobFailure
from models.idempotency import IdempotencyKey
from models.jobs import Job, JobItem, ReadToken
from models.outbox import SyncOutbox
from models.pauses import JobPause
from models.records import Record, RecordDeletion, RecordTombstone
from models.schema import SchemaItem
from models.versions import RecordVersion, WorkflowEntry
from models.webhook_deliveries import WebhookAttempt, WebhookDelivery
from models.webhooks import Webhook

__all__ = [
    "ALL_CHANNEL", "ApiKey", "IdempotencyKey", "Job", "JobFailure", "JobItem", "JobPause",
    "Member", "Project", "ReadToken", "Record", "RecordDeletion", "RecordTombstone",
    "RecordVersion", "SchemaItem", "SyncOutbox", "User", "Webhook", "WebhookAttempt",
    "WebhookDelivery", "WorkflowEntry",
]
