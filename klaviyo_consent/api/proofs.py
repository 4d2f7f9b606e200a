"""Checkpoints and receipts (issue 10): thin views over services.proofs.

Checkpoints hold no personal data (sizes, roots, signatures), so anyone may read them: a
verifier that keeps the heads it saw holds the site to them. Receipts need the view
permission for consent events.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api import examples
from klaviyo_consent.api.permissions import CanViewConsent
from klaviyo_consent.api.schema import (
    READ_ERRORS,
    CheckpointListSerializer,
    CheckpointSerializer,
    Documented,
    ErrorDetailSerializer,
    errors,
    query,
    response_examples,
)
from klaviyo_consent.exceptions import NotYetCheckpointed
from klaviyo_consent.models import Checkpoint, ConsentEvent, Profile, parse_row_id
from klaviyo_consent.services import proofs


@extend_schema(
    summary="The newest signed tree head",
    responses={
        200: CheckpointSerializer,
        404: OpenApiResponse(ErrorDetailSerializer, description="No checkpoint yet."),
    },
    examples=response_examples(("Checkpoint", examples.CHECKPOINT)),
)
class LatestCheckpointView(Documented, APIView):
    """``GET checkpoints/latest/``: the newest signed tree head, or 404 before the first."""

    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        latest = Checkpoint.objects.order_by("-tree_size").first()
        if latest is None:
            return Response({"detail": "No checkpoint has been made yet."}, status=404)
        return Response(proofs.checkpoint_data(latest))


@extend_schema(
    summary="Signed tree heads with consistency proofs",
    parameters=[
        query(
            "since", {"type": "integer", "minimum": 0}, "Heads with tree_size ≥ since (default 0)."
        ),
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 100},
            "At most this many (default 100).",
        ),
    ],
    responses={200: CheckpointListSerializer, **errors(400)},
    examples=response_examples(("Checkpoints", examples.CHECKPOINTS)),
)
class CheckpointListView(Documented, APIView):
    """``GET checkpoints/?since=N&limit=M``: up to M (≤ 100) heads with tree_size ≥ N, with
    consistency proofs; page on with ``since`` = the last tree_size listed + 1."""

    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        since = parse_row_id(request.query_params.get("since", "0"))
        if since is None:
            raise ValidationError({"since": ["Give a tree size: a whole number ≥ 0."]})
        limit = parse_row_id(request.query_params.get("limit", str(proofs.MAX_CHECKPOINTS)))
        if limit is None or not 1 <= limit <= proofs.MAX_CHECKPOINTS:
            raise ValidationError(
                {"limit": [f"Give a whole number from 1 to {proofs.MAX_CHECKPOINTS}."]}
            )
        return Response({"checkpoints": proofs.checkpoints_since(since, limit)})


@extend_schema(
    summary="An event's signed receipt with its inclusion proof",
    responses={
        200: OpenApiTypes.OBJECT,
        **errors(*READ_ERRORS),
        409: OpenApiResponse(
            ErrorDetailSerializer,
            description="No checkpoint covers the event yet (klaviyo_consent_checkpoint).",
            examples=response_examples(("Not yet checkpointed", examples.NOT_YET_CHECKPOINTED)),
        ),
    },
    examples=response_examples(("Receipt", examples.RECEIPT)),
)
class EventReceiptView(Documented, APIView):
    """``GET events/{id}/receipt/``: one receipt; 409 while no checkpoint covers the event."""

    permission_classes = [CanViewConsent]

    def get_queryset(self) -> Any:
        return ConsentEvent.objects.select_related("consent_text_version", "delivery", "profile")

    def get(self, request: Request, pk: int) -> Response:
        event = get_object_or_404(self.get_queryset(), pk=pk)
        try:
            return Response(proofs.receipt(event))
        except NotYetCheckpointed as exc:
            return Response({"detail": str(exc)}, status=409)


@extend_schema(
    summary="Every receipt of a person, against one checkpoint",
    responses={200: OpenApiTypes.OBJECT, **errors(*READ_ERRORS)},
    examples=response_examples(("Receipts", examples.RECEIPTS)),
)
class ProfileReceiptsView(Documented, APIView):
    """``GET profiles/{id}/receipts/``: every receipt of a person, against one checkpoint."""

    permission_classes = [CanViewConsent]

    def get_queryset(self) -> Any:
        return ConsentEvent.objects.all()

    def get(self, request: Request, pk: int) -> Response:
        profile = get_object_or_404(Profile, pk=pk)
        return Response(proofs.profile_receipts(profile))
