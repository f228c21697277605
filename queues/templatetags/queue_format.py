"""How numbers, counts and payloads look on every page."""
from __future__ import annotations

import json

from django import template
from django.utils.html import format_html

from queues.selectors import RowCount

register = template.Library()


@register.filter
def thousands(value: int) -> str:
    return f"{value:,}"


@register.simple_tag
def row_count(count: RowCount | None) -> str:
    """An exact count as is; an estimate with ≈ and, on hover, why it is not exact."""
    if count is None:
        return format_html('<span class="muted" title="{}">table missing</span>',
                           "pgmq.meta lists this queue but its table does not exist")
    if count.exact:
        return format_html('<span class="count">{}</span>', f"{count.value:,}")
    return format_html(
        '<span class="count estimate" title="{}">≈ {}</span>',
        "The planner's estimate (pg_class.reltuples scaled to the table's size): counting every row "
        "of a table this big would load the database.",
        f"{count.value:,}",
    )


@register.filter
def json_preview(value: object, length: int = 160) -> str:
    """Compact JSON on one line, cut to `length` characters. Escaped by the template, like all payloads."""
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= length else text[: length - 1] + "…"
