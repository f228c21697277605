"""How numbers, ages, rates, health and sparklines look on every page."""

from __future__ import annotations

import json
import re

from django import template
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JsonLexer

from queues import alerting, formatting
from queues.selectors import payloads
from queues.selectors.stats import RowCount
from queues.vocabulary import ACTIONS

register = template.Library()

ESTIMATE_EXPLANATION = (
    "PostgreSQL's estimate (pg_stat's running row count, or the planner's statistics): "
    "counting every row of a table this big would load the database."
)


@register.filter
def action_label(name: str) -> str:
    """An action's label as the pages name it (vocabulary.py); an account change's name in words
    ("change_account": "Change account")."""
    action = ACTIONS.get(name)
    return action.label if action else name.replace("_", " ").capitalize()


@register.filter
def thousands(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


@register.simple_tag
def row_count(count: RowCount | None) -> str:
    """An exact count as is; an estimate with ≈ and, on hover, why it is not exact."""
    if count is None:
        return format_html('<span class="muted" title="{}">–</span>', "this table does not exist")
    if count.exact:
        return format_html('<span class="count">{}</span>', f"{count.value:,}")
    return format_html('<span class="count estimate" title="{}">≈ {}</span>', ESTIMATE_EXPLANATION, f"{count.value:,}")


NOT_VISIBLE_ESTIMATE = (
    "More messages are in flight or delayed than the dashboard counts on every view "
    "(DASHBOARD_EXACT_COUNT_LIMIT): estimated from a sample of the table's pages"
)


@register.simple_tag
def not_visible_count(value: int, exact: bool) -> str:
    """In flight or delayed: counted, or estimated from a sample of pages (≈)."""
    if exact:
        return format_html("{}", f"{value:,}")
    return format_html('<span class="count estimate" title="{}">≈ {}</span>', NOT_VISIBLE_ESTIMATE, f"{value:,}")


@register.filter
def age(seconds: float | None) -> str:
    return formatting.duration(seconds)


@register.filter
def rate(per_second: float | None, unit: str | None = None) -> str:
    return formatting.rate(per_second, unit)


@register.filter
def rate_window(seconds: float | None) -> str:
    """The window a rate was measured over, as long as it really was (shorter while the history is)."""
    return "no history yet" if seconds is None else f"over the last {formatting.duration(seconds)}"


@register.filter
def json_preview(value: object, length: int = 160) -> str:
    """Compact JSON on one line, cut to `length` characters. Escaped by the template, like all payloads."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= length else text[: length - 1] + "…"


register.filter("too_big_for_a_list", payloads.too_big_for_a_list)


@register.simple_tag
def matched_preview(message, needle: str) -> str:
    """A searched row's preview (selectors.messages.listing cut it around the first match), "…" where
    it was cut, each occurrence of `needle` in <mark>. The payload is untrusted: every piece of it is
    escaped, and only the <mark> tags around escaped pieces are markup."""
    text = message.preview
    if text is None:
        return ""
    pieces = ["…" if message.preview_start > 1 else ""]
    shown_to = 0
    for match in re.finditer(re.escape(needle), text, re.IGNORECASE):
        pieces += [escape(text[shown_to : match.start()]), "<mark>", escape(match.group()), "</mark>"]
        shown_to = match.end()
    pieces.append(escape(text[shown_to:]))
    if message.preview_start - 1 + len(text) < (message.message_chars or 0):
        pieces.append("…")
    return mark_safe("".join(pieces))  # noqa: S308 (built of escaped pieces above)


@register.simple_tag
def health_badge(health) -> str:
    return format_html('<span class="health health-{}" title="{}">{}</span>', health.state, str(health), health.state)


@register.simple_tag
def sparkline(values: list[int], label: str = "backlog, last 30 min") -> str:
    """A small SVG line of the values, drawn on the server: no script, nothing to load."""
    if len(values) < 2:
        return format_html(
            '<span class="muted" title="{}">no history yet</span>',
            "The sampler (manage.py sample_metrics) has not stored enough samples yet.",
        )
    width, height = 100, 24
    top = max(values) or 1
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))
    return format_html(
        '<svg class="sparkline" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<polyline points="{}"/></svg>',
        width,
        height,
        f"{label}: from {values[0]:,} to {values[-1]:,}, peak {top:,}",
        points,
    )


@register.simple_tag(takes_context=True)
def sort_header(context, column: str, label: str, numeric: bool = True, explanation: str = "") -> str:
    """A column header that sorts by the column; a second click reverses the order. An explanation
    comes as an ⓘ beside it (queues/_explain.html)."""
    current, descending = context["sort"], context["descending"]
    active = column == current
    next_sort = column if (active and descending) or (not active and not numeric) else f"-{column}"
    query = context["request"].GET.copy()
    query["sort"] = next_sort
    query.pop("page", None)
    aria = ("descending" if descending else "ascending") if active else "none"
    arrow = ("▼" if descending else "▲") if active else ""
    return format_html(
        '<th scope="col" class="{}" aria-sort="{}"><a href="?{}">{}{}</a>{}</th>',
        "num" if numeric else "",
        aria,
        query.urlencode(),
        label,
        format_html(' <span aria-hidden="true">{}</span>', arrow) if arrow else "",
        render_to_string("queues/_explain.html", {"key": f"column-{column}", "label": label, "text": explanation})
        if explanation
        else "",
    )


@register.simple_tag(takes_context=True)
def health_summary(context, counts: dict[str, int]) -> str:
    """ "2 critical · 5 warning · 90 ok", each a link to the overview showing only those queues."""
    query = context["request"].GET.copy()
    query.pop("page", None)

    def link(state: str) -> str:
        query["health"] = state
        return "?" + query.urlencode()

    return format_html_join(
        " · ",
        '<a class="health-count health-{}" href="{}" data-health-count="{}">{} {}</a>',
        (
            (state, link(state), state, counts.get(state, 0), state)
            for state in ("critical", "warning", "ok")
            if counts.get(state)
        ),
    )


# Above this size a payload is shown cut, with a link to the whole (highlighting a megabyte of
# JSON in the page would stall the browser and the server).
DISPLAY_LIMIT_CHARS = 200_000


@register.filter
def highlight_json(text: str) -> str:
    """JSON text (PostgreSQL's jsonb_pretty) syntax-highlighted, cut to DISPLAY_LIMIT_CHARS.
    Pygments escapes every token: payloads are untrusted."""
    return mark_safe(highlight(text[:DISPLAY_LIMIT_CHARS], JsonLexer(), HtmlFormatter(nowrap=True)))  # noqa: S308


@register.filter
def ago(moment) -> str:
    """How long ago, to the second when recent: "12 s ago", "3 h 5 min ago"."""
    if moment is None:
        return "–"
    return formatting.duration((timezone.now() - moment).total_seconds()) + " ago"


@register.simple_tag
def timestamp(moment, precise: bool = False) -> str:
    """A <time> with the exact moment (UTC) on hover: one call instead of three date filters a cell,
    which adds up on pages of fifty rows."""
    if moment is None:
        return "–"
    shown = moment.strftime("%Y-%m-%d %H:%M:%S")
    exact = moment.strftime("%Y-%m-%d %H:%M:%S.%f %Z") if precise else moment.strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(), exact, shown)


@register.filter
def state_class(state: str) -> str:
    return "state-" + state.replace(" ", "-")


@register.simple_tag
def alert_value(measure: str, value: float | None) -> str:
    """An alert rule's threshold or measured value in its unit: an age for ages, a count otherwise."""
    return alerting.describe(measure, value)
