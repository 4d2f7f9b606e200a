"""``POST public/subscribe/``: the signup endpoint for a site's own JavaScript forms.

Anonymous and throttled (scope ``klaviyo_consent_public``, per IP, one budget with the drop-in
form), CSRF-checked like a Django form (send the ``csrftoken`` cookie's value as
``X-CSRFToken``), strict JSON only. It answers only the outcome: never an identifier, a
profile, an event or a verdict, and the same answer whether the person was known or not
(identifiers of two profiles are recorded apart, never a 409: see services/signup.py).
"""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import CSRFCheck
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.parsers import StrictBodyMixin
from klaviyo_consent.api.renderers import ExampleBody
from klaviyo_consent.api.schema import (
    Documented,
    ErrorDetailSerializer,
    errors,
    request_example,
    response_examples,
)
from klaviyo_consent.api.serializers import RowIdField, StrictBooleanField, StrictSerializer
from klaviyo_consent.api.throttling import PUBLIC, ThrottledMixin
from klaviyo_consent.evidence import evidence_from
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.forms import MESSAGES, ConsentForm, confirmation, refusal
from klaviyo_consent.services.signup import Outcome, record_signup

logger = logging.getLogger("klaviyo_consent.signup")


class _PublicProfile(StrictSerializer):
    email = serializers.CharField(required=False, allow_blank=True, max_length=254)
    phone_number = serializers.CharField(required=False, allow_blank=True, max_length=64)
    #: ISO 3166-1 alpha-2: the country a national phone_number is read in.
    country = serializers.CharField(required=False, allow_blank=True, max_length=8)


class _Marketing(StrictSerializer):
    marketing = StrictBooleanField(required=False, default=False)


class _PublicSubscriptions(StrictSerializer):
    email = _Marketing(required=False)
    sms = _Marketing(required=False)


class _TextIds(StrictSerializer):
    email = RowIdField(noun="consent text", required=False)
    sms = RowIdField(noun="consent text", required=False)


class PublicSubscribeSerializer(StrictSerializer):
    """Body of ``public/subscribe/``: who, which boxes, and the text versions shown."""

    profile = _PublicProfile()
    subscriptions = _PublicSubscriptions()
    consent_text_ids = _TextIds(required=False)

    def as_form_data(self) -> dict[str, Any]:
        """The body as the drop-in form's fields, so both paths share one set of rules."""
        data = self.validated_data
        profile, wanted = data["profile"], data["subscriptions"]
        ids = data.get("consent_text_ids") or {}
        return {
            "email": profile.get("email", ""),
            "phone_number": profile.get("phone_number", ""),
            "country": (profile.get("country") or "").strip().upper(),
            "email_marketing": (wanted.get("email") or {}).get("marketing", False),
            "sms_marketing": (wanted.get("sms") or {}).get("marketing", False),
            "email_text": ids.get("email", ""),
            "sms_text": ids.get("sms", ""),
        }


#: The form's field → the body's field, for a 400 that names what the caller sent.
_FIELDS = {
    "email": ("profile", "email"),
    "phone_number": ("profile", "phone_number"),
    "country": ("profile", "country"),
    "email_text": ("consent_text_ids", "email"),
    "sms_text": ("consent_text_ids", "sms"),
}


def _body_errors(errors: dict[str, list[str]]) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    for name, messages in errors.items():
        if name in _FIELDS:
            outer, inner = _FIELDS[name]
            detail.setdefault(outer, {})[inner] = messages
        else:
            detail.setdefault("non_field_errors", []).extend(messages)
    return detail


class PublicOutcomeSerializer(serializers.Serializer):
    """The answer: each channel's outcome and a sentence for the shopper (documentation)."""

    email = serializers.ChoiceField(choices=[Outcome.SUBSCRIBED, Outcome.NOT_REQUESTED])
    #: SMS alone can be refused for the number (its country, or not a mobile).
    sms = serializers.ChoiceField(
        choices=[
            Outcome.SUBSCRIBED,
            Outcome.NOT_REQUESTED,
            Outcome.COUNTRY_UNSUPPORTED,
            Outcome.NOT_A_MOBILE,
        ]
    )
    message = serializers.CharField()


@extend_schema(
    summary="Sign a shopper up (anonymous, CSRF-checked, throttled)",
    request=PublicSubscribeSerializer,
    responses={
        201: PublicOutcomeSerializer,
        **errors(400, 415, 429),
        403: OpenApiResponse(
            ErrorDetailSerializer,
            description="No valid CSRF token (send the csrftoken cookie's value as X-CSRFToken).",
            examples=response_examples(("CSRF failed", examples.CSRF_FAILED)),
        ),
    },
    examples=[
        request_example("Request", examples.PUBLIC_SUBSCRIBE),
        *response_examples(("Signed up", examples.PUBLIC_SUBSCRIBED)),
    ],
)
class PublicSubscribeView(Documented, ExampleBody, ThrottledMixin, StrictBodyMixin, APIView):
    """Sign a shopper up for marketing email and/or SMS; answers only what became of each."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_scope = PUBLIC
    example_body = examples.PUBLIC_SUBSCRIBE

    def check_permissions(self, request: Request) -> None:
        # No session authentication here, so DRF would not check CSRF: check it as Django's
        # middleware would for a form (the token from the cookie, sent as X-CSRFToken).
        check = CSRFCheck(lambda _request: None)
        check.process_request(request._request)
        reason = check.process_view(request._request, None, (), {})
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")
        super().check_permissions(request)

    def post(self, request: Request) -> Response:
        serializer = PublicSubscribeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        form = ConsentForm(serializer.as_form_data())
        if not form.is_valid():
            raise ValidationError(_body_errors(form.errors))
        try:
            outcome = record_signup(
                form.to_signup(evidence=evidence_from(request), method_detail="public API")
            )
        except ConsentValidationError as error:
            # Never the ledger's words (nor a 409 naming identifiers) to an anonymous caller.
            logger.exception("public/subscribe/ could not record a signup: %s", error.field)
            raise ValidationError({"non_field_errors": [MESSAGES["failed"]]}) from error
        if not outcome.recorded:
            raise ValidationError({"profile": {"phone_number": [refusal(outcome)]}})
        return Response(
            {"email": outcome.email, "sms": outcome.sms, "message": confirmation(outcome)},
            status=status.HTTP_201_CREATED,
        )
