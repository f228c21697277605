"""The API's OpenAPI description, one entry per view (views.py names them by the view: openapi.MESSAGES_LIST),
served at /api/v1/schema/ by drf-spectacular."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from queues import forms
from queues.api import serializers as s
from queues.pgmq import ARCHIVE, LIVE
from queues.selectors import overview

QUEUE_NAME = OpenApiParameter(
    "queue_name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="the queue's name as pgmq.meta has it (URL-encoded)",
)


MSG_ID = OpenApiParameter("msg_id", OpenApiTypes.INT64, OpenApiParameter.PATH)


JOB_ID = OpenApiParameter(
    "job_id",
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": forms.MAX_MSG_ID},
    OpenApiParameter.PATH,
    description="as POST .../jobs/ answered it",
)


ERRORS = {400: s.ErrorSerializer, 401: s.ErrorSerializer, 404: s.ErrorSerializer}


WRITE_ERRORS = {
    **ERRORS,
    403: s.ErrorSerializer,
    409: OpenApiResponse(
        s.ConflictSerializer,
        description="this request_token was used before: nothing was done again; or the queue (or "
        "the destination) shares its tables with another name: nothing was done",
    ),
}


OVERVIEW_PARAMETERS = [
    OpenApiParameter("q", OpenApiTypes.STR, description="queues whose name contains this, any case"),
    OpenApiParameter(
        "sort",
        OpenApiTypes.STR,
        enum=[key for key, _ in forms.sort_choices(overview.SORT_KEYS)],
        description="a column, or -column for descending",
    ),
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        description=f"{overview.QUEUES_PER_PAGE} queues a page",
    ),
    OpenApiParameter(
        "health",
        OpenApiTypes.STR,
        enum=["ok", "warning", "critical"],
        description="only queues in this state on the pages (the totals count every queue)",
    ),
]


def _filter_parameters() -> list[OpenApiParameter]:
    """The message list's query parameters, from MessageFilterForm itself."""
    described = {
        "source": "live (default), archive, or both as one list",
        "state": "live messages only",
        "message": "JSON the message contains (jsonb @>)",
        "headers": "JSON the headers contain (jsonb @>)",
        "q": "search: `timeout`, `headers:retry`, `message.customer.id:42`, `headers.trace_id:abc*`",
        "task": "a Celery task's name (* a wildcard), as kombu's pgmq transport sends it",
        "task_id": "a Celery task's id",
        "copied_from": "copies the dashboard made from this queue (`orders`) or message (`orders #117`)",
        "sort": "a column, or -column for descending (-msg_id by default)",
        "after": "cursor: the page after this place (next_cursor)",
        "before": "cursor: the page before this place (previous_cursor)",
        "from_": "jump: start at this msg_id",
        "last": "the far end of the sort",
    }
    return [
        OpenApiParameter(
            "from" if name == "from_" else name, s.form_field_schema(name, field), description=described.get(name, "")
        )
        for name, field in forms.MessageFilterForm.base_fields.items()
    ]


QUEUE_LIST = {
    "GET": {
        "operation_id": "queues_list",
        "parameters": OVERVIEW_PARAMETERS,
        "responses": {200: s.OverviewSerializer, **ERRORS},
        "summary": "Every queue's figures, as the overview shows them",
    },
    "POST": {
        "operation_id": "queues_create",
        "request": s.CreateQueueRequestSerializer,
        "responses": {201: s.CreateQueueResultSerializer, **WRITE_ERRORS},
        "summary": "Create a queue (pgmq.create, or pgmq.create_unlogged): admins",
        "description": "Recorded in the audit log. A name pgmq refuses, or one differing from an "
        "existing queue's only by case (pgmq would give both one table), is a 400.",
    },
}


QUEUE_DETAIL = {
    "operation_id": "queues_retrieve",
    "parameters": [QUEUE_NAME],
    "responses": {200: s.QueueSerializer, **ERRORS},
    "summary": "One queue's figures, as its page shows them",
}


QUEUE_HISTORY = {
    "operation_id": "queues_history",
    "responses": {200: s.HistorySerializer, **ERRORS},
    "summary": "A queue's metric history (the sampler's samples), as the queue page charts it",
    "parameters": [
        QUEUE_NAME,
        OpenApiParameter(
            "range", OpenApiTypes.STR, enum=list(forms.RANGES), description="how far back (1h by default)"
        ),
    ],
}


MESSAGE_LIST = {
    "operation_id": "messages_list",
    "parameters": [QUEUE_NAME, *_filter_parameters()],
    "responses": {200: s.MessagePageSerializer, **ERRORS},
    "summary": "A page of messages: the message browser's filters and keyset cursors",
}


MESSAGE_DETAIL = {
    "operation_id": "messages_retrieve",
    "responses": {200: s.MessageDetailSerializer, 413: s.ErrorSerializer, **ERRORS},
    "summary": "One message, whole, from the live table or else the archive",
    "description": "A payload over 1 MiB of JSON is streamed from the database into the answer; one over "
    "DASHBOARD_DOWNLOAD_MAX_BYTES is refused (413) with the SQL that fetches the row.",
    "parameters": [
        QUEUE_NAME,
        MSG_ID,
        OpenApiParameter("source", OpenApiTypes.STR, enum=[LIVE, ARCHIVE], description="look only there"),
    ],
}


MESSAGE_ACTION = {
    "operation_id": "messages_act",
    "parameters": [QUEUE_NAME],
    "request": s.ActionRequestSerializer,
    "responses": {200: s.ActionResultSerializer, **WRITE_ERRORS},
    "summary": "Retry, delay, archive, delete or move live messages; requeue or delete archived ones",
    "description": "Acts on the msg_ids given, at once (what the page's dialog does once confirmed), in one "
    "transaction, recorded in the audit log with the API user's name.",
}


SEND_MESSAGE = {
    "operation_id": "messages_send",
    "parameters": [QUEUE_NAME],
    "request": s.SendRequestSerializer,
    "responses": {201: s.SendResultSerializer, **WRITE_ERRORS},
    "summary": "Send a message (pgmq.send), recorded in the audit log",
    "description": "The message's numbers reach pgmq exactly as written in the request.",
}


PURGE_QUEUE = {
    "operation_id": "queues_purge",
    "parameters": [QUEUE_NAME],
    "request": s.TypedConfirmationSerializer,
    "responses": {200: s.PurgeResultSerializer, **WRITE_ERRORS},
    "summary": "Purge a queue (pgmq.purge_queue): every live message deleted; admins",
    "description": "confirm_name must be the queue's name, exactly (400 otherwise, nothing done). The audit "
    "record counts exactly what went, and keeps the payloads when few.",
}


DROP_QUEUE = {
    "operation_id": "queues_drop",
    "parameters": [QUEUE_NAME],
    "request": s.TypedConfirmationSerializer,
    "responses": {200: s.DropResultSerializer, **WRITE_ERRORS},
    "summary": "Drop a queue (pgmq.drop_queue), its messages and its archive; admins",
    "description": "confirm_name must be the queue's name, exactly (400 otherwise, nothing done). The queue's "
    "unfinished bulk jobs are cancelled with it.",
}


RESEND_MESSAGE = {
    "operation_id": "messages_resend",
    "parameters": [QUEUE_NAME, MSG_ID],
    "request": s.ResendRequestSerializer,
    "responses": {201: s.ResendResultSerializer, **WRITE_ERRORS},
    "summary": "Edit and resend: send an edited copy (to this queue or another) and archive the original",
    "description": "One transaction, one audit record holding both msg_ids. If a consumer took the original "
    "meanwhile nothing is sent (404). Refused (403) to whom DASHBOARD_REDACT hides values: the "
    "copy would carry the redactions.",
}


PLAN_JOB = {
    "operation_id": "jobs_plan",
    "parameters": [QUEUE_NAME],
    "request": s.BulkActionRequestSerializer,
    "responses": {200: s.ActionPlanSerializer, **ERRORS, 403: s.ErrorSerializer},
    "summary": "What a bulk action would do: how many messages the filter matches now (changes nothing)",
    "description": 'The count the message browser\'s dialog shows before "all N matching this filter".',
}


START_JOB = {
    "operation_id": "jobs_create",
    "parameters": [QUEUE_NAME],
    "request": s.BulkActionRequestSerializer,
    "responses": {201: s.JobSerializer, **WRITE_ERRORS},
    "summary": "Start a bulk action on every message a filter matches: a job",
    "description": "The job runner (`manage.py run_jobs`) does it in batches, one transaction each; follow it at "
    "/api/v1/jobs/{job_id}/. Its audit record is written when it ends.",
}


JOB_DETAIL = {
    "operation_id": "jobs_retrieve",
    "parameters": [JOB_ID],
    "responses": {200: s.JobSerializer, **ERRORS},
    "summary": "A bulk job's progress, as its page shows it",
}


CANCEL_JOB = {
    "operation_id": "jobs_cancel",
    "parameters": [JOB_ID],
    "request": None,
    "responses": {200: s.JobSerializer, **ERRORS, 403: s.ErrorSerializer},
    "summary": "Cancel a bulk job: a running one stops after its current batch, a pending one at once",
}
