"""Klaviyo lists: the mirror, membership without consent, and the legacy get-members question.

``GET lists/`` and ``GET lists/{list_id}/``: the lists as last read (name, opt-in process,
member count). ``POST`` / ``DELETE lists/{list_id}/members/`` with
``{"profiles": [{"email", "phone_number", "external_id"}]}``: add or remove people without
consent (``services.membership``). ``GET lists/{list_id}/members/?email=&phone_number=``: are
they on the list and not suppressed (``services.list_members``). Thin views, one service each.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.parsers import StrictBodyMixin
from klaviyo_consent.api.permissions import CanViewConsent, write_permissions
from klaviyo_consent.api.renderers import ExampleBody
from klaviyo_consent.api.schema import (
    READ_ERRORS,
    WRITE_ERRORS,
    Documented,
    errors,
    query,
    request_example,
    response_examples,
)
from klaviyo_consent.api.serializers import StrictSerializer
from klaviyo_consent.api.throttling import ThrottledMixin
from klaviyo_consent.api.views import Pagination, field_error, identity_conflict, query_text
from klaviyo_consent.choices import Membership
from klaviyo_consent.exceptions import ConsentValidationError, IdentityConflict
from klaviyo_consent.models import KlaviyoList, MembershipEvent, Profile
from klaviyo_consent.phone import normalize_phone_number
from klaviyo_consent.services.ledger import clean_email
from klaviyo_consent.services.list_members import member_statuses
from klaviyo_consent.services.membership import MAX_PROFILES, record_membership
from klaviyo_consent.validators import clean_klaviyo_id


class KlaviyoListSerializer(serializers.ModelSerializer):
    class Meta:
        model = KlaviyoList
        fields = [
            "list_id",
            "name",
            "opt_in_process",
            "profile_count",
            "profile_count_read_at",
            "mirrored_at",
        ]
        read_only_fields = fields


class MembershipEventSerializer(serializers.ModelSerializer):
    status = serializers.CharField(source="delivery.status", read_only=True)
    reason = serializers.CharField(source="delivery.reason", read_only=True)

    class Meta:
        model = MembershipEvent
        fields = ["id", "profile", "list_id", "action", "method", "recorded_at", "status", "reason"]
        read_only_fields = fields


class _MembersBody(StrictSerializer):
    profiles = serializers.ListField(
        child=serializers.DictField(), allow_empty=False, max_length=MAX_PROFILES
    )


class MembershipRecordedSerializer(serializers.Serializer):
    """The answer of ``POST``/``DELETE lists/{list_id}/members/`` (documentation only)."""

    list_id = serializers.CharField()
    action = serializers.ChoiceField(choices=Membership.choices)
    events = MembershipEventSerializer(many=True)


class MemberStatusSerializer(serializers.Serializer):
    email = serializers.CharField(allow_null=True)
    phone_number = serializers.CharField(allow_null=True)
    profile = serializers.IntegerField(allow_null=True)
    on_list = serializers.BooleanField()
    membership_status = serializers.CharField()
    suppressed = serializers.BooleanField()
    suppressions = serializers.ListField(child=serializers.DictField())
    member = serializers.BooleanField()


class MemberStatusesSerializer(serializers.Serializer):
    """The answer of ``GET lists/{list_id}/members/`` (documentation only)."""

    list_id = serializers.CharField()
    members = MemberStatusSerializer(many=True)


_LIST_ID = OpenApiParameter("list_id", OpenApiTypes.STR, OpenApiParameter.PATH)


def _membership_schema(method: str, summary: str, code: int) -> Any:
    return extend_schema(
        methods=[method],
        summary=summary,
        parameters=[_LIST_ID],
        request=_MembersBody,
        responses={code: MembershipRecordedSerializer, **errors(*WRITE_ERRORS, 409)},
        examples=[
            request_example("Request", examples.MEMBERS),
            *response_examples(("Recorded", examples.MEMBERSHIP_RECORDED), status=code),
        ],
    )


@extend_schema(
    summary="Klaviyo lists as last read",
    responses={200: KlaviyoListSerializer(many=True), **errors(*READ_ERRORS)},
    examples=response_examples(
        ("Page", {"count": 1, "next": None, "previous": None, "results": [examples.LIST]})
    ),
)
class ListIndex(Documented, generics.ListAPIView):
    """Every Klaviyo list as last read (``klaviyo_consent_pull --lists`` refreshes them)."""

    serializer_class = KlaviyoListSerializer
    permission_classes = [CanViewConsent]
    pagination_class = Pagination
    queryset = KlaviyoList.objects.all()


@extend_schema(
    summary="One Klaviyo list as last read",
    parameters=[_LIST_ID],
    responses={200: KlaviyoListSerializer, **errors(*READ_ERRORS)},
    examples=response_examples(("List", examples.LIST)),
)
class ListDetail(Documented, generics.RetrieveAPIView):
    """One list as last read: name, opt-in process, member count and when it was read."""

    serializer_class = KlaviyoListSerializer
    permission_classes = [CanViewConsent]
    queryset = KlaviyoList.objects.all()
    lookup_field = "list_id"


@extend_schema(
    methods=["GET"],
    summary="Are these people on the list and not suppressed? (get-members)",
    parameters=[
        _LIST_ID,
        query("email", {"type": "array", "items": {"type": "string"}}, "Emails to ask about."),
        query(
            "phone_number",
            {"type": "array", "items": {"type": "string"}},
            "E.164 numbers to ask about.",
        ),
    ],
    request=None,
    responses={200: MemberStatusesSerializer, **errors(400, 401, 403)},
    examples=response_examples(("Answer", examples.MEMBER_STATUSES)),
)
@_membership_schema("POST", "Add people to the list without consent", 201)
@_membership_schema("DELETE", "Remove people from the list", 202)
class ListMembersView(Documented, ExampleBody, ThrottledMixin, StrictBodyMixin, APIView):
    """POST: add these people to the list without consent; DELETE: remove them. GET: are
    these identifiers on the list and not suppressed (the legacy get-members)."""

    example_body = examples.MEMBERS

    def get_permissions(self) -> list[Any]:
        if self.request.method == "GET":
            return [CanViewConsent()]
        return write_permissions()

    def get_queryset(self) -> Any:  # CanViewConsent reads the model it guards from here
        return Profile.objects.none()

    def post(self, request: Request, list_id: str) -> Response:
        return self._record(request, list_id, Membership.ADD, status.HTTP_201_CREATED)

    def delete(self, request: Request, list_id: str) -> Response:
        return self._record(request, list_id, Membership.REMOVE, status.HTTP_202_ACCEPTED)

    def _record(self, request: Request, list_id: str, action: str, code: int) -> Response:
        body = _MembersBody(data=request.data)
        body.is_valid(raise_exception=True)
        user = request.user if request.user and request.user.is_authenticated else None
        try:
            result = record_membership(
                list_id, body.validated_data["profiles"], action=action, recorded_by=user
            )
        except IdentityConflict as error:
            return identity_conflict(error)
        except ConsentValidationError as error:
            raise field_error(error) from error
        events = MembershipEvent.objects.filter(
            pk__in=[e.pk for e in result.events]
        ).select_related("delivery")
        return Response(
            {
                "list_id": result.list_id,
                "action": action,
                "events": MembershipEventSerializer(events.order_by("id"), many=True).data,
            },
            status=code,
        )

    def get(self, request: Request, list_id: str) -> Response:
        try:
            list_id = clean_klaviyo_id(list_id, field="list_id")
            emails = [
                clean_email(value, field="email") or ""
                for value in request.query_params.getlist("email")
            ]
            phones = [
                normalize_phone_number(value, field="phone_number")
                for value in request.query_params.getlist("phone_number")
            ]
        except ConsentValidationError as error:
            raise field_error(error) from error
        for name in ("email", "phone_number"):
            query_text(request, name)
        if not [e for e in emails if e] and not phones:
            raise ValidationError({"email": ["Give an email or a phone_number."]})
        answers = member_statuses(list_id, emails=[e for e in emails if e], phone_numbers=phones)
        return Response(
            {
                "list_id": list_id,
                "members": [
                    {
                        "email": answer.email,
                        "phone_number": answer.phone_number,
                        "profile": answer.profile.pk if answer.profile else None,
                        "on_list": answer.on_list,
                        "membership_status": answer.membership_status,
                        "suppressed": answer.suppressed,
                        "suppressions": answer.suppressions,
                        "member": answer.member,
                    }
                    for answer in answers
                ],
            }
        )
