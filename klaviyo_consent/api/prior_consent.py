"""``check/``: has this email or phone number consented before? Answered from the ledger."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.parsers import StrictBodyMixin
from klaviyo_consent.api.permissions import CanViewConsent
from klaviyo_consent.api.renderers import ExampleBody
from klaviyo_consent.api.schema import Documented, errors, request_example, response_examples
from klaviyo_consent.api.serializers import StrictSerializer
from klaviyo_consent.api.throttling import CHECK, ThrottledMixin
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.phone import clean_country
from klaviyo_consent.services.prior_consent import MAX_IDENTIFIERS, check_prior_consent


def _identifiers() -> serializers.ListField:
    # Blank and odd strings are kept: each gets its own error in the answer, never a silent drop.
    return serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=320),
        required=False,
        default=list,
        max_length=MAX_IDENTIFIERS,
    )


class PriorConsentCheckSerializer(StrictSerializer):
    """Body of ``check/``: up to 1000 emails and phone numbers together."""

    emails = _identifiers()
    phone_numbers = _identifiers()
    #: ISO 3166-1 alpha-2: the country national phone_numbers are read in.
    country = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=8, default=None
    )

    def validate_country(self, value: str | None) -> str | None:
        try:
            return clean_country(value, field="country")
        except ConsentValidationError as error:
            raise serializers.ValidationError(error.message) from error

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        total = len(attrs["emails"]) + len(attrs["phone_numbers"])
        if total == 0:
            raise serializers.ValidationError("Give at least one email or phone number.")
        if total > MAX_IDENTIFIERS:
            message = (
                f"At most {MAX_IDENTIFIERS} identifiers per check (emails and phone_numbers "
                f"together); got {total}."
            )
            raise serializers.ValidationError(
                {name: [message] for name in ("emails", "phone_numbers") if attrs[name]}
            )
        return attrs


@extend_schema(
    summary="Has this email or phone number consented before?",
    request=PriorConsentCheckSerializer,
    responses={200: OpenApiTypes.OBJECT, **errors(400, 401, 403, 415, 429)},
    examples=[
        request_example("Request", examples.CHECK),
        *response_examples(("Answer", examples.CHECKED)),
    ],
)
class PriorConsentCheckView(Documented, ExampleBody, ThrottledMixin, StrictBodyMixin, APIView):
    """Each identifier's consent per channel and purpose, in the order given."""

    example_body = examples.CHECK

    permission_classes = [CanViewConsent]
    throttle_scope = CHECK

    def post(self, request: Request) -> Response:
        serializer = PriorConsentCheckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        results = check_prior_consent(
            data["emails"], data["phone_numbers"], country=data.get("country")
        )
        return Response({"results": results})
