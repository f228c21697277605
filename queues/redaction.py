"""Redaction of sensitive JSON paths in payloads and headers (DASHBOARD_REDACT).

A path is `customer.email` (in the message), `message.card.*` or `headers.authorization`; `*`
stands for every key of an object or every element of an array at that level; a key met in an
array is looked up in each of its elements; header names match whatever their capitals. A user without the
permission `queues.view_unredacted` sees "[redacted]" in place of each value a path reaches: in
lists, details, downloads, the audit log, and in what filters and searches match (a search for an
e-mail address must not find the message whose address is hidden).

It is done by PostgreSQL, on the server, in the same query that reads the payload: the value
never leaves the database for such a user, and numbers stay exactly as stored.
"""

from __future__ import annotations

import itertools

from django.conf import settings
from django.db.models import F, Func, JSONField

REDACTED = "[redacted]"
SEE_UNREDACTED = "queues.view_unredacted"


def applies_to(user) -> bool:
    """Whether this user sees payloads redacted."""
    return bool(settings.REDACT_PATHS) and not user.has_perm(SEE_UNREDACTED)


def _literal(key: str) -> str:
    # Keys come from the settings, not from users; quoted all the same. % is doubled because
    # Django always sends the ORM's SQL with parameters, where psycopg reads % as a placeholder.
    return "'" + key.replace("'", "''").replace("%", "%%") + "'"


def _redact_sql(
    inner: str, keys: tuple[str, ...], names: itertools.count, *, any_case: bool, in_array: bool = False
) -> str:
    """SQL for `inner` (a jsonb expression) with the value at `keys` replaced. `inner` is bound
    to a name first, so however deep the path, it is written (and computed) once. A key is looked
    up in each element of an array met on the way (one level: not in arrays of arrays); with
    `any_case`, whatever its capitals (header names)."""
    if not keys:
        return f"to_jsonb({_literal(REDACTED)}::text)"
    n = next(names)
    value, key, rest = f"j{n}", keys[0], keys[1:]
    in_object = _redact_sql(f"v{n}", rest, names, any_case=any_case)
    each_value = (
        f"(SELECT coalesce(jsonb_object_agg(k{n}, {{}}), '{{{{}}}}'::jsonb) "
        f"FROM jsonb_each({value}) AS e{n}(k{n}, v{n}))"
    )
    if key == "*":
        in_array_element = _redact_sql(f"w{n}", rest, names, any_case=any_case)
        on_object = each_value.format(in_object)
    else:
        # A key in each element of an array: the same step, applied one level down.
        in_array_element = f"w{n}" if in_array else _redact_sql(f"w{n}", keys, names, any_case=any_case, in_array=True)
        if any_case:
            on_object = each_value.format(
                f"CASE WHEN lower(k{n}) = lower({_literal(key)}) THEN {in_object} ELSE v{n} END"
            )
        else:
            at = f"ARRAY[{_literal(key)}]"
            inside = _redact_sql(f"({value} #> {at})", rest, names, any_case=any_case)
            on_object = (
                f"CASE WHEN ({value} #> {at}) IS NOT NULL THEN jsonb_set({value}, {at}, {inside}) ELSE {value} END"
            )
    body = (
        f"CASE jsonb_typeof({value}) "
        f"WHEN 'object' THEN {on_object} "
        f"WHEN 'array' THEN (SELECT coalesce(jsonb_agg({in_array_element} ORDER BY i{n}), '[]'::jsonb) "
        f"FROM jsonb_array_elements({value}) WITH ORDINALITY AS a{n}(w{n}, i{n})) "
        f"ELSE {value} END"
    )
    return f"(SELECT {body} FROM (SELECT {inner} AS {value} OFFSET 0) AS r{n})"


def redact_sql(inner: str, column: str) -> str:
    """SQL for the jsonb expression `inner` (a message or its headers) as a redacted user sees it."""
    names = itertools.count()
    for path_column, keys in settings.REDACT_PATHS:
        if path_column == column:
            inner = _redact_sql(inner, keys, names, any_case=column == "headers")
    return inner


class Redacted(Func):
    """A payload column as a user without the permission sees it."""

    output_field = JSONField()

    def __init__(self, column: str) -> None:
        super().__init__(F(column))
        self.column = column

    def as_sql(self, compiler, connection, **extra):
        inner, params = compiler.compile(self.source_expressions[0])
        return redact_sql(inner, self.column), params


def payload(column: str, *, redacted: bool):
    """The column to show, filter and search: as stored, or as a redacted user sees it."""
    if redacted and any(path_column == column for path_column, _ in settings.REDACT_PATHS):
        return Redacted(column)
    return F(column)


def _record_sql(record: str) -> str:
    """An audit record's object holding a message and its headers (a sent message, a deleted one)."""
    parts = " || ".join(
        f"CASE WHEN jsonb_typeof({record}) = 'object' AND {record} ? '{column}' "
        f"THEN jsonb_build_object('{column}', {redact_sql(f'({record} -> {column!r})', column)}) "
        f"ELSE '{{}}'::jsonb END"
        for column in ("message", "headers")
    )
    return f"({record} || {parts})"


class RedactedRecord(Func):
    """An audit log column as a user without the permission sees it: `target` (a sent message and
    its headers) or, with many=True, `deleted_payloads` ([{msg_id, message, headers}, ...])."""

    output_field = JSONField()

    def __init__(self, column: str, *, many: bool = False) -> None:
        super().__init__(F(column))
        self.many = many

    def as_sql(self, compiler, connection, **extra):
        inner, params = compiler.compile(self.source_expressions[0])
        if not self.many:
            return _record_sql(inner), params
        return (
            f"(SELECT jsonb_agg({_record_sql('p')} ORDER BY i) "
            f"FROM jsonb_array_elements({inner}) WITH ORDINALITY AS deleted(p, i))"
        ), params
