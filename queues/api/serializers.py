"""What the API answers and accepts. Output serializers read the selectors' dataclasses as they
are; input serializers check only the shape of a body: forms.py does the validation, as for the
pages."""

from __future__ import annotations

import math

from django import forms as django_forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from queues import forecast
from queues.filters import MESSAGE_STATES, words_seen
from queues.forms import MAX_INT, MAX_MSG_ID, MessageFilterForm, MsgIdsField
from queues.jsontext import RawJSON
from queues.pgmq import ARCHIVE, LIVE
from queues.vocabulary import ARCHIVE_ACTIONS, LIVE_ACTIONS, MESSAGE_ACTIONS


@extend_schema_field(OpenApiTypes.ANY)
class RawJSONField(serializers.Field):
    """A payload: PostgreSQL's JSON text, written into the response as it is (numbers exact)."""

    def to_representation(self, value) -> RawJSON | None:
        return None if value is None else RawJSON(value)


class RowCountSerializer(serializers.Serializer):
    value = serializers.IntegerField()
    exact = serializers.BooleanField(help_text="false: PostgreSQL's estimate (the pages show ≈)")


class PoisonSerializer(serializers.Serializer):
    value = serializers.IntegerField()
    counted_at = serializers.DateTimeField(
        allow_null=True, help_text="null: counted now; else when the sampler counted it"
    )


class ForecastSerializer(serializers.Serializer):
    """When the backlog will be gone at the current rate (queues/forecast.py)."""

    state = serializers.ChoiceField(
        choices=forecast.STATES,
        help_text="unknown: not enough history yet (under 3 samples or a minute)",
    )
    summary = serializers.CharField(help_text='in words, as the pages say it: "clears in ~35 min at the current rate"')
    eta_s = serializers.SerializerMethodField(
        help_text="seconds until the backlog is gone at the current rate: 0 when empty; null when it will not "
        "drain (stalled, growing) or is unknown"
    )
    will_drain = serializers.SerializerMethodField(help_text="false when stalled or growing; null when unknown")
    arrival_rate = serializers.FloatField(allow_null=True, help_text="messages sent per second over window_s")
    removal_rate = serializers.FloatField(allow_null=True, help_text="archived or deleted per second over window_s")
    drain_rate = serializers.FloatField(
        allow_null=True, help_text="removal_rate minus arrival_rate: what the backlog shrinks by per second"
    )
    window_s = serializers.FloatField(allow_null=True, help_text="the seconds of history the rates come from (≤ 300)")
    samples = serializers.IntegerField(help_text="the sampler's samples in that window, the reading now included")
    confidence = serializers.ChoiceField(
        choices=["high", "medium", "low"],
        allow_null=True,
        help_text="from how steady the drain rate was from sample to sample, and how many samples there are",
    )
    relative_error = serializers.SerializerMethodField(
        help_text="the drain rate's standard error over the rate (0.05: ±5%); null when it cannot be told"
    )
    stalled_for_s = serializers.FloatField(allow_null=True, help_text="stalled: seconds since a message was removed")

    def get_eta_s(self, forecast) -> float | None:
        return _finite(forecast.eta_s)

    def get_will_drain(self, forecast) -> bool | None:
        return None if forecast.eta_s is None else math.isfinite(forecast.eta_s)

    def get_relative_error(self, forecast) -> float | None:
        return _finite(forecast.relative_error)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class HealthCauseSerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=["warning", "critical"])
    cause = serializers.CharField(source="words")
    panel = serializers.CharField(source="anchor", help_text="the id of the queue page's panel that shows it")


class QueueSerializer(serializers.Serializer):
    """One queue's figures, as the overview and the queue page show them (an OverviewRow)."""

    name = serializers.CharField(source="stats.name")
    created_at = serializers.DateTimeField(source="stats.queue.created_at", allow_null=True)
    is_partitioned = serializers.BooleanField(source="stats.queue.is_partitioned", allow_null=True)
    is_unlogged = serializers.BooleanField(source="stats.queue.is_unlogged", allow_null=True)
    measured_at = serializers.DateTimeField(source="stats.measured_at", help_text="the database's clock")
    health = serializers.ChoiceField(source="health.state", choices=["ok", "warning", "critical"])
    health_reasons = serializers.ListField(source="health.reasons", child=serializers.CharField())
    health_verdict = serializers.CharField(
        source="health.verdict",
        help_text='the state and its first cause: "critical: nobody has read for 9 min; 76 waiting"',
    )
    health_causes = HealthCauseSerializer(source="health.causes", many=True, help_text="every cause, worst first")
    backlog = RowCountSerializer(source="stats.backlog")
    visible = RowCountSerializer(source="stats.visible")
    in_flight = serializers.IntegerField(source="stats.in_flight")
    delayed = serializers.IntegerField(source="stats.delayed")
    oldest_age_s = serializers.FloatField(source="stats.oldest_age_s", allow_null=True)
    newest_age_s = serializers.FloatField(source="stats.newest_age_s", allow_null=True)
    oldest_visible_age_s = serializers.FloatField(source="stats.oldest_visible_age_s", allow_null=True)
    sent_total = serializers.IntegerField(
        source="stats.sent_total", help_text="messages ever sent (the msg_id sequence)"
    )
    archived = RowCountSerializer(source="stats.archived", allow_null=True)
    poison = PoisonSerializer(allow_null=True)
    enqueue_rate = serializers.FloatField(
        source="rates.enqueue", allow_null=True, help_text="messages per second over the last 5 minutes"
    )
    processing_rate = serializers.FloatField(
        source="rates.processing", allow_null=True, help_text="archived or deleted per second over the last 5 minutes"
    )
    rate_window_s = serializers.FloatField(
        source="rates.window_s",
        allow_null=True,
        help_text="the seconds enqueue_rate and processing_rate were measured over: up to 300, fewer while the "
        "sampler's history is shorter; null without history",
    )
    enqueue_rate_1m = serializers.FloatField(
        source="rates.enqueue_1m", allow_null=True, help_text="messages per second over the last minute"
    )
    processing_rate_1m = serializers.FloatField(
        source="rates.processing_1m", allow_null=True, help_text="archived or deleted per second over the last minute"
    )
    rate_window_1m_s = serializers.FloatField(
        source="rates.window_1m_s",
        allow_null=True,
        help_text="the seconds the one-minute rates were measured over: up to 60, at least 30; null without history",
    )
    sparkline = serializers.ListField(child=serializers.IntegerField(), help_text="backlog over the last 30 minutes")
    forecast = ForecastSerializer(allow_null=True)
    shares_tables_with = serializers.ListField(
        child=serializers.CharField(),
        help_text="other names pgmq.meta lists with this queue's very tables (pgmq lowercases names: `Foo` and `FOO` "
        "share q_foo); the figures are that table's. Purge, drop, move and requeue are refused (409)",
    )


class TotalsSerializer(serializers.Serializer):
    queues = serializers.IntegerField(help_text="names listed in pgmq.meta")
    tables = serializers.IntegerField(
        help_text="their distinct tables: names sharing one count it once in every figure below"
    )
    backlog = RowCountSerializer()
    visible = RowCountSerializer()
    in_flight = serializers.IntegerField()
    delayed = serializers.IntegerField()
    archived = RowCountSerializer()
    sent = serializers.IntegerField()
    enqueue_rate = serializers.FloatField(allow_null=True, help_text="over the last 5 minutes")
    processing_rate = serializers.FloatField(allow_null=True, help_text="over the last 5 minutes")
    enqueue_rate_1m = serializers.FloatField(allow_null=True, help_text="over the last minute")
    processing_rate_1m = serializers.FloatField(allow_null=True, help_text="over the last minute")
    health = serializers.DictField(child=serializers.IntegerField())
    sampled = serializers.IntegerField(
        help_text="queues counted from the sampler's latest round, not live: above "
        "DASHBOARD_OVERVIEW_PROBE_ALL_UP_TO queues only a page's queues are probed"
    )
    sampled_at = serializers.DateTimeField(allow_null=True, help_text="when that round finished; null when none is")
    unsampled = serializers.IntegerField(help_text="queues off the page with no sample yet: not in the figures above")


class OverviewSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="queues matching the search")
    all_queues = serializers.IntegerField()
    page = serializers.IntegerField()
    pages = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    totals = TotalsSerializer()
    results = QueueSerializer(many=True)


class HistoryPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="the start of the bucket")
    samples = serializers.IntegerField(help_text="the sampler's samples in the bucket")
    backlog = serializers.IntegerField(help_text="the mean over the bucket, rounded")
    backlog_min = serializers.IntegerField()
    backlog_max = serializers.IntegerField()
    backlog_exact = serializers.BooleanField()
    visible = serializers.FloatField(help_text="the mean over the bucket")
    in_flight = serializers.FloatField(help_text="the mean over the bucket")
    delayed = serializers.FloatField(help_text="the mean over the bucket")
    enqueue_rate = serializers.FloatField(allow_null=True, help_text="the mean of the rates between samples")
    enqueue_rate_max = serializers.FloatField(allow_null=True)
    processing_rate = serializers.FloatField(allow_null=True, help_text="the mean of the rates between samples")
    processing_rate_max = serializers.FloatField(allow_null=True)


class HistorySerializer(serializers.Serializer):
    range = serializers.CharField()
    bucket_s = serializers.FloatField(help_text="each point stands for this many seconds")
    sampling_since = serializers.DateTimeField(
        allow_null=True, help_text="the oldest sample kept: later than the range's start while history is short"
    )
    points = HistoryPointSerializer(many=True, help_text="buckets with samples; a bucket missing is a gap")


class MessageSerializer(serializers.Serializer):
    msg_id = serializers.IntegerField()
    source = serializers.ChoiceField(choices=[LIVE, ARCHIVE])
    state = serializers.ChoiceField(choices=MESSAGE_STATES, help_text="by the database's clock")
    read_ct = serializers.IntegerField()
    enqueued_at = serializers.DateTimeField()
    vt = serializers.DateTimeField()
    last_read_at = serializers.DateTimeField(allow_null=True)
    archived_at = serializers.DateTimeField(allow_null=True)
    message_chars = serializers.IntegerField(
        allow_null=True,
        help_text="its length as JSON text; null in a list for a message stored in more than "
        "DASHBOARD_LIST_PAYLOAD_MAX_STORED_BYTES (see message_stored_bytes)",
    )
    message_stored_bytes = serializers.IntegerField(
        allow_null=True, help_text="the bytes the database stores the message in, compressed when large"
    )
    message = RawJSONField(
        allow_null=True,
        help_text="exactly as stored (numbers keep every digit); null if a "
        "consumer removed the message while the page was read",
    )
    headers = RawJSONField(allow_null=True)


class MessageRowSerializer(MessageSerializer):
    message = RawJSONField(
        allow_null=True,
        help_text=(
            "exactly as stored (numbers keep every digit); null if longer than DASHBOARD_API_LIST_PAYLOAD_CHARS "
            "or stored in more than DASHBOARD_LIST_PAYLOAD_MAX_STORED_BYTES (message_left_out: get it from the "
            "message's own endpoint), or if a consumer removed the message while the page was read"
        ),
    )
    headers_chars = serializers.IntegerField(allow_null=True)
    headers_stored_bytes = serializers.IntegerField(allow_null=True)
    message_left_out = serializers.BooleanField(
        help_text="the message is too big for a list: see message_chars, or message_stored_bytes"
    )
    headers_left_out = serializers.BooleanField()


class MessagePageSerializer(serializers.Serializer):
    results = MessageRowSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="the next page in the sort, every filter kept")
    previous = serializers.CharField(allow_null=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="for ?after=")
    previous_cursor = serializers.CharField(allow_null=True, help_text="for ?before=")
    continue_search = serializers.CharField(
        allow_null=True, help_text="a bounded search ran out of time: this link goes on from where it stopped"
    )
    scan_stopped_at = serializers.IntegerField(allow_null=True)
    timed_out = serializers.BooleanField()
    redacted = serializers.BooleanField(help_text='values DASHBOARD_REDACT names show as "[redacted]"')


class MessageDetailSerializer(MessageSerializer):
    seconds_to_vt = serializers.FloatField(allow_null=True)
    redacted = serializers.BooleanField()


class ActionParametersSerializer(serializers.Serializer):
    destination = serializers.CharField(required=False, max_length=255, help_text="move, requeue: the queue")
    original = serializers.ChoiceField(
        required=False,
        choices=["archive", "delete"],
        help_text="move: what becomes of the original (archive by default)",
    )
    remove_archived = serializers.BooleanField(required=False, help_text="requeue: remove the archived copy")
    until = serializers.DateTimeField(required=False, help_text="delay: when the messages become visible")
    include_in_flight = serializers.BooleanField(
        required=False, help_text="retry, move: also messages a consumer is working on (a second delivery)"
    )
    again = serializers.BooleanField(
        required=False, help_text="requeue: also messages requeued before (another copy: a second delivery)"
    )


class ActionRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=MESSAGE_ACTIONS)
    source = serializers.ChoiceField(
        choices=[LIVE, ARCHIVE],
        default=LIVE,
        help_text=f"live actions: {', '.join(LIVE_ACTIONS)}; archive actions: {', '.join(ARCHIVE_ACTIONS)}",
    )
    msg_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_MSG_ID), min_length=1, max_length=MsgIdsField.MAX
    )
    parameters = ActionParametersSerializer(required=False)
    request_token = serializers.UUIDField(required=False, help_text="the same token twice acts once (409)")


class BatchResultSerializer(serializers.Serializer):
    affected = serializers.ListField(child=serializers.IntegerField())
    already_gone = serializers.ListField(
        child=serializers.IntegerField(), help_text="a consumer deleted or archived them meanwhile: not an error"
    )
    skipped = serializers.ListField(child=serializers.IntegerField())
    new_ids = serializers.DictField(child=serializers.IntegerField(), help_text="original msg_id -> copy's msg_id")
    requeued_before = serializers.DictField(
        child=serializers.DictField(),
        help_text="requeue: skipped, requeued before: msg_id -> where its copy went "
        "(queue, msg_id, at, by); `again` makes another",
    )


class ActionResultSerializer(serializers.Serializer):
    audit_id = serializers.IntegerField()
    outcome = serializers.CharField()
    result = BatchResultSerializer()


class SendRequestSerializer(serializers.Serializer):
    message = serializers.JSONField(help_text="any JSON document")
    headers = serializers.JSONField(required=False, allow_null=True, help_text="a JSON object")
    delay_s = serializers.IntegerField(required=False, min_value=0, max_value=MAX_INT)
    request_token = serializers.UUIDField(required=False)


class SendResultSerializer(serializers.Serializer):
    msg_id = serializers.IntegerField()
    audit_id = serializers.IntegerField()


def form_field_schema(name: str, field: django_forms.Field) -> dict:
    """The OpenAPI schema of what one of forms.py's fields accepts (a query parameter, a filter key)."""
    if isinstance(field, django_forms.IntegerField):
        kind = {"type": "integer", "minimum": field.min_value, "maximum": field.max_value}
    elif isinstance(field, django_forms.BooleanField):
        kind = {"type": "boolean"}
    elif isinstance(field, django_forms.DateTimeField):
        kind = {"type": "string", "format": "date-time"}
    elif isinstance(field, django_forms.ChoiceField):
        kind = {"type": "string", "enum": [value for value, _ in field.choices if value]}
    elif name in ("after", "before"):
        kind = {"type": "string", "maxLength": field.max_length, "pattern": r"^(.*\|)?[0-9]+$"}
    else:
        kind = {"type": "string", "maxLength": field.max_length}
    return {key: value for key, value in kind.items() if value is not None}


# What a bulk action's filter may name: the message browser's filters, without its source (the
# action's own), sort and place. `message` and `headers` are JSON values here, not JSON text.
FILTER_KEYS = [
    "state",
    "read_ct_min",
    "read_ct_max",
    "enqueued_after",
    "enqueued_before",
    "archived_after",
    "archived_before",
    "message",
    "headers",
    "q",
    "task",
    "task_id",
    "copied_from",
]
FILTER_DESCRIPTIONS = {
    "message": "JSON the message contains (jsonb @>)",
    "headers": "JSON the headers contain",
    "q": "search, as on the message browser: `timeout`, `headers:retry`, "
    "`message.customer.id:42`, `headers.trace_id:abc*`",
    "task": "a Celery task's name (* a wildcard), as kombu's pgmq transport sends it",
    "task_id": "a Celery task's id",
    "copied_from": "copies the dashboard made from this queue (`orders`) or message (`orders #117`), and their copies",
}


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            name: (
                {"description": FILTER_DESCRIPTIONS[name]}
                if name in ("message", "headers")
                else {
                    **form_field_schema(name, MessageFilterForm.base_fields[name]),
                    **({"description": FILTER_DESCRIPTIONS[name]} if name in FILTER_DESCRIPTIONS else {}),
                }
            )
            for name in FILTER_KEYS
        },
        "description": "the message browser's filters. Required: {} matches every message, and is then chosen on "
        "purpose, never by leaving the filter out",
    }
)
class FilterField(serializers.DictField):
    """A filter as an object. An unknown key is refused, not ignored: ignoring a misspelt key would
    widen a bulk action to messages nobody meant."""

    def to_internal_value(self, data) -> dict:
        data = super().to_internal_value(data)
        unknown = sorted(set(data) - set(FILTER_KEYS))
        if unknown:
            raise serializers.ValidationError(
                f"unknown filter keys: {', '.join(unknown)} (known: {', '.join(FILTER_KEYS)})"
            )
        return data


class BulkActionRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=MESSAGE_ACTIONS)
    source = serializers.ChoiceField(choices=[LIVE, ARCHIVE], default=LIVE)
    filter = FilterField()
    parameters = ActionParametersSerializer(required=False)
    request_token = serializers.UUIDField(required=False, help_text="the same token twice starts one job (409)")


class ActionPlanSerializer(serializers.Serializer):
    action = serializers.CharField()
    source = serializers.ChoiceField(choices=[LIVE, ARCHIVE])
    count = serializers.IntegerField(
        allow_null=True, help_text="matching now, counted exactly; null when counting took longer than its budget"
    )
    in_flight = serializers.IntegerField(
        allow_null=True, help_text="retry, move: of those, how many a consumer is working on (left alone unless asked)"
    )
    filter_in_words = serializers.CharField()
    destructive = serializers.BooleanField()
    batch_size = serializers.IntegerField(help_text="messages per batch (one transaction each)")


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    queue_name = serializers.CharField()
    username = serializers.CharField(help_text="who started it")
    action = serializers.CharField()
    source = serializers.ChoiceField(choices=[LIVE, ARCHIVE])
    parameters = serializers.DictField()
    filter_in_words = serializers.SerializerMethodField(help_text="its values hidden from who sees payloads redacted")
    expected = serializers.IntegerField(allow_null=True, help_text="matching when started")
    status = serializers.ChoiceField(choices=["pending", "running", "done", "cancelled", "failed"])
    finished = serializers.BooleanField()
    affected = serializers.IntegerField()
    already_gone = serializers.IntegerField()
    skipped = serializers.IntegerField()
    batches = serializers.IntegerField()
    cursor = serializers.IntegerField(help_text="the last msg_id handled")
    cancel_requested = serializers.BooleanField()
    cancelled_by = serializers.CharField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    audit_id = serializers.IntegerField(
        source="audit_entry_id", allow_null=True, help_text="the audit record, once the job has ended"
    )

    def get_filter_in_words(self, job) -> str:
        return words_seen(job.filter, job.filter_words, redacted=self.context["redacted"])


class TypedConfirmationSerializer(serializers.Serializer):
    confirm_name = serializers.CharField(
        max_length=255, trim_whitespace=False, help_text="the queue's name, exactly: the page's typed confirmation"
    )
    request_token = serializers.UUIDField(required=False, help_text="the same token twice acts once (409)")


class PurgeResultSerializer(serializers.Serializer):
    audit_id = serializers.IntegerField()
    purged = serializers.IntegerField(help_text="messages deleted from the live table")


class DropResultSerializer(serializers.Serializer):
    audit_id = serializers.IntegerField()
    live_messages = serializers.IntegerField()
    archived_messages = serializers.IntegerField()


class CreateQueueRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=47, trim_whitespace=False)
    unlogged = serializers.BooleanField(default=False, help_text="faster; emptied by a database crash")
    request_token = serializers.UUIDField(required=False, help_text="the same token twice acts once (409)")


class CreateQueueResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    unlogged = serializers.BooleanField()
    audit_id = serializers.IntegerField()


class ResendRequestSerializer(serializers.Serializer):
    message = serializers.JSONField(help_text="the edited message: any JSON document")
    headers = serializers.JSONField(required=False, allow_null=True, help_text="a JSON object")
    source = serializers.ChoiceField(
        choices=[LIVE, ARCHIVE], default=LIVE, help_text="where the original is: a live one is archived"
    )
    destination = serializers.CharField(required=False, max_length=255, help_text="this queue by default")
    include_in_flight = serializers.BooleanField(
        default=False, help_text="also when a consumer is working on the original (a second delivery); 409 otherwise"
    )
    request_token = serializers.UUIDField(required=False, help_text="the same token twice acts once (409)")


class ResendResultSerializer(serializers.Serializer):
    msg_id = serializers.IntegerField(help_text="the edited copy's msg_id")
    destination = serializers.CharField()
    original_msg_id = serializers.IntegerField()
    original_archived = serializers.BooleanField(help_text="false when the original was already in the archive")
    audit_id = serializers.IntegerField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class ConflictSerializer(ErrorSerializer):
    """409: the request_token was used before (audit_id or job_id says where), or the queue shares its tables."""

    audit_id = serializers.IntegerField(required=False)
    job_id = serializers.IntegerField(required=False)
    shares_tables_with = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="the other names with the queue's tables"
    )
    table = serializers.CharField(required=False, help_text="the live table they share")
    resolve_sql = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="keeps only the name created first: removes the others' rows "
        "of pgmq.meta, leaving the tables and messages as they are",
    )
