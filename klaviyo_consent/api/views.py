"""Thin views: validate, call one service, serialize."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.committed import as_committed
from klaviyo_consent.api.parsers import StrictBodyMixin
from klaviyo_consent.api.permissions import (
    CanChangeProfile,
    CanViewConsent,
    can_read_profiles,
    write_permissions,
)
from klaviyo_consent.api.renderers import ExampleBody
from klaviyo_consent.api.schema import (
    READ_ERRORS,
    WRITE_ERRORS,
    Documented,
    answer,
    errors,
    query,
    request_example,
    response_examples,
)
from klaviyo_consent.api.serializers import (
    ConsentEventSerializer,
    ConsentEventSummarySerializer,
    ConsentRequestSerializer,
    ExclusionSerializer,
    IdentityEventSerializer,
    MergeSerializer,
    PhoneNumberChangeSerializer,
    ProfileSerializer,
    StrictSerializer,
    SuppressionRequestSerializer,
    sent_profile,
)
from klaviyo_consent.api.throttling import ThrottledMixin
from klaviyo_consent.choices import Consent, Suppression
from klaviyo_consent.evidence import evidence_from
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.models import ConsentEvent, Profile, normalize_email, parse_row_id
from klaviyo_consent.phone import clean_country, normalize_phone_number
from klaviyo_consent.services.identity import (
    IdentityResult,
    merge_profiles,
    replace_phone_number,
)
from klaviyo_consent.services.ledger import latest_events, record_consent
from klaviyo_consent.services.list_members import excluded
from klaviyo_consent.services.suppressions import record_suppression
from klaviyo_consent.validators import KLAVIYO_ID


def field_error(error: ConsentValidationError) -> ValidationError:
    """``profile.phone_number`` → ``{"profile": {"phone_number": [message]}}``."""
    detail: Any = [error.message]
    for part in reversed((error.field or "non_field_errors").split(".")):
        detail = {part: detail}
    return ValidationError(detail)


def query_text(request: Request, name: str, *, max_length: int = 320) -> str:
    """The query parameter ``name`` ("" when absent); a 400 naming it when it cannot be stored
    text (a NUL, a lone surrogate) or is longer than ``max_length`` characters."""
    value = request.query_params.get(name) or ""
    if len(value) > max_length:
        raise ValidationError({name: [f"At most {max_length} characters."]})
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise ValidationError({name: ["May not contain a NUL or a lone surrogate."]})
    return value


def query_id(request: Request, name: str) -> int | None:
    """The query parameter ``name`` as a row id (None when absent); a 400 naming it unless it is
    ASCII digits within a 64-bit id (``²`` and 20-digit numbers are refused, not a 500)."""
    value = request.query_params.get(name) or ""
    if not value:
        return None
    row_id = parse_row_id(value)
    if row_id is None:
        raise ValidationError({name: ["A profile id is a whole number."]})
    return row_id


def identity_conflict(error: IdentityConflict) -> Response:
    """409 ``{"code": "identity_conflict", "fields": [...], "detail": "..."}``; nothing was
    recorded (docs/identity.md)."""
    return Response(
        {"code": "identity_conflict", "fields": error.fields, "detail": error.message},
        status=status.HTTP_409_CONFLICT,
    )


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def events_answer(request: Request, events: list[ConsentEvent]) -> Any:
    """The events a write created: whole to a caller who may read the ledger, else receipts
    (ids, what was recorded, verdicts)."""
    if can_read_profiles(request):
        return ConsentEventSerializer(events, many=True).data
    return ConsentEventSummarySerializer(events, many=True).data


class _RecordView(Documented, ExampleBody, ThrottledMixin, StrictBodyMixin, APIView):
    consent: str = ""

    def get_permissions(self) -> list[Any]:
        return write_permissions()

    def post(self, request: Request) -> Response:
        reader = can_read_profiles(request)
        serializer = ConsentRequestSerializer(
            data=request.data, context={"can_read_profiles": reader}
        )
        serializer.is_valid(raise_exception=True)
        user = request.user if request.user and request.user.is_authenticated else None
        try:
            result = record_consent(
                serializer.to_request(
                    consent=self.consent, evidence=evidence_from(request), recorded_by=user
                )
            )
        except IdentityConflict as error:
            return identity_conflict(error)
        except ConsentValidationError as error:
            raise field_error(error) from error
        sent = serializer.validated_data["profile"]
        result = as_committed(result)
        if not reader:
            return Response(
                {
                    "profile": sent_profile(result.profile, sent),
                    "events": ConsentEventSummarySerializer(result.events, many=True).data,
                },
                status=status.HTTP_201_CREATED,
            )
        context = {"ledger_events": {result.profile.pk: result.latest}}
        return Response(
            {
                "profile": ProfileSerializer(result.profile, context=context).data,
                "events": ConsentEventSerializer(result.events, many=True).data,
            },
            status=status.HTTP_201_CREATED,
        )


def _record_schema(summary: str, example: dict[str, Any]) -> Any:
    return extend_schema(
        summary=summary,
        request=ConsentRequestSerializer,
        responses={201: answer("recorded"), **errors(*WRITE_ERRORS, 409)},
        examples=[
            request_example("Request", example),
            *response_examples(
                ("Recorded (caller holds view_profile)", examples.RECORDED),
                ("Recorded (any other caller)", examples.RECORDED_SUMMARY),
            ),
        ],
    )


@_record_schema("Record consent given", examples.SUBSCRIBE)
class SubscribeView(_RecordView):
    """Record consent given; it is pushed to Klaviyo once the transaction commits."""

    consent = Consent.SUBSCRIBED
    example_body = examples.SUBSCRIBE


@_record_schema("Record consent withdrawn", examples.UNSUBSCRIBE)
class UnsubscribeView(_RecordView):
    """Record consent withdrawn for the channels and purposes named."""

    consent = Consent.UNSUBSCRIBED
    example_body = examples.UNSUBSCRIBE


class _SuppressionView(Documented, ExampleBody, ThrottledMixin, StrictBodyMixin, APIView):
    action: str = ""

    def get_permissions(self) -> list[Any]:
        # Suppressing (or lifting a suppression of) anyone's email is an operator's act, not a
        # signup's: the write permission (maybe AllowAny) and change_profile.
        return [*write_permissions(), CanChangeProfile()]

    def post(self, request: Request) -> Response:
        serializer = SuppressionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = request.user if request.user and request.user.is_authenticated else None
        try:
            result = record_suppression(
                data["emails"],
                action=self.action,
                method_detail=data["method_detail"],
                evidence=evidence_from(request),
                recorded_by=user,
            )
        except ConsentValidationError as error:
            raise field_error(error) from error
        events = list(
            ConsentEvent.objects.filter(pk__in=[e.pk for e in result.events])
            .select_related("delivery", "recorded_by")
            .order_by("id")
        )
        return Response(
            {
                "events": events_answer(request, events),
                "skipped": [
                    {"email": email, "reason": "Klaviyo ignores unknown profiles in unsuppress"}
                    for email in result.skipped
                ],
            },
            status=status.HTTP_201_CREATED,
        )


def _suppression_schema(summary: str) -> Any:
    return extend_schema(
        summary=summary,
        request=SuppressionRequestSerializer,
        responses={201: answer("suppressed"), **errors(*WRITE_ERRORS)},
        examples=[
            request_example("Request", examples.SUPPRESS),
            *response_examples(("Recorded", examples.SUPPRESSED)),
        ],
    )


@_suppression_schema("Suppress emails in Klaviyo (USER_SUPPRESSED)")
class SuppressView(_SuppressionView):
    """Suppress these emails in Klaviyo (USER_SUPPRESSED), through the outbox."""

    action = Suppression.SUPPRESS
    example_body = examples.SUPPRESS


@_suppression_schema("Lift the USER_SUPPRESSED suppression of emails")
class UnsuppressView(_SuppressionView):
    """Lift the USER_SUPPRESSED suppression of these emails in Klaviyo, through the outbox."""

    action = Suppression.UNSUPPRESS
    example_body = examples.SUPPRESS


@extend_schema(
    summary="Profiles: Klaviyo's mirror beside the ledger",
    parameters=[
        query("email", OpenApiTypes.STR, "Only the profile with this email (normalised)."),
        query("phone_number", OpenApiTypes.STR, "Only the profile with this phone number."),
        query("country", OpenApiTypes.STR, "ISO 3166-1 alpha-2: where a national number is."),
        query("external_id", OpenApiTypes.STR, "Only the profile with this external id."),
    ],
    responses={200: ProfileSerializer(many=True), **errors(400, *READ_ERRORS)},
    examples=response_examples(
        ("Page", {"count": 1, "next": None, "previous": None, "results": [examples.PROFILE]})
    ),
)
class ProfileList(Documented, generics.ListAPIView):
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
        return {
            **super().get_serializer_context(),
            "ledger_events": self.ledger_events,
            "list_id": self.exclusions_of,
        }

    #: ``?suppressed=true``: the legacy exclusions question (``&list_id=`` narrows it).
    exclusions_of: str | None = None

    def get_serializer_class(self) -> Any:
        if self.request.query_params.get("suppressed") is not None:
            return ExclusionSerializer
        return super().get_serializer_class()

    def get_queryset(self) -> Any:
        queryset = Profile.objects.all()
        request = self.request
        if (suppressed := request.query_params.get("suppressed")) is not None:
            if suppressed != "true":
                raise ValidationError({"suppressed": ["Only suppressed=true is supported."]})
            list_id = query_text(request, "list_id", max_length=64) or None
            if list_id and not KLAVIYO_ID.fullmatch(list_id):
                raise ValidationError({"list_id": ["A Klaviyo list id is letters and digits."]})
            self.exclusions_of = list_id
            queryset = excluded(queryset, list_id)
        elif request.query_params.get("list_id") is not None:
            raise ValidationError({"list_id": ["list_id goes with suppressed=true."]})
        if email := query_text(request, "email"):
            queryset = queryset.filter(email=normalize_email(email))
        if phone_number := query_text(request, "phone_number", max_length=64):
            try:
                phone = normalize_phone_number(
                    phone_number,
                    country=clean_country(
                        query_text(request, "country", max_length=8), field="country"
                    ),
                )
            except ConsentValidationError as error:
                raise ValidationError({error.field or "phone_number": [error.message]}) from error
            queryset = queryset.filter(phone_number=phone)
        if external_id := query_text(request, "external_id", max_length=255):
            queryset = queryset.filter(external_id=external_id)
        return queryset


@extend_schema(
    summary="One profile",
    responses={200: ProfileSerializer, **errors(*READ_ERRORS)},
    examples=response_examples(("Profile", examples.PROFILE)),
)
class ProfileDetail(Documented, generics.RetrieveAPIView):
    serializer_class = ProfileSerializer
    permission_classes = [CanViewConsent]
    queryset = Profile.objects.all()


class _IdentityView(Documented, ExampleBody, ThrottledMixin, StrictBodyMixin, APIView):
    """A write on one profile's identity: the write permission and ``change_profile``, one
    service call, 200 or 409."""

    serializer_class: type = StrictSerializer

    def get_permissions(self) -> list[Any]:
        return [*write_permissions(), CanChangeProfile()]

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
        if not can_read_profiles(request):
            return Response(
                {
                    "profile": sent_profile(result.profile, serializer.validated_data),
                    "identity_event": {"id": result.identity_event.pk},
                    "events": ConsentEventSummarySerializer(result.events, many=True).data,
                }
            )
        return Response(
            {
                "profile": ProfileSerializer(result.profile).data,
                "identity_event": IdentityEventSerializer(result.identity_event).data,
                "events": ConsentEventSerializer(result.events, many=True).data,
            }
        )

    def perform(self, profile: Profile, data: dict[str, Any], user: Any) -> IdentityResult:
        raise NotImplementedError("subclasses of _IdentityView must provide perform()")


def _identity_schema(summary: str, serializer: type, example: dict[str, Any]) -> Any:
    return extend_schema(
        summary=summary,
        request=serializer,
        responses={200: answer("identity_changed"), **errors(*WRITE_ERRORS, 404, 409)},
        examples=[
            request_example("Request", example),
            *response_examples(("Changed", examples.IDENTITY_CHANGED)),
        ],
    )


@_identity_schema(
    "Replace a profile's phone number", PhoneNumberChangeSerializer, examples.PHONE_NUMBER_CHANGE
)
class PhoneNumberChangeView(_IdentityView):
    """Replace the profile's phone number: the old number's SMS consent is closed, the new
    number starts NEVER_SUBSCRIBED."""

    serializer_class = PhoneNumberChangeSerializer
    example_body = examples.PHONE_NUMBER_CHANGE

    def perform(self, profile: Profile, data: dict[str, Any], user: Any) -> IdentityResult:
        return replace_phone_number(
            profile, data["phone_number"], country=data.get("country"), recorded_by=user
        )


@_identity_schema("Merge another profile into this one", MergeSerializer, examples.MERGE)
class MergeView(_IdentityView):
    """Merge profile ``other`` into this one (its identifiers move here; events stay)."""

    serializer_class = MergeSerializer
    example_body = examples.MERGE

    def perform(self, profile: Profile, data: dict[str, Any], user: Any) -> IdentityResult:
        other = Profile.objects.filter(pk=data["other"]).first()
        if other is None:
            raise ConsentValidationError("No profile has this id.", field="other")
        return merge_profiles(profile, other, recorded_by=user)


@extend_schema(
    summary="Consent events, newest first",
    parameters=[
        query("profile", OpenApiTypes.INT, "Only this profile's events."),
        query("channel", OpenApiTypes.STR, "Only this channel's events.", enum=["email", "sms"]),
    ],
    responses={200: ConsentEventSerializer(many=True), **errors(400, *READ_ERRORS)},
    examples=response_examples(
        ("Page", {"count": 1, "next": None, "previous": None, "results": [examples.EVENT]})
    ),
)
class EventList(Documented, generics.ListAPIView):
    """The audit trail, newest first."""

    serializer_class = ConsentEventSerializer
    permission_classes = [CanViewConsent]
    pagination_class = Pagination

    def get_queryset(self) -> Any:
        queryset = ConsentEvent.objects.select_related("delivery", "recorded_by").order_by(
            "-recorded_at", "-id"
        )
        profile = query_id(self.request, "profile")
        if profile is not None:
            queryset = queryset.filter(profile_id=profile)
        if channel := self.request.query_params.get("channel"):
            if channel not in ("email", "sms"):
                raise ValidationError({"channel": ["Use email or sms."]})
            queryset = queryset.filter(channel=channel)
        return queryset
