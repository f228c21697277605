"""The rows of the two long lists, the overview's queues and the message browser's messages, and a
queue's verdict, which both the overview and the queue page show.

They are written here with one format string a row, not in their templates: through the template
engine (about 28 nodes a message row, 68 a queue row, each resolved, localised and escaped) fifty
messages cost a page 2.5 ms more and twenty queues 6 ms more (README, "Many queues, and one giant
queue"). Every value goes through format_html, which escapes it."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import date, filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from queues import formatting
from queues.forecast import GROWING, STALLED, UNKNOWN
from queues.selectors.payloads import too_big_for_a_list
from queues.templatetags.queue_format import (
    health_badge,
    json_preview,
    matched_preview,
    not_visible_count,
    rate,
    rate_window,
    row_count,
    sparkline,
    state_class,
    thousands,
    timestamp,
)

register = template.Library()


def _joined(rows) -> SafeString:
    return mark_safe("".join(rows))  # noqa: S308 (each row is format_html's, its values escaped)


NO_CAUSE = mark_safe('<span class="verdict" data-verdict><span class="muted">every threshold met</span></span>')
CAUSE_SEPARATOR = mark_safe('<span class="muted">; </span>')


@register.simple_tag
def verdict(health, queue_name: str, every_cause: bool = False) -> str:
    """A queue's verdict: its causes in words, each linked to the panel of the queue page that shows
    it. Every cause (the queue's header), or the first and how many more (an overview row)."""
    if not health.causes:
        return NO_CAUSE
    queue_url = reverse("queue", args=[queue_name])
    shown = health.causes if every_cause else health.causes[:1]
    causes = format_html_join(
        CAUSE_SEPARATOR,
        '<a class="cause cause-{}" href="{}#{}">{}</a>',
        ((cause.level, queue_url, cause.anchor, cause.words) for cause in shown),
    )
    more = len(health.causes) - len(shown)
    if more:
        causes = format_html('{} <a class="muted small" href="{}">+{} more</a>', causes, queue_url, more)
    return format_html('<span class="verdict" data-verdict>{}</span>', causes)


MESSAGE_ROW = (
    '<tr data-msg-id="{id}" data-source="{source}">{select}'
    '<td class="num" data-label="#"><a href="{url}">{id}</a></td>{where}'
    '<td><span class="state {state_class}">{state}</span></td>'
    '<td class="num" data-column="read_ct" data-label="read_ct">{read_ct}</td>'
    '<td data-label="enqueued">{enqueued}</td>'
    '<td data-label="{moment_label}">{moment}</td>'
    '<td class="payload">{celery}<details id="row-{source}-{id}">'
    "<summary>{preview}</summary>{headers}"
    '<p class="small">{size}. <a href="{url}">Open the whole message</a></p>'
    "</details></td></tr>\n"
)
SELECT_CELL = (
    '<td class="select"><input type="checkbox" name="msg_id" value="{}" form="action-form" '
    'aria-label="Select message {}"></td>'
)


@register.simple_tag
def message_rows(rows, message_filter, messages_url: str, can_act: bool) -> str:
    """The message browser's rows: each links to its message, a checkbox where the user may act."""
    return _joined(_message_row(row, message_filter, messages_url, can_act) for row in rows)


def _message_row(message, message_filter, messages_url: str, can_act: bool) -> str:
    archived = message.source == "archive"
    url = f"{messages_url}{message.msg_id}/" + ("?source=archive" if archived else "")
    if too_big_for_a_list(message):
        preview = format_html('<span class="muted">{}</span>', "too big for a list")
        size = f"Too big for a list: {message.message_stored_bytes:,} bytes stored (compressed)"
    else:
        preview = format_html(
            "<code>{}</code>",
            matched_preview(message, message_filter.highlight)
            if message_filter.highlight
            else json_preview(message.preview),
        )
        size = f"{filesizeformat(message.message_chars or 0)} of JSON"
    return format_html(
        MESSAGE_ROW,
        id=message.msg_id,
        source=message.source,
        url=url,
        select=format_html(SELECT_CELL, message.msg_id, message.msg_id) if can_act else "",
        where=format_html(
            '<td><span class="tag source-{}">{}</span></td>', message.source, "archived" if archived else "live"
        )
        if message_filter.source == "both"
        else "",
        state_class=state_class(message.state),
        state=message.state,
        read_ct=message.read_ct,
        enqueued=timestamp(message.enqueued_at, True),
        moment_label="archived" if archived else "vt",
        moment=timestamp(message.archived_at if archived else message.vt, True),
        celery=format_html(
            '<span class="tag celery-task" title="Celery task" data-celery-task>{}</span>', message.celery_task
        )
        if message.celery_task
        else "",
        preview=preview,
        headers=format_html(
            '<p class="small"><span class="muted">headers</span> <code>{}</code></p>',
            json_preview(message.headers_preview, 300),
        )
        if message.headers_preview
        else "",
        size=size,
    )


OVERVIEW_ROW = (
    '<tr data-queue="{name}">'
    '<td class="health-cell" data-column="health">{badge}{verdict}</td>'
    '<td class="queue-cell"><a class="queue-link" href="{url}">{name}</a>{tags}</td>'
    '<td class="num" data-column="backlog" data-label="Backlog">{backlog}</td>'
    '<td class="num" data-column="visible" data-label="Visible">{visible}</td>'
    '<td class="num" data-column="in-flight" data-label="In flight">{in_flight}</td>'
    '<td class="num" data-column="delayed" data-label="Delayed">{delayed}</td>'
    '<td class="num" data-column="oldest" data-label="Oldest waiting"><span data-oldest="waiting">{oldest}</span>'
    "{oldest_any}</td>"
    '<td class="num" data-column="newest" data-label="Newest">{newest}</td>'
    '<td class="num" data-column="poison" data-label="Poison">{poison}</td>'
    '<td class="num rates" data-label="In · 1 min, 5 min" title="{in_title}">'
    '<span data-column="enqueue-rate-1m">{in_1m}</span> '
    '<span class="muted small" data-column="enqueue-rate">{in_5m}</span></td>'
    '<td class="num rates" data-label="Out · 1 min, 5 min" title="{out_title}">'
    '<span data-column="processing-rate-1m">{out_1m}</span> '
    '<span class="muted small" data-column="processing-rate">{out_5m}</span></td>'
    '<td class="num" data-column="sent" data-label="Sent">{sent}</td>'
    '<td class="num" data-column="archived" data-label="Archived">{archived}</td>'
    '<td class="num forecast" data-column="drain-eta" data-label="Clears in" data-forecast="{forecast_state}" '
    'title="{forecast_title}">{forecast}</td>'
    '<td class="spark" data-label="Last 30 min">{sparkline}</td>'
    "</tr>\n"
)
POISON_UNCOUNTED = mark_safe(
    '<span class="muted" title="This table is too big to count on every page view; the sampler counts it about '
    'once a minute.">–</span>'
)
PARTITIONED_TAG = mark_safe(' <span class="tag">partitioned</span>')
UNLOGGED_TAG = mark_safe(
    ' <span class="tag" title="Unlogged: fast, but emptied after a database crash">unlogged</span>'
)
NO_FORECAST = mark_safe('<span class="muted">–</span>')


@register.simple_tag
def overview_rows(rows, units: dict[str, str]) -> str:
    """The overview's rows: a queue each, its figures in one unit per rate column."""
    return _joined(_overview_row(row, units) for row in rows)


def _overview_row(row, units: dict[str, str]) -> str:
    stats, rates = row.stats, row.rates
    return format_html(
        OVERVIEW_ROW,
        name=stats.name,
        url=reverse("queue", args=[stats.name]),
        badge=health_badge(row.health),
        verdict=verdict(row.health, stats.name),
        tags=_queue_tags(row),
        backlog=row_count(stats.backlog),
        visible=row_count(stats.visible),
        in_flight=not_visible_count(stats.in_flight, stats.not_visible_exact),
        delayed=not_visible_count(stats.delayed, stats.not_visible_exact),
        oldest=("" if stats.oldest_visible_exact else "≈ ") + formatting.duration(stats.oldest_visible_age_s),
        oldest_any=format_html(
            '<span class="oldest-any muted small" data-oldest="any">any state: {}</span>',
            formatting.duration(stats.oldest_age_s),
        )
        if stats.oldest_age_s != stats.oldest_visible_age_s
        else "",
        newest=formatting.duration(stats.newest_age_s),
        poison=_poison(row.poison),
        in_title=_rates_title(rates.enqueue_1m, rates.enqueue, rates, units["in"]),
        in_1m=rate(rates.enqueue_1m, units["in"]),
        in_5m=rate(rates.enqueue, units["in"]),
        out_title=_rates_title(rates.processing_1m, rates.processing, rates, units["out"]),
        out_1m=rate(rates.processing_1m, units["out"]),
        out_5m=rate(rates.processing, units["out"]),
        sent=thousands(stats.sent_total),
        archived=row_count(stats.archived),
        forecast_state=row.forecast.state if row.forecast else "",
        forecast_title="; ".join(
            part for part in (row.forecast.summary, row.forecast.basis, row.forecast.certainty) if part
        )
        if row.forecast
        else "",
        forecast=_forecast(row.forecast),
        sparkline=sparkline(row.sparkline),
    )


def _queue_tags(row) -> str:
    tags = []
    if row.stats.queue.is_partitioned:
        tags.append(PARTITIONED_TAG)
    if row.stats.queue.is_unlogged:
        tags.append(UNLOGGED_TAG)
    if row.table_sharing:
        tags.append(
            format_html(
                ' <span class="tag warning" data-shared-tables title="pgmq gives these names one table, {}: this '
                "row's figures are that table's, counted once in the totals\">shares its tables with {}</span>",
                row.table_sharing.live_table,
                ", ".join(f"“{other}”" for other in row.table_sharing.others),
            )
        )
    return _joined(tags)


def _poison(poison) -> str:
    if poison is None:
        return POISON_UNCOUNTED
    if poison.counted_at is None:
        return format_html("<span>{}</span>", thousands(poison.value))
    return format_html(
        '<span title="counted by the sampler at {}">{}</span>',
        date(timezone.localtime(poison.counted_at), "H:i:s"),
        thousands(poison.value),
    )


def _rates_title(last_minute: float | None, five_minutes: float | None, rates, unit: str) -> str:
    return (
        f"{rate(last_minute, unit)} {rate_window(rates.window_1m_s)}; "
        f"{rate(five_minutes, unit)} {rate_window(rates.window_s)}"
    )


def _forecast(forecast) -> str:
    if forecast is None:
        return NO_FORECAST
    if forecast.state in (STALLED, GROWING):
        shown = format_html('<span class="forecast-never">{}</span>', forecast.short)
    elif forecast.state == UNKNOWN:
        shown = format_html('<span class="muted">{}</span>', forecast.short)
    else:
        shown = format_html("<span>{}</span>", forecast.short)
    if forecast.confidence and forecast.state != STALLED:
        return format_html(
            '{} <span class="muted small" data-forecast-confidence>{}</span>', shown, forecast.confidence
        )
    return shown
