"""The JSON parser every app view uses: strict JSON (see :mod:`klaviyo_consent.strict_json`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponseBase
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser

from klaviyo_consent import strict_json


class StrictJSONParser(JSONParser):
    """DRF's JSONParser with a size and depth limit, no duplicate keys, NaN, NUL or lone
    surrogates; a refused body is a 400 whose ``detail`` names the rule it broke."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None) or strict_json.MAX_BYTES
        data = stream.read(limit + 1) if stream is not None else b""
        try:
            return strict_json.loads(data, max_bytes=limit)
        except strict_json.UnsafeJSON as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


#: The parsers of the app's views: strict JSON only. Form and multipart bodies (DRF's other
#: defaults) would carry the same values (``profile.email=...``) past every rule above; they are
#: a 415.
PARSER_CLASSES: list[type[BaseParser]] = [StrictJSONParser]


class StrictBodyMixin:
    """For the app's APIViews: strict JSON, and a body over Django's
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` answered as a DRF 400 that says so (Django's own answer to
    ``RequestDataTooBig`` is an HTML 400 page)."""

    parser_classes = PARSER_CLASSES

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        if isinstance(exc, RequestDataTooBig):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            exc = ParseError(f"JSON parse error - The body is larger than {limit} bytes.")
        return super().handle_exception(exc)  # type: ignore[misc]
