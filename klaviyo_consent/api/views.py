"""Thin views: validate, call one service, serialize."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api.permissions import CanViewConsent, write_permissions
from klaviyo_consent.api.serializers import (
    ConsentEventSerializer,
    ConsentRequestSerializer,
    IdentityEventSerializer,
    MergeSerializer,
    PhoneNumberChangeSerializer,
    ProfileSerializer,
    StrictSerializer,
)
from klaviyo_consent.choices import Consent
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.models import ConsentEvent, Profile, normalize_email
from klaviyo_consent.phone import clean_country, normalize_phone_number
from klaviyo_consent.services.identity import (
    IdentityResult,
    merge_profiles,
    replace_phone_number,
)
from klaviyo_consent.services.ledger import (
    ConsentRequest,
    Evidence,
    latest_events,
    record_consent,
    settled,
)


def field_error(error: ConsentValidationError) -> ValidationError:
    """``profile.phone_number`` → ``{"profile": {"phone_number": [message]}}``."""
    detail: Any = [error.message]
    for part in reversed((error.field or "non_field_errors").split(".")):
        detail = {part: detail}
    return ValidationError(detail)


def identity_conflict(error: IdentityConflict) -> Response:
    """409 ``{"code": "identity_conflict", "fields": [...], "detail": "..."}``; nothing was
    recorded (docs/identity.md)."""
    return Response(
        {"code": "identity_conflict", "fields": error.fields, "detail": error.message},
        status=status.HTTP_409_CONFLICT,
    )


def evidence_from(request: Request) -> Evidence:
    meta = request.META
    return Evidence(
        ip_address=meta.get("REMOTE_ADDR") or None,
        user_agent=meta.get("HTTP_USER_AGENT", ""),
        page_url=meta.get("HTTP_REFERER", ""),
    )


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class _RecordView(APIView):
    consent: str = ""

    def get_permissions(self) -> list[Any]:
        return write_permissions()

    def post(self, request: Request) -> Response:
        serializer = ConsentRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = request.user if request.user and request.user.is_authenticated else None
        try:
            result = record_consent(
                ConsentRequest(
                    consent=self.consent,
                    subscriptions=data["subscriptions"],
                    email=data["profile"].get("email"),
                    phone_number=data["profile"].get("phone_number"),
                    external_id=data["profile"].get("external_id") or None,
                    country=data["profile"].get("country") or None,
                    list_id=data["list_id"],
                    method=data["method"],
                    method_detail=data["method_detail"],
                    custom_source=data["custom_source"],
                    consent_text=data["consent_text"],
                    consented_at=data["consented_at"],
                    historical_import=data["historical_import"],
                    evidence=evidence_from(request),
                    recorded_by=user,
                )
            )
        except IdentityConflict as error:
            return identity_conflict(error)
        except ConsentValidationError as error:
            raise field_error(error) from error
        result = settled(result)
        context = {"ledger_events": {result.profile.pk: result.latest}}
        return Response(
            {
                "profile": ProfileSerializer(result.profile, context=context).data,
                "events": ConsentEventSerializer(result.events, many=True).data,
            },
            status=status.HTTP_201_CREATED,
        )


class SubscribeView(_RecordView):
    """Record consent given; it is pushed to Klaviyo once the transaction commits."""

    consent = Consent.SUBSCRIBED


class UnsubscribeView(_RecordView):
    """Record consent withdrawn for the channels and purposes named."""

    consent = Consent.UNSUBSCRIBED


class ProfileList(generics.ListAPIView):
    serializer_class = ProfileSerializer
    permission_classes = [CanViewConsent]
    pagination_class = Pagination
    #: The page's latest events per profile, read in one query once the page is known.
    ledger_events: dict[int, list[ConsentEvent]] | None = None

    def paginate_queryset(self, queryset: Any) -> list[Profile] | None:
        page = super().paginate_queryset(queryset)
        self.ledger_events = latest_events(p.pk for p in page) if page is not None else None
        return page

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "ledger_events": self.ledger_events}

    def get_queryset(self) -> Any:
        queryset = Profile.objects.all()
        params = self.request.query_params
        if params.get("email"):
            queryset = queryset.filter(email=normalize_email(params["email"]))
        if params.get("phone_number"):
            try:
                phone = normalize_phone_number(
                    params["phone_number"],
                    country=clean_country(params.get("country"), field="country"),
                )
            except ConsentValidationError as error:
                raise ValidationError({error.field or "phone_number": [error.message]}) from error
            queryset = queryset.filter(phone_number=phone)
        if params.get("external_id"):
            queryset = queryset.filter(external_id=params["external_id"])
        return queryset


class ProfileDetail(generics.RetrieveAPIView):
    serializer_class = ProfileSerializer
    permission_classes = [CanViewConsent]
    queryset = Profile.objects.all()


class _IdentityView(APIView):
    """A write on one profile's identity: write permission, one service call, 200 or 409."""

    serializer_class: type = StrictSerializer

    def get_permissions(self) -> list[Any]:
        return write_permissions()

    def post(self, request: Request, pk: int) -> Response:
        profile = get_object_or_404(Profile, pk=pk)
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request.user if request.user and request.user.is_authenticated else None
        try:
            result = self.perform(profile, serializer.validated_data, user)
        except IdentityConflict as error:
            return identity_conflict(error)
        except ConsentValidationError as error:
            raise field_error(error) from error
        return Response(
            {
                "profile": ProfileSerializer(result.profile).data,
                "identity_event": IdentityEventSerializer(result.identity_event).data,
                "events": ConsentEventSerializer(result.events, many=True).data,
            }
        )

    def perform(self, profile: Profile, data: dict[str, Any], user: Any) -> IdentityResult:
        raise NotImplementedError("subclasses of _IdentityView must provide perform()")


class PhoneNumberChangeView(_IdentityView):
    """Replace the profile's phone number: the old number's SMS consent is closed, the new
    number starts NEVER_SUBSCRIBED."""

    serializer_class = PhoneNumberChangeSerializer

    def perform(self, profile: Profile, data: dict[str, Any], user: Any) -> IdentityResult:
        return replace_phone_number(
            profile, data["phone_number"], country=data.get("country"), recorded_by=user
        )


class MergeView(_IdentityView):
    """Merge profile ``other`` into this one (its identifiers move here; events stay)."""

    serializer_class = MergeSerializer

    def perform(self, profile: Profile, data: dict[str, Any], user: Any) -> IdentityResult:
        other = Profile.objects.filter(pk=data["other"]).first()
        if other is None:
            raise ConsentValidationError("No profile has this id.", field="other")
        return merge_profiles(profile, other, recorded_by=user)


class EventList(generics.ListAPIView):
    """The audit trail, newest first."""

    serializer_class = ConsentEventSerializer
    permission_classes = [CanViewConsent]
    pagination_class = Pagination

    def get_queryset(self) -> Any:
        queryset = ConsentEvent.objects.select_related("delivery", "recorded_by").order_by(
            "-recorded_at", "-id"
        )
        params = self.request.query_params
        if params.get("profile"):
            if not params["profile"].isdigit():
                raise ValidationError({"profile": ["A profile id is a whole number."]})
            queryset = queryset.filter(profile_id=int(params["profile"]))
        if params.get("channel"):
            if params["channel"] not in ("email", "sms"):
                raise ValidationError({"channel": ["Use email or sms."]})
            queryset = queryset.filter(channel=params["channel"])
        return queryset
