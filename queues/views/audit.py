"""The audit log (read-only: nothing here or anywhere edits or deletes it), its CSV export, and
bulk jobs with their progress."""

from __future__ import annotations

import json

from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from queues import forms, redaction
from queues.filters import MessageFilter
from queues.jsontext import pretty
from queues.models import AuditEntry
from queues.selectors.audit_chain import PAGE_CHECKS_NEWEST, verify_chain
from queues.shortcuts import bad_request
from queues.spreadsheet import (  # noqa: F401 (FORMULA_STARTS: tests import it here)
    FORMULA_STARTS,
    line_writer,
    safe_cell,
)
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
    entry = (
        AuditEntry.objects.filter(in_this_log(), pk=entry_id)
        .annotate(
            target_pretty=pretty(redaction.RedactedRecord("target") if redacted else "target"),
            details_pretty=pretty("details"),
            deleted_payloads_pretty=pretty(
                redaction.RedactedRecord("deleted_payloads", many=True) if redacted else "deleted_payloads"
            ),
        )
        .first()
    )
    if entry is None:
        raise Http404(f"There is no audit entry {entry_id}.")
    if redacted and target_seen(entry.target) is not entry.target:
        entry.target_pretty = json.dumps(target_seen(entry.target), indent=4, ensure_ascii=False)
    return render(request, "queues/audit/entry.html", {"entry": entry})
