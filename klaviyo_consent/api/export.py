"""``GET events/export/``: the whole ledger (or a slice), streamed as CSV or JSON Lines.

A thin wrapper around ``services.export``; it needs the view permission for consent events.
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from klaviyo_consent.api.permissions import CanViewConsent
from klaviyo_consent.api.schema import Documented, errors, query
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import ConsentEvent
from klaviyo_consent.services import export

#: The query parameters this endpoint reads; any other is a 400 (a misspelt filter would
#: otherwise export everything).
PARAMETERS = ("format", "since", "until", "channel", "profile")


_EXPORTED = (
    "Streamed; each row an event with its evidence, consent text hash and version, verdict "
    "and leaf hash (docs/api.md)."
)


@extend_schema(
    summary="Export the ledger as CSV or JSON Lines",
    parameters=[
        query("format", OpenApiTypes.STR, "csv (default) or jsonl.", enum=["csv", "jsonl"]),
        query("since", OpenApiTypes.DATETIME, "Events recorded at or after this time."),
        query("until", OpenApiTypes.DATETIME, "Events recorded before this time."),
        query("channel", OpenApiTypes.STR, "Only this channel's events.", enum=["email", "sms"]),
        query("profile", OpenApiTypes.INT, "Only this profile's events."),
    ],
    responses={
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description=_EXPORTED,
            examples=[
                OpenApiExample(
                    "CSV",
                    value="id,recorded_at,profile,email,...\r\n8,2026-11-30T07:40:17Z,1,...",
                    response_only=True,
                )
            ],
        ),
        (200, "application/jsonl"): OpenApiResponse(
            OpenApiTypes.STR,
            description=_EXPORTED,
            examples=[
                OpenApiExample(
                    "JSON Lines",
                    value='{"id": 8, "recorded_at": "2026-11-30T07:40:17Z", "profile": 1, ...}\n',
                    response_only=True,
                )
            ],
        ),
        **errors(400, 401, 403),
    },
)
class EventExportView(Documented, APIView):
    """``GET events/export/?format=csv|jsonl&since=&until=&channel=&profile=``: every event
    with its evidence, consent text hash and version, verdict and leaf hash (docs/api.md)."""

    permission_classes = [CanViewConsent]

    def get_queryset(self) -> Any:
        return ConsentEvent.objects.none()  # names the model CanViewConsent checks

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # ``format`` selects the export's format, not a DRF renderer; errors answer in JSON.
        return (JSONRenderer(), JSONRenderer.media_type)

    def get(self, request: Request) -> StreamingHttpResponse:
        params = request.query_params
        errors = {key: ["Unknown query parameter."] for key in params if key not in PARAMETERS}
        errors |= {key: ["Give it once."] for key in PARAMETERS if len(params.getlist(key)) > 1}
        if errors:
            raise ValidationError(errors)
        try:
            fmt = export.parse_format(params.get("format"))
            filters = export.parse_filters(**{key: params.get(key) for key in PARAMETERS[1:]})
        except ConsentValidationError as error:
            raise ValidationError({error.field: [error.message]}) from error
        response = StreamingHttpResponse(
            export.export(filters, fmt), content_type=export.CONTENT_TYPES[fmt]
        )
        response["Content-Disposition"] = f'attachment; filename="consent-events.{fmt}"'
        return response
