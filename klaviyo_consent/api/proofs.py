"""Checkpoints and receipts (issue 10): thin views over services.proofs.

Checkpoints hold no personal data (sizes, roots, signatures), so anyone may read them: a
verifier that keeps the heads it saw holds the site to them. Receipts need the view
permission for consent events.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent.api.permissions import CanViewConsent
from klaviyo_consent.exceptions import NotYetCheckpointed
from klaviyo_consent.models import Checkpoint, ConsentEvent, Profile, parse_row_id
from klaviyo_consent.services import proofs


class LatestCheckpointView(APIView):
    """``GET checkpoints/latest/``: the newest signed tree head, or 404 before the first."""

    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        latest = Checkpoint.objects.order_by("-tree_size").first()
        if latest is None:
            return Response({"detail": "No checkpoint has been made yet."}, status=404)
        return Response(proofs.checkpoint_data(latest))


class CheckpointListView(APIView):
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


class EventReceiptView(APIView):
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


class ProfileReceiptsView(APIView):
    """``GET profiles/{id}/receipts/``: every receipt of a person, against one checkpoint."""

    permission_classes = [CanViewConsent]

    def get_queryset(self) -> Any:
        return ConsentEvent.objects.all()

    def get(self, request: Request, pk: int) -> Response:
        profile = get_object_or_404(Profile, pk=pk)
        return Response(proofs.profile_receipts(profile))
