"""The API's OpenAPI 3 description (drf-spectacular): the schema class every app view carries,
the error shapes each endpoint documents once, and the answers that differ by permission.

Every view of the app sets ``schema = ConsentAutoSchema()`` (through :class:`Documented`), so
the schema is right whatever the site's ``DEFAULT_SCHEMA_CLASS`` is, and decorates itself with
``@extend_schema(...)`` built from :func:`errors` and :mod:`klaviyo_consent.api.examples`.
Source: OpenAPI 3.0.3 (https://spec.openapis.org/oas/v3.0.3), drf-spectacular's
customization guide (https://drf-spectacular.readthedocs.io/en/latest/customization.html).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
)
from rest_framework import serializers

from klaviyo_consent.api import examples
from klaviyo_consent.api.serializers import (
    ConsentEventSerializer,
    ConsentEventSummarySerializer,
    IdentityEventSerializer,
    ProfileSerializer,
)


def any_of(component_name: str, shapes: list[Any]) -> PolymorphicProxySerializer:
    """An answer in one of several shapes that may overlap (a fuller shape also satisfies the
    summary): written as ``anyOf`` by :class:`ConsentAutoSchema`, since ``oneOf`` would call
    an answer that matches both invalid."""
    return PolymorphicProxySerializer(
        component_name=component_name, serializers=shapes, resource_type_field_name=None
    )


class ConsentAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, writing the app's alternative shapes (:func:`any_of`) as
    ``anyOf``."""

    def _map_serializer(self, serializer: Any, direction: Any, bypass_extensions: bool = False):
        result = super()._map_serializer(serializer, direction, bypass_extensions)
        if "description" in result and type(serializer).__dict__.get("__doc__") is None:
            # drf-spectacular takes the first docstring up the MRO: a mixin's (how fields are
            # built) is no description of the data.
            result = {k: v for k, v in result.items() if k != "description"}
        if isinstance(serializer, PolymorphicProxySerializer) and "oneOf" in result:
            result = dict(result)
            result["anyOf"] = result.pop("oneOf")
        return result

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False):
        """A field that may be blank keeps its format for the non-blank values only: an event
        recorded by phone number has ``"email": ""``, which is no ``format: email``."""
        result = super()._map_serializer_field(field, direction, bypass_extensions)
        if "format" in result and _may_be_blank(field):
            kept = {k: v for k, v in result.items() if k in ("readOnly", "writeOnly", "nullable")}
            formatted = {k: v for k, v in result.items() if k not in kept}
            result = {**kept, "anyOf": [formatted, {"type": "string", "maxLength": 0}]}
        return result


def _may_be_blank(field: Any) -> bool:
    """Whether the field's value may be ``""``: DRF drops ``allow_blank`` from read-only model
    fields, so the model field's ``blank`` is asked too."""
    if getattr(field, "allow_blank", False):
        return True
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    try:
        return bool(model._meta.get_field(field.source).blank)
    except Exception:  # noqa: BLE001 - not a model field (a method, a property): not blank
        return False


class Documented:
    """For the app's views: drf-spectacular's schema class, whatever the site's default."""

    schema = ConsentAutoSchema()


# -- error shapes ---------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    """DRF's error answer: ``{"detail": "..."}``."""

    detail = serializers.CharField()


class IdentityConflictSerializer(serializers.Serializer):
    """409: the identifiers belong to another profile or differ from this one's; nothing was
    recorded (docs/identity.md)."""

    code = serializers.ChoiceField(choices=["identity_conflict"])
    fields = serializers.ListField(child=serializers.CharField())
    detail = serializers.CharField()


class CodedErrorSerializer(serializers.Serializer):
    """An error with a machine-readable ``code`` beside DRF's ``detail``."""

    detail = serializers.CharField()
    code = serializers.CharField()


#: 400: DRF's field errors, nested as the body is (``{"profile": {"phone_number": [...]}}``,
#: ``{"non_field_errors": [...]}``), or ``{"detail": "JSON parse error - ..."}`` for a body
#: that is not strict JSON.
FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Each refused field names itself, nested as in the request body, with a list of "
        "messages; a body that is not strict JSON is {\"detail\": \"JSON parse error - ...\"}."
    ),
    "additionalProperties": {},
}


def _example(
    name: str, value: dict[str, Any], summary: str = "", status_codes: list[str] | None = None
) -> OpenApiExample:
    return OpenApiExample(
        name, value=value, summary=summary or name, response_only=True, status_codes=status_codes
    )


def _response(
    description: str, serializer: Any, *named: tuple[str, dict[str, Any]]
) -> OpenApiResponse:
    return OpenApiResponse(
        response=serializer,
        description=description,
        examples=[_example(name, value) for name, value in named],
    )


_THROTTLED = OpenApiResponse(
    response=ErrorDetailSerializer,
    description=(
        "Too many requests for this endpoint's rate (DEFAULT_THROTTLE_RATES, "
        "klaviyo_consent_* scopes); the Retry-After header says when to try again."
    ),
    examples=[_example("Throttled", examples.THROTTLED)],
)

ERRORS: dict[int, OpenApiResponse] = {
    400: _response(
        "A field refused (its name and why) or a body that is not strict JSON.",
        FIELD_ERRORS_SCHEMA,
        ("Field error", examples.FIELD_ERRORS),
        ("Not strict JSON", examples.PARSE_ERROR),
    ),
    401: _response(
        "Not authenticated, where the site's first authentication class sends a "
        "WWW-Authenticate challenge (e.g. TokenAuthentication); otherwise this is a 403.",
        ErrorDetailSerializer,
        ("Not authenticated", examples.UNAUTHENTICATED),
    ),
    403: _response(
        "Not authenticated, or without the klaviyo_consent permission this endpoint needs.",
        ErrorDetailSerializer,
        ("Permission missing", examples.FORBIDDEN),
    ),
    404: _response(
        "No such row (or page).", ErrorDetailSerializer, ("Not found", examples.NOT_FOUND)
    ),
    409: _response(
        "The identifiers belong to someone else or differ from the profile's: nothing was "
        "recorded.",
        IdentityConflictSerializer,
        ("Identity conflict", examples.IDENTITY_CONFLICT),
    ),
    415: _response(
        "The body is not JSON (application/json is the only format accepted).",
        ErrorDetailSerializer,
        ("Unsupported media type", examples.UNSUPPORTED_MEDIA),
    ),
    429: _THROTTLED,
}


def errors(*codes: int, **overrides: OpenApiResponse) -> dict[int, OpenApiResponse]:
    """The documented error answers ``codes`` (400, 401, 403, 404, 409, 415, 429), each with
    its shape and an example; ``overrides`` (``e409=...``) replace one for an endpoint whose
    answer differs."""
    answer = {code: ERRORS[code] for code in codes}
    for key, response in overrides.items():
        answer[int(key.lstrip("e"))] = response
    return answer


#: What every write answers besides its success.
WRITE_ERRORS = (400, 401, 403, 415, 429)
#: What every read of personal data answers besides its success.
READ_ERRORS = (401, 403, 404)


def request_example(name: str, value: dict[str, Any]) -> OpenApiExample:
    """A request body example (also the browsable API's starting body, api/renderers.py)."""
    return OpenApiExample(name, value=value, request_only=True)


def response_examples(
    *named: tuple[str, dict[str, Any]], status: int | None = None
) -> list[OpenApiExample]:
    """Examples of a success answer (200 or 201 unless ``status`` names another)."""
    codes = [str(status)] if status is not None else None
    return [_example(name, value, status_codes=codes) for name, value in named]


def query(name: str, type_: Any, description: str, **kwargs: Any) -> OpenApiParameter:
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, description=description, **kwargs)


#: drf-spectacular settings of the app's schema view (``custom_settings``): the title, the
#: version, request and response components kept apart (a read-only ``id`` is not asked of a
#: request), and only the app's own endpoints.
SCHEMA_SETTINGS: dict[str, Any] = {
    "TITLE": "django-klaviyo-consent API",
    "DESCRIPTION": (
        "Record email and SMS marketing consent with proof, push it to Klaviyo, and read back "
        "whether it took effect. Every write is recorded in an append-only ledger; each "
        "event's delivery says Klaviyo's verdict (applied, pending_confirmation, "
        "not_applied with the reason, failed)."
    ),
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["klaviyo_consent.api.schema.only_this_app"],
}


def only_this_app(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """drf-spectacular preprocessing hook: keep the endpoints whose views live in this app
    (a site's own DRF views are its own schema's business)."""
    return [
        endpoint
        for endpoint in endpoints
        if getattr(endpoint[3], "cls", type(None)).__module__.startswith("klaviyo_consent.")
    ]


# -- the ledger's public heads (RFC 9162 signed tree heads) ----------------------------------


class CheckpointSerializer(serializers.Serializer):
    """A signed tree head: the Merkle ledger's size and root, signed with Ed25519."""

    tree_size = serializers.IntegerField(min_value=0)
    root_hash = serializers.RegexField(r"^[0-9a-f]{64}$", help_text="hex SHA-256 root")
    timestamp = serializers.DateTimeField()
    key_id = serializers.CharField()
    signature = serializers.CharField(help_text="base64 Ed25519 signature")
    public_key = serializers.CharField(help_text="base64 Ed25519 public key")


class ConsistentCheckpointSerializer(CheckpointSerializer):
    consistency_from = serializers.IntegerField(
        allow_null=True, help_text="tree_size of the head before this one (null: the first)"
    )
    consistency_proof = serializers.ListField(
        child=serializers.CharField(), help_text="hex hashes (RFC 9162 section 2.1.4)"
    )


class CheckpointListSerializer(serializers.Serializer):
    checkpoints = ConsistentCheckpointSerializer(many=True)


# -- answers whose shape depends on the caller's permission (docs/security.md) ----------------


class SentProfileSerializer(serializers.Serializer):
    """The profile's id and the identifiers the caller sent, normalised."""

    id = serializers.IntegerField()
    email = serializers.CharField(required=False)
    phone_number = serializers.CharField(required=False)
    external_id = serializers.CharField(required=False)


class RecordedSerializer(serializers.Serializer):
    profile = ProfileSerializer()
    events = ConsentEventSerializer(many=True)


class RecordedSummarySerializer(serializers.Serializer):
    profile = SentProfileSerializer()
    events = ConsentEventSummarySerializer(many=True)


class SkippedSerializer(serializers.Serializer):
    email = serializers.CharField()
    reason = serializers.CharField()


class SuppressedSerializer(serializers.Serializer):
    events = ConsentEventSerializer(many=True)
    skipped = SkippedSerializer(many=True)


class SuppressedSummarySerializer(serializers.Serializer):
    events = ConsentEventSummarySerializer(many=True)
    skipped = SkippedSerializer(many=True)


class IdentityEventIdSerializer(serializers.Serializer):
    id = serializers.IntegerField()


class IdentityChangedSerializer(serializers.Serializer):
    profile = ProfileSerializer()
    identity_event = IdentityEventSerializer()
    events = ConsentEventSerializer(many=True)


class IdentityChangedSummarySerializer(serializers.Serializer):
    profile = SentProfileSerializer()
    identity_event = IdentityEventIdSerializer()
    events = ConsentEventSummarySerializer(many=True)


#: The documented answers of the writes: a caller holding ``view_profile`` gets the whole
#: profile and events, anyone else what they sent and each event's verdict.
_ANSWERS: dict[str, Any] = {
    "recorded": any_of("ConsentRecordedAnswer", [RecordedSerializer, RecordedSummarySerializer]),
    "suppressed": any_of(
        "SuppressionRecordedAnswer", [SuppressedSerializer, SuppressedSummarySerializer]
    ),
    "identity_changed": any_of(
        "IdentityChangedAnswer", [IdentityChangedSerializer, IdentityChangedSummarySerializer]
    ),
}


def answer(name: str) -> Any:
    """The documented success answer ``name``: recorded, suppressed or identity_changed."""
    return _ANSWERS[name]
