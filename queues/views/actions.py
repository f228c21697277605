"""Every view that changes something. POST only (GET shows the form or the confirmation and never
changes anything), CSRF-checked, each behind its permission: operators act on messages and send,
admins also purge, create and drop queues. services.py does the work and writes the audit log.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib import messages as flash
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from queues import celery_tasks, forms, jobs, redaction, services, vocabulary
from queues.filters import IN_FLIGHT
from queues.pgmq import ARCHIVE, LIVE, Queue, TableSharing
from queues.selectors import messages, plans, stats
from queues.shortcuts import admin_required, get_queue_or_404, operator_required


def _dialog(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    """The dialog's content for htmx, or the same content as a page of its own without script."""
    template = "queues/actions/_dialog.html" if request.htmx else "queues/actions/page.html"
    return render(request, template, context, status=status)


@require_POST
@operator_required()
def message_action(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    form = forms.MessageActionForm(request.POST, queue_name=queue.queue_name)
    valid = form.is_valid()
    # A missing destination or time is asked again in the confirmation; anything else ends here.
    if not valid and set(form.errors) - {"destination", "until"}:
        return _dialog(request, {"queue": queue, "form": form, "stage": "invalid"}, status=400)
    data = form.cleaned_data
    plan = plans.plan_for_form(queue, form, redacted=redaction.applies_to(request.user))
    context = {
        "queue": queue,
        "form": form,
        "plan": plan,
        "count_budget_s": plans.COUNT_BUDGET_MS // 1000,
        "payload_limit": settings.AUDIT_PAYLOAD_LIMIT,
        "batch_size": settings.BULK_BATCH_SIZE,
        "request_token": data.get("request_token") or form.fields["request_token"].initial,
    }
    if not valid or not data["confirmed"]:
        return _dialog(request, {**context, "stage": "confirm"}, status=200 if valid else 400)
    try:
        if data["scope"] == "selected":
            outcome = services.act_on_messages(
                user=request.user,
                queue=queue,
                action=data["action"],
                msg_ids=data["msg_id"],
                parameters=form.parameters(),
                request_token=data["request_token"],
            )
            return _dialog(request, {**context, "stage": "result", "outcome": outcome})
        job = jobs.create(
            user=request.user,
            queue=queue,
            source=data["source"],
            action=data["action"],
            parameters=form.parameters(),
            message_filter=form.message_filter(redacted=redaction.applies_to(request.user)),
            expected=plan.count,
            request_token=data["request_token"],
        )
    except services.TablesShared as refusal:
        return _dialog(
            request, {**context, "stage": "refused", "refusal": str(refusal), "sharing": refusal.sharing}, status=409
        )
    except services.ActionRefused as refusal:
        return _dialog(request, {**context, "stage": "refused", "refusal": str(refusal)}, status=400)
    except services.AlreadyDone as done:
        return _dialog(request, {**context, "stage": "already_done", "record": done.record}, status=409)
    return _dialog(request, {**context, "stage": "job", "job": job})


def posted(request: HttpRequest):
    """The form's data on a POST, even an empty one (`request.POST or None` would show an empty POST
    the blank form, with a 400 and not a word of what is missing)."""
    return request.POST if request.method == "POST" else None


def refusals_as_pages(view):
    """(The API's twin: api.views.refusals_as_json.) A page form's action refused, or already done by
    the same form sent before, answers with a message where it can be seen (the queue's page, or the
    first time's record), not a server error."""

    @functools.wraps(view)
    def answering(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except services.AlreadyDone as done:
            flash.info(request, "That was already done: the form was sent twice. Here is the record of the first time.")
            return redirect(reverse("audit-entry", args=[done.record.pk]))
        except services.TablesShared as refusal:
            return shared_tables_page(request, refusal.sharing, refusal.action, refusal=str(refusal))
        except services.ActionRefused as refusal:
            flash.error(request, refusal.not_done())
            queue_name = kwargs.get("queue_name")
            if queue_name and Queue.objects.filter(queue_name=queue_name).exists():
                return redirect(reverse("queue", args=[queue_name]))
            return redirect(reverse("overview"))

    return answering


def shared_tables_page(
    request: HttpRequest, sharing: TableSharing, action: str, *, refusal: str | None = None
) -> HttpResponse:
    """Why `action` is off for a queue whose tables another name shares, and the SQL that resolves it:
    instead of the action's form (200), or as the answer to an attempt (409)."""
    return render(
        request,
        "queues/shared_tables.html",
        {
            "sharing": sharing,
            "action_label": vocabulary.ACTIONS[action].label,
            "refusal": refusal,
        },
        status=409 if refusal else 200,
    )


@require_http_methods(["GET", "POST"])
@operator_required(vocabulary.SEND)
@refusals_as_pages
def send_message(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    form = forms.SendForm(posted(request), initial={"message": "{\n  \n}", "delay_s": 0})
    if request.method == "POST" and form.is_valid():
        outcome = services.send_message(
            user=request.user,
            queue=queue,
            message=form.cleaned_data["message"],
            headers=form.cleaned_data["headers"],
            delay_s=form.cleaned_data["delay_s"] or 0,
            request_token=form.cleaned_data["request_token"],
        )
        new_id = outcome.result.affected[0]
        flash.success(request, f"Sent message {new_id} to {queue.queue_name}.")
        return redirect(reverse("message", args=[queue.queue_name, new_id]))
    return render(
        request,
        "queues/actions/send.html",
        {"queue": queue, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@require_http_methods(["GET", "POST"])
@operator_required(vocabulary.EDIT_AND_RESEND)
@refusals_as_pages
def edit_and_resend(request: HttpRequest, queue_name: str, msg_id: int) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    if redaction.applies_to(request.user):
        raise PermissionDenied(
            "Some payload values are redacted for you (DASHBOARD_REDACT), and an edited copy would "
            "send the redactions instead of them: editing needs the permission to see them."
        )
    source = request.GET.get("source") or request.POST.get("source") or LIVE
    if source not in (LIVE, ARCHIVE):
        return render(request, "queues/400.html", {"message": "source must be live or archive"}, status=400)
    original = messages.find_message(queue, msg_id, source=source)
    if original is None:
        flash.error(request, f"Message {msg_id} is no longer in {queue.queue_name}: a consumer took it meanwhile.")
        return redirect(reverse("messages", args=[queue.queue_name]))
    # A Celery task whose arguments decode is edited by its args and kwargs (?raw=1: the envelope).
    task = celery_tasks.read_task(original.message_text)
    as_task = (
        request.POST.get("celery") if request.method == "POST" else task and task.decoded and "raw" not in request.GET
    )
    if as_task:
        form = forms.CeleryEditForm(
            posted(request),
            original_text=original.message_text,
            initial={
                "args": task.args if task else "",
                "kwargs": task.kwargs if task else "",
                "headers": original.headers_text or "",
                "destination": queue.queue_name,
            },
        )
    else:
        form = forms.EditForm(
            posted(request),
            initial={
                "message": original.message_text,
                "headers": original.headers_text or "",
                "destination": queue.queue_name,
            },
        )
    if request.method == "POST" and form.is_valid():
        try:
            destination = services.existing_queue(form.cleaned_data["destination"] or queue.queue_name)
        except services.ActionRefused as refusal:
            form.add_error("destination", str(refusal))
        else:
            try:
                outcome = services.edit_and_resend(
                    user=request.user,
                    queue=queue,
                    msg_id=msg_id,
                    source=source,
                    destination=destination,
                    message=form.cleaned_data["message"],
                    headers=form.cleaned_data["headers"],
                    include_in_flight=form.cleaned_data["include_in_flight"],
                    request_token=form.cleaned_data["request_token"],
                )
            except services.SecondDelivery as refusal:
                form.add_error("include_in_flight", str(refusal))
                return _edit_page(request, queue, form, original, source, status=409, task=task)
            if outcome.result.already_gone:
                flash.error(request, f"Message {msg_id} was taken by a consumer meanwhile: nothing was sent.")
                return redirect(reverse("messages", args=[queue.queue_name]))
            new_id = outcome.result.new_ids[msg_id]
            flash.success(
                request,
                f"Sent the edited copy as message {new_id} to {destination.queue_name}"
                + (f"; message {msg_id} is archived." if source == LIVE else "."),
            )
            return redirect(reverse("message", args=[destination.queue_name, new_id]))
    return _edit_page(
        request, queue, form, original, source, status=400 if request.method == "POST" else 200, task=task
    )


def _edit_page(
    request: HttpRequest, queue: Queue, form, original, source: str, *, status: int, task=None
) -> HttpResponse:
    return render(
        request,
        "queues/actions/edit.html",
        {
            "queue": queue,
            "form": form,
            "original": original,
            "source": source,
            "in_flight": source == LIVE and original.state == IN_FLIGHT,
            "destinations": Queue.objects.values_list("queue_name", flat=True),
            "celery_task": task,
            "as_task": isinstance(form, forms.CeleryEditForm),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@admin_required(vocabulary.PURGE)
@refusals_as_pages
def purge_queue(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    if request.method == "GET" and queue.table_sharing:
        return shared_tables_page(request, queue.table_sharing, vocabulary.PURGE)
    form = forms.TypedConfirmationForm(posted(request), expected=queue.queue_name)
    if request.method == "POST" and form.is_valid():
        outcome = services.purge_queue(user=request.user, queue=queue, request_token=form.cleaned_data["request_token"])
        flash.success(request, f"Purged {outcome.audit.affected:,} messages from {queue.queue_name}.")
        return redirect(reverse("queue", args=[queue.queue_name]))
    counts = stats.table_row_counts([queue.tables[LIVE].name])
    return render(
        request,
        "queues/actions/purge.html",
        {
            "queue": queue,
            "form": form,
            "backlog": counts.get(queue.tables[LIVE].name),
            "payload_limit": settings.AUDIT_PAYLOAD_LIMIT,
        },
        status=400 if request.method == "POST" else 200,
    )


@require_http_methods(["GET", "POST"])
@admin_required(vocabulary.DROP_QUEUE)
@refusals_as_pages
def drop_queue(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    if request.method == "GET" and queue.table_sharing:
        return shared_tables_page(request, queue.table_sharing, vocabulary.DROP_QUEUE)
    form = forms.TypedConfirmationForm(posted(request), expected=queue.queue_name)
    if request.method == "POST" and form.is_valid():
        services.drop_queue(user=request.user, queue=queue, request_token=form.cleaned_data["request_token"])
        flash.success(request, f"Dropped the queue {queue.queue_name}, its messages and its archive.")
        return redirect(reverse("overview"))
    counts = stats.table_row_counts([queue.tables[kind].name for kind in (LIVE, ARCHIVE)])
    return render(
        request,
        "queues/actions/drop.html",
        {
            "queue": queue,
            "form": form,
            "backlog": counts.get(queue.tables[LIVE].name),
            "archived": counts.get(queue.tables[ARCHIVE].name),
        },
        status=400 if request.method == "POST" else 200,
    )


@require_http_methods(["GET", "POST"])
@admin_required(vocabulary.CREATE_QUEUE)
@refusals_as_pages
def create_queue(request: HttpRequest) -> HttpResponse:
    form = forms.CreateQueueForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.create_queue(
                user=request.user,
                name=form.cleaned_data["name"],
                unlogged=form.cleaned_data["unlogged"],
                request_token=form.cleaned_data["request_token"],
            )
        except services.ActionRefused as refusal:
            form.add_error("name", str(refusal))
        else:
            flash.success(request, f"Created the queue {form.cleaned_data['name']}.")
            return redirect(reverse("queue", args=[form.cleaned_data["name"]]))
    return render(
        request, "queues/actions/create.html", {"form": form}, status=400 if request.method == "POST" else 200
    )
