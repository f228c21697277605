"""Thin API views: parse input with forms.py, call the selectors and services the pages call,
answer JSON. Permissions as on the pages: any signed-in user reads, `operate_messages` acts, sends
and runs bulk jobs, `administer_queues` purges, creates and drops queues (403 otherwise). Every
action goes through services.py, which writes the audit log."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, QueryDict, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes, permission_classes, renderer_classes
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from queues import forms, jobs, redaction, services, vocabulary
from queues.access import ADMINISTER, OPERATE, READ_ONLY_REASON, can_watch, may, read_only
from queues.api import schemas as openapi
from queues.api import serializers as s
from queues.api.renderers import ExactJSONParser, ExactJSONRenderer, exact_json
from queues.jsontext import RawJSON
from queues.models import BulkJob
from queues.pgmq import ARCHIVE, LIVE
from queues.selectors import history, messages, overview, payloads, plans
from queues.selectors.payloads import PayloadText, payload_texts
from queues.selectors.stats import single_queue_stats
from queues.shortcuts import (
    ADMINISTER_REFUSAL,
    OPERATE_REFUSAL,
    download_too_big,
    get_job_or_404,
    get_queue_or_404,
    page_links,
)

# A single message's payload up to this many characters is in the answer as usual; a longer one is
# streamed into it from the database (payloads.StoredPayload.chunks).
INLINE_PAYLOAD_CHARS = 1024 * 1024


# What a refused request asked for, by the API's address (the others name it in their body).
REFUSED_ACTIONS = {
    "api-send": vocabulary.SEND,
    "api-resend": vocabulary.EDIT_AND_RESEND,
    "api-purge": vocabulary.PURGE,
    "api-drop": vocabulary.DROP_QUEUE,
    "api-queues": vocabulary.CREATE_QUEUE,
    "api-job-cancel": "cancel_job",
    "api-job-plan": "plan_job",
}


def refused(request: Request, reason: str) -> bool:
    """A 403 recorded in the audit log, as the pages record theirs; always False (not allowed)."""
    match = request._request.resolver_match
    action = REFUSED_ACTIONS.get(match.url_name)
    if action is None:
        body = request.data if isinstance(request.data, dict) else {}
        asked = body.get("action")
        action = asked if isinstance(asked, str) and asked in vocabulary.ACTIONS else "act_on_messages"
    services.record_refusal(
        user=request.user, action=action, queue_name=match.kwargs.get("queue_name", ""), reason=reason
    )
    return False


class CanOperate(BasePermission):
    """Acting on messages and sending, as the pages allow it: the Operator and Admin roles."""

    message = OPERATE_REFUSAL

    def has_permission(self, request, view) -> bool:
        if read_only():  # a switch, not an attempt to record
            self.message = READ_ONLY_REASON
            return False
        return may(request.user, OPERATE) or refused(request, self.message)


class WatchesThisDatabase(BasePermission):
    """The database in the address (/db/<name>/api/v1/...) is one the user has a role in."""

    message = "your account has no role in this database"

    def has_permission(self, request, view) -> bool:
        return can_watch(request.user, request._request.watched_database)


class CanAdminister(BasePermission):
    """Purging, creating and dropping queues, as the pages allow it: the Admin role."""

    message = ADMINISTER_REFUSAL

    def has_permission(self, request, view) -> bool:
        if read_only():  # a switch, not an attempt to record
            self.message = READ_ONLY_REASON
            return False
        return may(request.user, ADMINISTER) or refused(request, self.message)


class ReadsOrAdministers(CanAdminister):
    """The list of queues: anyone signed in reads it, an admin adds to it."""

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or super().has_permission(request, view)


def refusals_as_json(view):
    """An action the services refuse, or one already done with this request_token, answered as JSON
    (the API's twin of views.actions.refusals_as_pages)."""

    @functools.wraps(view)
    def answered(request: Request, *args, **kwargs) -> Response:
        try:
            return view(request, *args, **kwargs)
        except services.TablesShared as error:
            return Response(
                {
                    "detail": error.not_done(),
                    "shares_tables_with": list(error.sharing.others),
                    "table": error.sharing.live_table,
                    "resolve_sql": error.sharing.resolve_sql,
                },
                status=status.HTTP_409_CONFLICT,
            )
        except services.SecondDelivery as error:
            return Response({"detail": error.not_done()}, status=status.HTTP_409_CONFLICT)
        except services.QueueMissing as error:
            return Response({"detail": error.not_done()}, status=status.HTTP_404_NOT_FOUND)
        except services.ActionRefused as error:
            return Response({"detail": error.not_done()}, status=status.HTTP_400_BAD_REQUEST)
        except services.AlreadyDone as done:
            return Response(
                {"detail": "already done: this request_token was used before", "audit_id": done.record.pk},
                status=status.HTTP_409_CONFLICT,
            )

    return answered


def api(
    methods: list[str],
    *,
    permissions=(IsAuthenticated,),
    schema: dict | None = None,
    schemas: dict[str, dict] | None = None,
):
    """An API view: JSON in and out, its OpenAPI description (`schemas` by method when it has
    several), and the site's sign-in middleware stepped aside (DRF authenticates the token or the
    session itself and answers 401). An action the services refuse, or one already done with this
    request_token, is answered here for every view: 400 and 409."""

    def decorate(view):
        view = api_view(methods)(
            parser_classes([ExactJSONParser])(
                renderer_classes([ExactJSONRenderer])(
                    permission_classes([*permissions, WatchesThisDatabase])(refusals_as_json(view))
                )
            )
        )
        for method, method_schema in (schemas or {None: schema}).items():
            view = extend_schema(methods=[method] if method else None, **method_schema)(view)
        return login_not_required(view)

    return decorate


def invalid(errors: dict) -> Response:
    """400 with every field's complaint, and all of them in one line."""
    errors = {
        ("non_field_errors" if field == "__all__" else field): [str(message) for message in messages_]
        for field, messages_ in errors.items()
    }
    detail = "; ".join(
        f"{field}: {' '.join(found)}" if field != "non_field_errors" else " ".join(found)
        for field, found in errors.items()
    )
    return Response({"detail": detail, "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


def _serializer_errors(errors) -> dict:
    """DRF's nested errors flattened to field -> messages (parameters.until, msg_ids.3)."""
    flat: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list) and value and not all(isinstance(item, str) for item in value):
            for index, item in enumerate(value):
                if item:
                    walk(f"{prefix}.{index}", item)
        else:
            flat.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in value)

    walk("", errors)
    return flat


def _link(request: Request, query: str | None) -> str | None:
    return request.build_absolute_uri(request.path + query) if query else None


@api(["GET", "POST"], permissions=(IsAuthenticated, ReadsOrAdministers), schemas=openapi.QUEUE_LIST)
def queue_list(request: Request) -> Response:
    if request.method == "POST":
        return _create_queue(request)
    form = forms.OverviewForm(request.query_params)
    if not form.is_valid():
        return invalid(form.errors)
    sort, descending = form.sort_key()
    found = overview.overview(
        search=form.cleaned_data["q"],
        sort=sort,
        descending=descending,
        page=form.cleaned_data["page"] or 1,
        health=form.cleaned_data["health"],
    )
    page = found.page

    def page_link(number: int) -> str:
        query = request.query_params.copy()
        query["page"] = str(number)
        return _link(request, "?" + query.urlencode())

    return Response(
        s.OverviewSerializer(
            {
                "count": page.paginator.count,
                "all_queues": found.all_queues,
                "page": page.number,
                "pages": page.paginator.num_pages,
                "next": page_link(page.next_page_number()) if page.has_next() else None,
                "previous": page_link(page.previous_page_number()) if page.has_previous() else None,
                "totals": found.totals,
                "results": list(page),
            }
        ).data
    )


def _queue_row(queue_name: str) -> overview.OverviewRow:
    queue = get_queue_or_404(queue_name)
    stats = single_queue_stats(queue.queue_name)
    if stats is None:
        raise Http404(f"The table of queue “{queue.queue_name}” is gone (the queue was dropped meanwhile).")
    row = overview.row_for(stats)
    row.sparkline = history.sparklines([stats.name], stats.measured_at).get(stats.name, [])
    return row


@api(["GET"], schema=openapi.QUEUE_DETAIL)
def queue_detail(request: Request, queue_name: str) -> Response:
    return Response(s.QueueSerializer(_queue_row(queue_name)).data)


@api(["GET"], schema=openapi.QUEUE_HISTORY)
def queue_history(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    form = forms.RangeForm(request.query_params)
    if not form.is_valid():
        return invalid(form.errors)
    stats = single_queue_stats(queue.queue_name)
    if stats is None:
        raise Http404(f"The table of queue “{queue.queue_name}” is gone (the queue was dropped meanwhile).")
    charted = history.queue_history(queue.queue_name, now=stats.measured_at, range_s=form.seconds())
    found = {
        "range": form.cleaned_data["range"] or "1h",
        "bucket_s": charted.bucket_s,
        "sampling_since": charted.sampling_since,
        "points": [point for point in charted.points if point.samples],
    }
    return Response(s.HistorySerializer(found).data)


@api(["GET"], schema=openapi.MESSAGE_LIST)
def message_list(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    form = forms.MessageFilterForm(request.query_params)
    if not form.is_valid():
        return invalid(form.errors)
    redacted = redaction.applies_to(request.user)
    message_filter = form.message_filter(redacted=redacted)
    page_request = form.page_request()
    page = messages.message_page(queue, message_filter, page_request)
    links = page_links(request._request, page, page_request)
    ids_by_source = {kind: [row.msg_id for row in page.rows if row.source == kind] for kind in (LIVE, ARCHIVE)}
    payloads = payload_texts(queue, ids_by_source, redacted=redacted, max_chars=settings.API_LIST_PAYLOAD_CHARS)
    rows = []
    for row in page.rows:
        found = payloads.get(row.msg_id) or PayloadText(None, None)
        rows.append(
            {
                **_row_fields(row),
                "message": found.message,
                "headers": found.headers,
                "headers_chars": found.headers_chars,
                "message_left_out": found.message_left_out,
                "headers_left_out": found.headers_left_out,
                "headers_stored_bytes": found.headers_stored_bytes,
            }
        )
    column = page_request.sort
    return Response(
        s.MessagePageSerializer(
            {
                "results": rows,
                "next": _link(request, links["older"]),
                "previous": _link(request, links["newer"]),
                "next_cursor": forms.encode_cursor(page.last, column) if page.has_older and page.last else None,
                "previous_cursor": forms.encode_cursor(page.first, column) if page.has_newer and page.first else None,
                "continue_search": _link(request, links["continue_scan"]),
                "scan_stopped_at": page.scan_stopped_at,
                "timed_out": page.timed_out,
                "redacted": redacted,
            }
        ).data
    )


def _row_fields(row) -> dict:
    return {
        "msg_id": row.msg_id,
        "source": row.source,
        "state": row.state,
        "read_ct": row.read_ct,
        "enqueued_at": row.enqueued_at,
        "vt": row.vt,
        "last_read_at": getattr(row, "last_read_at", None),
        "archived_at": getattr(row, "archived_at", None),
        "message_chars": row.message_chars,
        "message_stored_bytes": row.message_stored_bytes,
    }


@api(["GET"], schema=openapi.MESSAGE_DETAIL)
def message_detail(request: Request, queue_name: str, msg_id: int) -> Response:
    queue = get_queue_or_404(queue_name)
    source = request.query_params.get("source") or None
    if source not in (None, LIVE, ARCHIVE):
        return invalid({"source": ["must be live or archive"]})
    redacted = redaction.applies_to(request.user)
    found = (
        messages.find_message(queue, msg_id, source=source, redacted=redacted, text_chars=INLINE_PAYLOAD_CHARS)
        if 0 < msg_id <= forms.MAX_MSG_ID
        else None
    )
    if found is None:
        raise Http404(
            f"Message {msg_id} is not in queue “{queue.queue_name}” nor in its archive: "
            "it was deleted, or never existed."
        )
    answer = s.MessageDetailSerializer(
        {
            **_row_fields(found),
            "message": found.message_text,
            "headers": found.headers_text,
            "seconds_to_vt": found.seconds_to_vt,
            "redacted": redacted,
        }
    ).data
    streamed = {}
    for column in ("message", "headers"):
        if getattr(found, f"{column}_cut"):
            stored = payloads.stored_payload(queue, msg_id, column=column, source=found.source, redacted=redacted)
            if stored is None:
                raise Http404(f"Message {msg_id} left queue “{queue.queue_name}” while it was read.")
            if (refusal := download_too_big(request._request, stored)) is not None:
                return refusal
            streamed[column] = stored
    if not streamed:
        return Response(answer)
    return streamed_answer(answer, streamed)


def streamed_answer(answer: dict, streamed: dict[str, payloads.StoredPayload]) -> StreamingHttpResponse:
    """`answer` as JSON, with the payloads in `streamed` written in from the database chunk by chunk:
    the worker never holds one whole."""
    markers = {column: f"\x00{column}-{secrets.token_hex(8)}\x00" for column in streamed}
    text = exact_json({**answer, **{column: RawJSON(marker) for column, marker in markers.items()}})

    def pieces() -> Iterator[bytes]:
        rest = text
        for column, marker in markers.items():
            before, rest = rest.split(marker, 1)
            yield before.encode()
            yield from streamed[column].encoded_chunks()
        yield rest.encode()

    response = StreamingHttpResponse(pieces(), content_type="application/json")
    response["Content-Length"] = str(
        len(text.encode())
        - sum(len(marker.encode()) for marker in markers.values())
        + sum(stored.bytes for stored in streamed.values())
    )
    return response


def form_data(**values) -> QueryDict:
    """Values a serializer validated, as the page's form would have posted them, for forms.py to
    check exactly as it checks the page's: None, False and "" left out, True as "1", a list
    repeated, a time in ISO 8601. JSON values come as text already (exact_json)."""
    posted = QueryDict(mutable=True)
    for name, value in values.items():
        if value is None or value is False or value == "":
            continue
        if value is True:
            posted[name] = "1"
        elif isinstance(value, list):
            posted.setlist(name, [str(item) for item in value])
        elif isinstance(value, datetime):
            posted[name] = value.isoformat()
        else:
            posted[name] = str(value)
    return posted


def _action_form(queue, given: dict, *, scope: str, confirmed: bool, **chosen) -> forms.MessageActionForm:
    """An action request (ActionRequestSerializer's or BulkActionRequestSerializer's data) as the
    page's action form; `chosen`: msg_id or filter_query."""
    parameters = given.get("parameters", {})
    return forms.MessageActionForm(
        form_data(
            action=given["action"],
            source=given["source"],
            scope=scope,
            confirmed=confirmed,
            request_token=given.get("request_token"),
            **chosen,
            **{
                name: parameters.get(name)
                for name in ("destination", "original", "remove_archived", "include_in_flight", "again", "until")
            },
        ),
        queue_name=queue.queue_name,
    )


@api(["POST"], permissions=(IsAuthenticated, CanOperate), schema=openapi.MESSAGE_ACTION)
def message_action(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    body = s.ActionRequestSerializer(data=request.data)
    if not body.is_valid():
        return invalid(_serializer_errors(body.errors))
    form = _action_form(
        queue, body.validated_data, scope="selected", confirmed=True, msg_id=body.validated_data["msg_ids"]
    )
    if not form.is_valid():
        return invalid(form.errors)
    outcome = services.act_on_messages(
        user=request.user,
        queue=queue,
        action=form.cleaned_data["action"],
        msg_ids=form.cleaned_data["msg_id"],
        parameters=form.parameters(),
        request_token=form.cleaned_data["request_token"],
    )
    result = outcome.result
    return Response(
        s.ActionResultSerializer(
            {
                "audit_id": outcome.audit.pk,
                "outcome": outcome.audit.outcome,
                "result": {
                    "affected": result.affected,
                    "already_gone": result.already_gone,
                    "skipped": result.skipped,
                    "new_ids": {str(original): new for original, new in result.new_ids.items()},
                    "requeued_before": {str(original): copy for original, copy in result.copied_before.items()},
                },
            }
        ).data
    )


@api(["POST"], permissions=(IsAuthenticated, CanOperate), schema=openapi.SEND_MESSAGE)
def send_message(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    body = s.SendRequestSerializer(data=request.data)
    if not body.is_valid():
        return invalid(_serializer_errors(body.errors))
    data = request.data  # as parsed: numbers still as written (RawJSON), which exact_json writes back
    form = forms.SendForm(
        form_data(
            message=exact_json(data["message"]),
            headers=exact_json(data["headers"]) if data.get("headers") is not None else None,
            delay_s=body.validated_data.get("delay_s"),
            request_token=body.validated_data.get("request_token"),
        )
    )
    if not form.is_valid():
        return invalid(form.errors)
    outcome = services.send_message(
        user=request.user,
        queue=queue,
        message=form.cleaned_data["message"],
        headers=form.cleaned_data["headers"],
        delay_s=form.cleaned_data["delay_s"] or 0,
        request_token=form.cleaned_data["request_token"],
    )
    return Response(
        s.SendResultSerializer({"msg_id": outcome.result.affected[0], "audit_id": outcome.audit.pk}).data,
        status=status.HTTP_201_CREATED,
    )


def _create_queue(request: Request) -> Response:
    body = s.CreateQueueRequestSerializer(data=request.data)
    if not body.is_valid():
        return invalid(_serializer_errors(body.errors))
    given = body.validated_data
    # The page asks for the name twice against typing errors; a program's request says it once.
    form = forms.CreateQueueForm(
        form_data(
            name=given["name"],
            confirm_name=given["name"],
            unlogged=given["unlogged"],
            request_token=given.get("request_token"),
        )
    )
    if not form.is_valid():
        return invalid(form.errors)
    outcome = services.create_queue(
        user=request.user,
        name=form.cleaned_data["name"],
        unlogged=form.cleaned_data["unlogged"],
        request_token=form.cleaned_data["request_token"],
    )
    return Response(
        s.CreateQueueResultSerializer(
            {
                "name": form.cleaned_data["name"],
                "unlogged": form.cleaned_data["unlogged"],
                "audit_id": outcome.audit.pk,
            }
        ).data,
        status=status.HTTP_201_CREATED,
    )


def _typed_confirmation(request: Request, queue) -> forms.TypedConfirmationForm | Response:
    """The page's typed confirmation: the queue's name, exactly, in the body (400 otherwise)."""
    body = s.TypedConfirmationSerializer(data=request.data)
    if not body.is_valid():
        return invalid(_serializer_errors(body.errors))
    form = forms.TypedConfirmationForm(form_data(**body.validated_data), expected=queue.queue_name)
    return form if form.is_valid() else invalid(form.errors)


@api(["POST"], permissions=(IsAuthenticated, CanAdminister), schema=openapi.PURGE_QUEUE)
def purge_queue(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    form = _typed_confirmation(request, queue)
    if isinstance(form, Response):
        return form
    outcome = services.purge_queue(user=request.user, queue=queue, request_token=form.cleaned_data["request_token"])
    return Response(s.PurgeResultSerializer({"audit_id": outcome.audit.pk, "purged": outcome.audit.affected}).data)


@api(["POST"], permissions=(IsAuthenticated, CanAdminister), schema=openapi.DROP_QUEUE)
def drop_queue(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    form = _typed_confirmation(request, queue)
    if isinstance(form, Response):
        return form
    outcome = services.drop_queue(user=request.user, queue=queue, request_token=form.cleaned_data["request_token"])
    return Response(s.DropResultSerializer({"audit_id": outcome.audit.pk, **outcome.audit.details}).data)


@api(["POST"], permissions=(IsAuthenticated, CanOperate), schema=openapi.RESEND_MESSAGE)
def resend_message(request: Request, queue_name: str, msg_id: int) -> Response:
    queue = get_queue_or_404(queue_name)
    if redaction.applies_to(request.user):
        raise PermissionDenied(
            "Some payload values are redacted for you (DASHBOARD_REDACT), and an edited copy would "
            "send the redactions instead of them: editing needs the permission to see them."
        )
    body = s.ResendRequestSerializer(data=request.data)
    if not body.is_valid():
        return invalid(_serializer_errors(body.errors))
    given, source = body.validated_data, body.validated_data["source"]
    original = (
        messages.find_message(queue, msg_id, source=source, text_chars=0) if 0 < msg_id <= forms.MAX_MSG_ID else None
    )
    if original is None:
        raise Http404(
            f"Message {msg_id} is not in the {source} of queue “{queue.queue_name}”: a consumer took it, "
            "or it never existed."
        )
    form = forms.EditForm(
        form_data(
            message=exact_json(request.data["message"]),  # numbers as written, as for a send
            headers=exact_json(request.data["headers"]) if request.data.get("headers") is not None else None,
            destination=given.get("destination") or queue.queue_name,
            request_token=given.get("request_token"),
        )
    )
    if not form.is_valid():
        return invalid(form.errors)
    try:
        destination = services.existing_queue(form.cleaned_data["destination"])
    except services.ActionRefused as refusal:
        return invalid({"destination": [str(refusal)]})
    outcome = services.edit_and_resend(
        user=request.user,
        queue=queue,
        msg_id=msg_id,
        source=source,
        destination=destination,
        message=form.cleaned_data["message"],
        headers=form.cleaned_data["headers"],
        include_in_flight=given["include_in_flight"],
        request_token=form.cleaned_data["request_token"],
    )
    if outcome.result.already_gone:
        return Response(
            {
                "detail": f"Message {msg_id} was taken by a consumer meanwhile: nothing was sent.",
                "audit_id": outcome.audit.pk,
            },
            status=status.HTTP_404_NOT_FOUND,
        )
    return Response(
        s.ResendResultSerializer(
            {
                "msg_id": outcome.result.new_ids[msg_id],
                "destination": destination.queue_name,
                "original_msg_id": msg_id,
                "original_archived": outcome.audit.details["original_archived"],
                "audit_id": outcome.audit.pk,
            }
        ).data,
        status=status.HTTP_201_CREATED,
    )


def _filter_query(given: dict) -> str:
    """A bulk action's filter as the message browser's query string, which forms.py then checks
    exactly as it checks the page's. Every value goes as its text: JSON's false, true or a list
    where one value belongs is then refused by the form, never read as "no condition"."""
    return form_data(
        **{
            name: exact_json(value) if name in ("message", "headers") else str(value)
            for name, value in given.items()
            if value is not None
        }
    ).urlencode()


def _bulk_action_form(request: Request, queue, *, confirmed: bool) -> forms.MessageActionForm | Response:
    """The message browser's "all matching this filter", from a JSON body (400 saying why if bad)."""
    body = s.BulkActionRequestSerializer(data=request.data)
    if not body.is_valid():
        return invalid(_serializer_errors(body.errors))
    form = _action_form(
        queue,
        body.validated_data,
        scope="matching",
        confirmed=confirmed,
        filter_query=_filter_query(body.validated_data["filter"]),
    )
    if not form.is_valid():
        return invalid(form.errors)
    return form


@api(["POST"], permissions=(IsAuthenticated, CanOperate), schema=openapi.PLAN_JOB)
def plan_job(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    form = _bulk_action_form(request, queue, confirmed=False)
    if isinstance(form, Response):
        return form
    plan = plans.plan_for_form(queue, form, redacted=redaction.applies_to(request.user))
    return Response(
        s.ActionPlanSerializer(
            {
                "action": plan.action,
                "source": plan.source,
                "count": plan.count,
                "in_flight": plan.in_flight,
                "filter_in_words": plan.filter_words,
                "destructive": plan.destructive,
                "batch_size": settings.BULK_BATCH_SIZE,
            }
        ).data
    )


@api(["POST"], permissions=(IsAuthenticated, CanOperate), schema=openapi.START_JOB)
def start_job(request: Request, queue_name: str) -> Response:
    queue = get_queue_or_404(queue_name)
    form = _bulk_action_form(request, queue, confirmed=True)
    if isinstance(form, Response):
        return form
    data = form.cleaned_data
    if data["action"] in (vocabulary.MOVE, vocabulary.REQUEUE):
        # The page offers only queues that exist; a job sent elsewhere would only fail in the runner.
        try:
            services.existing_queue(data["destination"])
        except services.ActionRefused as refusal:
            return invalid({"parameters.destination": [str(refusal)]})
    redacted = redaction.applies_to(request.user)
    plan = plans.plan_for_form(queue, form, redacted=redacted)
    try:
        job = jobs.create(
            user=request.user,
            queue=queue,
            source=data["source"],
            action=data["action"],
            parameters=form.parameters(),
            message_filter=form.message_filter(redacted=redacted),
            expected=plan.count,
            request_token=data["request_token"],
        )
    except services.AlreadyDone as done:
        return Response(
            {"detail": "already done: this request_token started a job before", "job_id": done.record.pk},
            status=status.HTTP_409_CONFLICT,
        )
    return Response(job_answer(request, job), status=status.HTTP_201_CREATED)


def job_answer(request: Request, job: BulkJob) -> dict:
    return s.JobSerializer(job, context={"redacted": redaction.applies_to(request.user)}).data


@api(["GET"], schema=openapi.JOB_DETAIL)
def job_detail(request: Request, job_id: int) -> Response:
    return Response(job_answer(request, get_job_or_404(job_id)))


@api(["POST"], permissions=(IsAuthenticated, CanOperate), schema=openapi.CANCEL_JOB)
def cancel_job(request: Request, job_id: int) -> Response:
    job = get_job_or_404(job_id)
    jobs.cancel(job, user=request.user)
    return Response(job_answer(request, job))
