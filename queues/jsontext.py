"""JSON kept as its exact text.

Python reads JSON numbers as floats: 1.10 comes back as 1.1, 12345678901234567.89 as
1.2345678901234568e+16. A message the dashboard copies (move, requeue), sends or keeps in the audit
log must stay exactly as it was, so payloads travel as text from PostgreSQL and back to it, and
PostgreSQL alone parses them.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Expression, F, Func, JSONField, TextField, Value
from django.db.models.functions import Cast


class RawJSON(str):
    """A JSON document as its exact text (checked valid JSON by whoever made it)."""


def json_text(value: Any, *, encoder: type[json.JSONEncoder] | None = None, allow_nan: bool = True) -> str:
    """JSON text for `value`, in which every RawJSON inside is kept as written; any other value is
    written by json.dumps with `encoder` (e.g. DRF's, for dates and UUIDs)."""
    if isinstance(value, RawJSON):
        return str(value)
    options = {"encoder": encoder, "allow_nan": allow_nan}
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{json.dumps(str(key), ensure_ascii=False)}: {json_text(item, **options)}"
                for key, item in value.items()
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json_text(item, **options) for item in value) + "]"
    return json.dumps(value, cls=encoder, ensure_ascii=False, allow_nan=allow_nan)


def as_jsonb(value: Any) -> Cast:
    """`value` for a JSONField, parsed by PostgreSQL from its exact text."""
    return Cast(Value(json_text(value), output_field=TextField()), output_field=JSONField())


def pretty(column: str | Expression) -> Func:
    """A jsonb column indented by PostgreSQL, numbers exactly as stored (for pages and exports)."""
    return Func(F(column) if isinstance(column, str) else column, function="jsonb_pretty", output_field=TextField())
