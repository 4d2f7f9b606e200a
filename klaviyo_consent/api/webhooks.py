"""The endpoint Klaviyo's webhooks post to: verified by signature, not by a user."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.parsers import StrictBodyMixin
from klaviyo_consent.api.schema import (
    CodedErrorSerializer,
    Documented,
    errors,
    response_examples,
)
from klaviyo_consent.api.throttling import WEBHOOK, ThrottledMixin
from klaviyo_consent.exceptions import MalformedWebhook, WebhookRejected
from klaviyo_consent.services.webhooks import handle_webhook, verify_webhook


@extend_schema(
    summary="Klaviyo's signed webhook deliveries",
    request=OpenApiTypes.OBJECT,
    responses={
        200: OpenApiTypes.OBJECT,
        400: OpenApiResponse(CodedErrorSerializer, description="Not a webhook body."),
        403: OpenApiResponse(
            CodedErrorSerializer,
            description="The signature or timestamp is wrong, or the delivery was replayed.",
            examples=response_examples(("Rejected", examples.WEBHOOK_REJECTED)),
        ),
        **errors(415, 429),
        500: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="Stored but not processed (code processing_failed): Klaviyo resends.",
        ),
    },
    examples=response_examples(("Handled", examples.WEBHOOK_HANDLED)),
)
class KlaviyoWebhookView(Documented, ThrottledMixin, StrictBodyMixin, APIView):
    """Accept a signed Klaviyo delivery and re-read the profiles it names.

    No authentication (Klaviyo has no session or token) and so no CSRF check: the HMAC
    signature over the raw body is the credential. The body is verified as raw bytes first,
    then read as strict JSON (:mod:`klaviyo_consent.strict_json`), as every app view reads it.
    """

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    throttle_scope = WEBHOOK

    def post(self, request: Request) -> Response:
        try:
            delivery = verify_webhook(request.body, request.headers)
        except WebhookRejected as rejected:
            return Response(
                {"detail": rejected.message, "code": rejected.code},
                status=status.HTTP_403_FORBIDDEN,
            )
        except MalformedWebhook as error:
            return Response(
                {"detail": str(error), "code": "malformed"}, status=status.HTTP_400_BAD_REQUEST
            )
        report = handle_webhook(delivery)
        if report.failed:
            # Recorded on the row; a non-2xx answer makes Klaviyo resend, and the resend of a
            # delivery that was never processed is processed (not refused as a replay).
            return Response(
                {**report.as_dict(), "code": "processing_failed"},
                status=status.HTTP_500_INTERNAL_SERVER_ERROR,
            )
        return Response(report.as_dict())
