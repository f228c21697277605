"""JSON with payloads kept as PostgreSQL wrote them.

DRF's JSONRenderer goes through Python's json, which would read 1.10 back as 1.1 and
12345678901234567.89 as 1.2345678901234568e+16 if a payload passed through it as data. Payloads
reach the API as text (queues.jsontext.RawJSON) and are written into the response as they are.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

from queues.jsontext import RawJSON, json_text


def exact_json(value: Any) -> str:
    # Dates, UUIDs, lazy strings as DRF writes them; NaN never (it is not JSON).
    return json_text(value, encoder=JSONEncoder, allow_nan=False)


class ExactJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        return exact_json(data).encode()


class ExactJSONParser(JSONParser):
    """Request bodies read with their numbers kept as written (a RawJSON each), so a message sent
    through the API reaches pgmq as exactly as one typed into the page."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(stream.read().decode(encoding), parse_float=RawJSON, parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise ParseError(f"JSON parse error - {error}") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
