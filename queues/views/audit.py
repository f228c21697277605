"""The audit log (read-only: nothing here or anywhere edits or deletes it), its CSV export, and
bulk jobs with their progress."""

from __future__ import annotations

import dataclasses
import json

from django.db.models import F, Q, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from queues import forms, redaction
from queues.filters import MessageFilter
from queues.jsontext import pretty
from queues.models import AuditEntry
from queues.pgmq import ARCHIVE, LIVE
from queues.selectors.audit_chain import PAGE_CHECKS_NEWEST, verify_chain
from queues.shortcuts import bad_request
from queues.spreadsheet import (  # noqa: F401 (FORMULA_STARTS: tests import it here)
    FORMULA_STARTS,
    line_writer,
    safe_cell,
)
from queues.vocabulary import ACTIONS, SEND
from queues.watched import watched_name

ENTRIES_PER_PAGE = 50
CSV_COLUMNS = [
    "id",
    "at",
    "username",
    "action",
    "queue_name",
    "requested",
    "affected",
    "already_gone",
    "skipped",
    "outcome",
    "target",
    "details",
    "deleted_count",
]
# JSON columns are exported and shown as PostgreSQL writes them: numbers exactly as stored.
JSON_AS_TEXT = {"target": Cast("target", TextField()), "details": Cast("details", TextField())}


def _json_as_text(request: HttpRequest) -> dict:
    """The CSV's JSON columns; a sent message in `target` redacted for those who see payloads so."""
    if not redaction.applies_to(request.user):
        return JSON_AS_TEXT
    return {**JSON_AS_TEXT, "target": Cast(redaction.RedactedRecord("target"), TextField())}


def target_seen(target: dict) -> dict:
    """A bulk job's record as a user who sees payloads redacted may see it: the values typed into
    its filter hidden, in the filter and in its words."""
    if not isinstance(target, dict) or not isinstance(target.get("filter"), dict):
        return target
    hidden = MessageFilter.from_data(target["filter"]).without_values()
    return {**target, "filter": hidden.to_data(), "filter_in_words": hidden.in_words()}


@dataclasses.dataclass
class Described:
    """An entry in words and links, for the log's columns and the entry's fields: where the
    messages went, which messages (each a link to it, live or archived, in this database) or the
    filter in words, the copies made, and the rest of the record as fields."""

    destination: str = ""
    messages: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    more_messages: int = 0
    filter_words: str = ""
    source: str = ""
    copies: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    more_copies: int = 0
    parameters: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    reason: str = ""
    error: str = ""
    other_details: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _message_link(queue_name: str, msg_id: object, source: str = "") -> tuple[int, str] | None:
    if not isinstance(msg_id, int) and not (isinstance(msg_id, str) and msg_id.isdigit()):
        return None
    url = reverse("message", args=[queue_name, int(msg_id)])
    return int(msg_id), url + ("?source=archive" if source == ARCHIVE else "")


def _linked(queue_name: str, ids: list, source: str, shown: int | None) -> tuple[list[tuple[int, str]], int]:
    links = [link for msg_id in ids if (link := _message_link(queue_name, msg_id, source))]
    if shown is None or len(links) <= shown:
        return links, 0
    return links[:shown], len(links) - shown


# The details the entry's fields already show, left out of "other details".
SHOWN_DETAILS = {"new_msg_ids", "destination", "reason", "error", "original_msg_id", "msg_id"}


def describe(entry: AuditEntry, *, redacted: bool, shown: int | None = None) -> Described:
    """`shown`: at most that many msg_ids and copies (the log's rows), None: all (the entry's page)."""
    target = target_seen(entry.target) if redacted else entry.target
    target = target if isinstance(target, dict) else {}
    details = entry.details if isinstance(entry.details, dict) else {}
    parameters = target.get("parameters") if isinstance(target.get("parameters"), dict) else {}
    described = Described(
        destination=str(target.get("destination") or parameters.get("destination") or details.get("destination") or ""),
        filter_words=str(target.get("filter_in_words") or ""),
        source=str(target.get("source") or ""),
        reason=str(details.get("reason") or ""),
        error=str(details.get("error") or ""),
    )
    action = ACTIONS.get(entry.action)
    source = described.source or (action.table if action and action.table else "")
    ids = target.get("msg_ids") if isinstance(target.get("msg_ids"), list) else []
    if "msg_id" in target:
        ids = [target["msg_id"]]
    if entry.queue_name:
        described.messages, described.more_messages = _linked(entry.queue_name, ids, source, shown)
    copies_queue = described.destination or (entry.queue_name if entry.action in (SEND,) else "")
    copies = details.get("new_msg_ids")
    new_ids = list(copies.values()) if isinstance(copies, dict) else []
    if entry.action == SEND and "msg_id" in details:
        new_ids = [details["msg_id"]]
    if copies_queue:
        described.copies, described.more_copies = _linked(copies_queue, new_ids, LIVE, shown)
    described.parameters = [
        (key.replace("_", " "), str(value)) for key, value in parameters.items() if key != "destination"
    ]
    if "delay_s" in target:
        described.parameters.append(("delay", f"{target['delay_s']} s"))
    described.other_details = [
        (key.replace("_", " "), value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in details.items()
        if key not in SHOWN_DETAILS
    ]
    return described


def in_this_log() -> Q:
    """This database's records, and those of no database (changes of who may do what)."""
    return Q(database=watched_name()) | Q(database="")


def _filtered_entries(form: forms.AuditFilterForm):
    data = form.cleaned_data
    entries = AuditEntry.objects.filter(in_this_log())
    if data["about"] == form.ON_QUEUES:
        entries = entries.exclude(database="")
    elif data["about"] == form.ON_ACCOUNTS:
        entries = entries.filter(database="")
    if data["queue"]:
        entries = entries.filter(queue_name=data["queue"])
    if data["user"]:
        entries = entries.filter(username=data["user"])
    if data["action"]:
        entries = entries.filter(action=data["action"])
    if data["outcome"]:
        entries = entries.filter(outcome=data["outcome"])
    if data["since"]:
        entries = entries.filter(at__gte=data["since"])
    if data["until"]:
        entries = entries.filter(at__lt=data["until"])
    return entries.order_by("-id")


@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form = forms.AuditFilterForm(request.GET)
    if not form.is_valid():
        return bad_request(request, form)
    entries = _filtered_entries(form)
    if form.cleaned_data["before"]:
        entries = entries.filter(id__lt=form.cleaned_data["before"])
    page = list(entries.defer("deleted_payloads")[: ENTRIES_PER_PAGE + 1])
    query = request.GET.copy()
    query.pop("before", None)
    older = None
    if len(page) > ENTRIES_PER_PAGE:
        page = page[:ENTRIES_PER_PAGE]
        query["before"] = page[-1].pk
        older = "?" + query.urlencode()
    export_query = request.GET.copy()
    export_query.pop("before", None)
    redacted = redaction.applies_to(request.user)
    for entry in page:
        entry.described = describe(entry, redacted=redacted, shown=5)
    return render(
        request,
        "queues/audit/log.html",
        {
            "form": form,
            "entries": page,
            "older": older,
            "actions": AuditEntry.objects.filter(in_this_log()).order_by().values_list("action", flat=True).distinct(),
            "export_query": export_query.urlencode(),
            "chain": verify_chain(newest=PAGE_CHECKS_NEWEST),
        },
    )


@require_GET
def audit_csv(request: HttpRequest) -> HttpResponse:
    form = forms.AuditFilterForm(request.GET)
    if not form.is_valid():
        return bad_request(request, form)
    writer = line_writer()
    redacted = redaction.applies_to(request.user)

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        columns = [f"{column}_text" if column in JSON_AS_TEXT else column for column in CSV_COLUMNS]
        entries = _filtered_entries(form).annotate(
            **{f"{name}_text": text for name, text in _json_as_text(request).items()}
        )
        for entry in entries.values(*columns).iterator(chunk_size=500):
            if redacted and '"filter"' in entry["target_text"]:
                entry["target_text"] = json.dumps(target_seen(json.loads(entry["target_text"])), ensure_ascii=False)
            yield writer.writerow([safe_cell(entry[column]) for column in columns])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="pgmq-dashboard-audit.csv"'
    return response


@require_GET
def audit_entry(request: HttpRequest, entry_id: int) -> HttpResponse:
    redacted = redaction.applies_to(request.user)
    target = redaction.RedactedRecord("target") if redacted else F("target")
    entry = (
        AuditEntry.objects.filter(in_this_log(), pk=entry_id)
        .annotate(
            message_pretty=pretty(KeyTransform("message", target)),
            headers_pretty=pretty(KeyTransform("headers", target)),
            deleted_payloads_pretty=pretty(
                redaction.RedactedRecord("deleted_payloads", many=True) if redacted else "deleted_payloads"
            ),
        )
        .first()
    )
    if entry is None:
        raise Http404(f"There is no audit entry {entry_id}.")
    return render(request, "queues/audit/entry.html", {"entry": entry, "described": describe(entry, redacted=redacted)})
