"""Request and response shapes of the consent API, in Klaviyo's vocabulary."""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from klaviyo_consent.choices import CHANNEL_PURPOSES, Channel, Method
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import (
    EVENT_FIELDS,
    IDENTITY_EVENT_FIELDS,
    MAX_ROW_ID,
    ConsentEvent,
    Delivery,
    IdentityDelivery,
    IdentityEvent,
    Profile,
)
from klaviyo_consent.receipts import text_sha256
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, clean_email
from klaviyo_consent.services.ledger_state import ledger_for
from klaviyo_consent.services.list_members import suppressions
from klaviyo_consent.validators import clean_klaviyo_id


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false`` only: DRF's BooleanField also takes ``"yes"``, ``"on"``,
    ``"true"`` and ``1``, and a legal record of consent admits no "maybe"."""

    default_error_messages = {"invalid": "Must be true or false (a JSON boolean)."}

    def to_internal_value(self, data: Any) -> bool:
        if data is True or data is False:
            return data
        self.fail("invalid")


class RowIdField(serializers.IntegerField):
    """A row id: a JSON integer from 1 to 2⁶³−1. DRF's IntegerField also takes ``"7"``,
    ``7.0`` and ``true``."""

    def __init__(self, *, noun: str, **kwargs: Any) -> None:
        """``noun`` names the id in its error: "A consent text id is a whole number ..."."""
        super().__init__(min_value=1, max_value=MAX_ROW_ID, **kwargs)
        self.error_messages["invalid"] = f"A {noun} id is a whole number (a JSON integer)."

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


_REQUEST_METHODS = [m for m in Method.values if m != Method.KLAVIYO]


@extend_schema_field(
    {
        "type": "string",
        "pattern": f"^({'|'.join(_REQUEST_METHODS)})$",
        "default": Method.API.value,
        "description": "How the consent reached the site: "
        + ", ".join(_REQUEST_METHODS)
        + " (klaviyo is kept for changes made in Klaviyo).",
    }
)
class RequestMethodField(serializers.ChoiceField):
    """``method`` of a request: every :class:`~klaviyo_consent.choices.Method` but ``klaviyo``.

    Its schema is a pattern, not an enum: the events' ``method`` is the whole set, and two
    enums under one field name make drf-spectacular name one by a hash (a warning)."""


def _service_rule(rule: Any, field: str) -> Any:
    """A DRF validator running one of the app's input rules (the service layer applies it
    again, so the import, the admin and the signup page share it)."""

    def validate(value: Any) -> None:
        if value in (None, ""):
            return
        try:
            rule(value, field=field)
        except ConsentValidationError as error:
            raise serializers.ValidationError(error.message) from error

    return validate


def _copies(fields: dict[str, Any]) -> dict[str, Any]:
    """Each field copied for one serializer instance: shallowly, except a ``many=True`` field,
    whose child points back at its parent and would be shared."""
    return {
        name: copy.deepcopy(field)
        if isinstance(field, serializers.ListSerializer)
        else copy.copy(field)
        for name, field in fields.items()
    }


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a typo is a 400, not a silently ignored field.

    Its declared fields are copied shallowly per instance (see :class:`_BuiltOnce`): these
    input fields keep no state between validations, and the subscribe body nests four levels.
    """

    def get_fields(self) -> dict[str, Any]:
        return _copies(self._declared_fields)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class ProfileInputSerializer(StrictSerializer):
    email = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=254,
        validators=[_service_rule(clean_email, "profile.email")],
    )
    phone_number = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=64
    )
    external_id = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=255
    )
    #: ISO 3166-1 alpha-2: the country a national phone_number is read in.
    country = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=8)


class PhoneNumberChangeSerializer(StrictSerializer):
    """Body of ``profiles/{id}/phone-number/``."""

    phone_number = serializers.CharField(max_length=64)
    country = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=8)


class MergeSerializer(StrictSerializer):
    """Body of ``profiles/{id}/merge/``: the profile folded into this one."""

    other = RowIdField(noun="profile")


def _purposes_serializer(channel: str) -> type[StrictSerializer]:
    # str(): the plain name, so a schema writer (YAML, JSON) can write the field names.
    fields = {
        str(purpose): StrictBooleanField(required=False) for purpose in CHANNEL_PURPOSES[channel]
    }
    return type(f"{channel.title()}PurposesSerializer", (StrictSerializer,), fields)


class SubscriptionsInputSerializer(StrictSerializer):
    email = _purposes_serializer(Channel.EMAIL)(required=False)
    sms = _purposes_serializer(Channel.SMS)(required=False)


class ConsentRequestSerializer(StrictSerializer):
    """Body of ``subscribe/`` and ``unsubscribe/``."""

    profile = ProfileInputSerializer()
    subscriptions = SubscriptionsInputSerializer()
    list_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        default="",
        trim_whitespace=False,
        validators=[_service_rule(clean_klaviyo_id, "list_id")],
    )
    method = RequestMethodField(
        choices=[c for c in Method.choices if c[0] != Method.KLAVIYO], default=Method.API
    )
    method_detail = serializers.CharField(
        required=False, allow_blank=True, max_length=255, default=""
    )
    custom_source = serializers.CharField(
        required=False, allow_blank=True, max_length=255, default=""
    )
    consent_text = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False
    )
    #: A ConsentText version by id (its words need not be sent again).
    consent_text_id = RowIdField(noun="consent text", required=False, allow_null=True, default=None)
    consented_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    historical_import = StrictBooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """An ``external_id`` alone names a profile only for a caller who may read profiles
        (``context["can_read_profiles"]``); anyone else gets the same 400 whether or not a
        profile holds it, so they can neither find one nor learn that it exists."""
        sent = attrs["profile"]
        alone = sent.get("external_id") and not (sent.get("email") or sent.get("phone_number"))
        if alone and not self.context.get("can_read_profiles"):
            raise serializers.ValidationError(
                {"profile": {"external_id": ["Give an email or a phone_number with external_id."]}}
            )
        return attrs

    def to_request(self, *, consent: str, evidence: Evidence, recorded_by: Any) -> ConsentRequest:
        """The service request for the validated body: one place maps the API's fields to
        :class:`~klaviyo_consent.services.ledger.ConsentRequest` (views, seeds, tests).

        :param consent: ``Consent.SUBSCRIBED`` or ``Consent.UNSUBSCRIBED`` (the endpoint).
        :param evidence: what the request carries, e.g. ``evidence_from(request)``.
        :param recorded_by: the user recording it, or None.
        """
        data = self.validated_data
        profile = data["profile"]
        return ConsentRequest(
            consent=consent,
            subscriptions=data["subscriptions"],
            email=profile.get("email"),
            phone_number=profile.get("phone_number"),
            external_id=profile.get("external_id") or None,
            country=profile.get("country") or None,
            list_id=data["list_id"],
            method=data["method"],
            method_detail=data["method_detail"],
            custom_source=data["custom_source"],
            consent_text=data["consent_text"],
            consent_text_id=data["consent_text_id"],
            consented_at=data["consented_at"],
            historical_import=data["historical_import"],
            evidence=evidence,
            recorded_by=recorded_by,
        )


class SuppressionRequestSerializer(StrictSerializer):
    """Body of ``suppress/`` and ``unsuppress/``: the emails (Klaviyo suppresses email only)."""

    emails = serializers.ListField(
        child=serializers.CharField(
            max_length=254, validators=[_service_rule(clean_email, "emails")]
        ),
        allow_empty=False,
        max_length=1000,
    )
    method_detail = serializers.CharField(
        required=False, allow_blank=True, max_length=255, default=""
    )


class _BuiltOnce:
    """Build a read-only ModelSerializer's fields once per class; each instance gets copies.

    ``ModelSerializer.get_fields()`` introspects the model on every instantiation, which cost
    more than the rest of a subscribe response, and DRF's deep copy of each field (it rebuilds
    the field from its arguments) cost most of what was left. A shallow copy is enough for
    output-only fields: binding a field to its serializer sets attributes on the copy, never
    on what the copies share. Only the class that lists this mixin is cached: a subclass
    (which may build fields from its context) gets DRF's behaviour unchanged.
    """

    _prototype_fields: dict[str, Any] | None = None

    def get_fields(self) -> dict[str, Any]:
        cls = type(self)
        if _BuiltOnce not in cls.__bases__:
            return super().get_fields()  # type: ignore[misc]
        prototype = cls.__dict__.get("_prototype_fields")
        if prototype is None:
            prototype = super().get_fields()  # type: ignore[misc]
            cls._prototype_fields = prototype
        return _copies(prototype)


class DeliverySerializer(_BuiltOnce, serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = [
            "status",
            "reason",
            "errors",
            "attempts",
            "pushed_at",
            "verified_at",
            "dead_lettered_at",
            "history",
        ]
        read_only_fields = fields


class ConsentEventSerializer(_BuiltOnce, serializers.ModelSerializer):
    delivery = DeliverySerializer(read_only=True)
    recorded_by = serializers.SerializerMethodField()
    consent_text_sha256 = serializers.SerializerMethodField()

    class Meta:
        model = ConsentEvent
        fields = ["id", *EVENT_FIELDS, "consent_text_sha256", "delivery"]
        read_only_fields = fields

    def get_recorded_by(self, event: ConsentEvent) -> str | None:
        return event.recorded_by_name

    def get_consent_text_sha256(self, event: ConsentEvent) -> str | None:
        return text_sha256(event.consent_text) if event.consent_text else None


class IdentityDeliverySerializer(_BuiltOnce, serializers.ModelSerializer):
    class Meta:
        model = IdentityDelivery
        fields = ["status", "reason", "errors", "attempts", "pushed_at", "dead_lettered_at"]
        read_only_fields = fields


class IdentityEventSerializer(_BuiltOnce, serializers.ModelSerializer):
    recorded_by = serializers.SerializerMethodField()
    #: Telling Klaviyo a new number (Create or Update Profile); null for other changes.
    delivery = IdentityDeliverySerializer(read_only=True, default=None, allow_null=True)

    class Meta:
        model = IdentityEvent
        fields = ["id", "profile", *IDENTITY_EVENT_FIELDS, "delivery"]
        read_only_fields = fields

    def get_recorded_by(self, event: IdentityEvent) -> str | None:
        return event.recorded_by.get_username() if event.recorded_by_id else None


class ProfileSerializer(_BuiltOnce, serializers.ModelSerializer):
    ledger = serializers.SerializerMethodField()

    class Meta:
        model = Profile
        fields = [
            "id",
            "email",
            "phone_number",
            "external_id",
            "merged_into",
            "klaviyo_id",
            "subscriptions",
            "mirrored_at",
            "erased_at",
            "ledger",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_ledger(self, profile: Profile) -> dict[str, Any]:
        # Views that already hold the events pass {profile pk: events} (subscribe: the history
        # it wrote; lists: latest_events() of the page), so a list costs no query per profile.
        events = (self.context.get("ledger_events") or {}).get(profile.pk)
        return ledger_for(profile, events=events)


class DeliveryVerdictSerializer(serializers.ModelSerializer):
    """A delivery's verdict only: what a write tells a caller who may not read the ledger."""

    class Meta:
        model = Delivery
        fields = ["status", "reason"]
        read_only_fields = fields


class ConsentEventSummarySerializer(serializers.ModelSerializer):
    """An event as a caller without the view permission sees it: its id, what it records, the
    words agreed to and its verdict; never the identifiers or evidence it holds (an SMS event
    named by email holds the profile's number). Not the signed receipt of
    ``events/{id}/receipt/``, which needs the view permission."""

    delivery = DeliveryVerdictSerializer(read_only=True)
    consent_text_sha256 = serializers.SerializerMethodField()

    def get_consent_text_sha256(self, event: ConsentEvent) -> str | None:
        return text_sha256(event.consent_text) if event.consent_text else None

    class Meta:
        model = ConsentEvent
        fields = [
            "id",
            "channel",
            "purpose",
            "consent",
            "suppression",
            "method",
            "list_id",
            "consent_text",
            "consent_text_sha256",
            "recorded_at",
            "delivery",
        ]
        read_only_fields = fields


def sent_profile(profile: Profile, sent: dict[str, Any]) -> dict[str, Any]:
    """The profile as a caller without the view permission sees it: its id and the
    identifiers the caller sent, in their stored (normalised) form."""
    return {
        "id": profile.pk,
        **{
            name: getattr(profile, name)
            for name in ("email", "phone_number", "external_id")
            if sent.get(name)
        },
    }


class ExclusionSerializer(serializers.ModelSerializer):
    """A suppressed profile and each reason Klaviyo gave (legacy ``exclusions``)."""

    suppressions = serializers.SerializerMethodField()

    class Meta:
        model = Profile
        fields = ["id", "email", "phone_number", "external_id", "suppressions", "mirrored_at"]
        read_only_fields = fields

    def get_suppressions(self, profile: Profile) -> list[dict[str, Any]]:
        return suppressions(profile, self.context.get("list_id"))
