"""The API root, its OpenAPI schema and the schema's docs page (Swagger UI from
drf-spectacular-sidecar's static files: no CDN, no network)."""

from __future__ import annotations

from typing import Any

from django.templatetags.static import static
from django.urls import URLPattern, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from klaviyo_consent import __version__
from klaviyo_consent.api.schema import SCHEMA_SETTINGS, Documented, response_examples


class SchemaView(SpectacularAPIView):
    """``GET schema/``: the app's OpenAPI 3 schema (YAML, or JSON with ``?format=json``)."""

    #: Not an endpoint of the schema itself (DRF's endpoint enumerator skips ``schema = None``).
    schema = None

    custom_settings = {**SCHEMA_SETTINGS, "VERSION": __version__}
    permission_classes = [AllowAny]


class DocsView(SpectacularSwaggerView):
    """``GET docs/``: Swagger UI over ``schema/``, served from the site's static files."""

    schema = None

    permission_classes = [AllowAny]
    title = SCHEMA_SETTINGS["TITLE"]

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.url = reverse(f"{request.resolver_match.namespace}:schema")
        return super().get(request, *args, **kwargs)

    @staticmethod
    def _swagger_ui_resource(filename: str) -> str:
        return static(f"drf_spectacular_sidecar/swagger-ui-dist/{filename}")

    @staticmethod
    def _swagger_ui_favicon() -> str:
        return static("drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png")


@extend_schema(
    summary="The API root: a link to each endpoint without a path parameter",
    responses={
        200: OpenApiResponse(
            response={"type": "object", "additionalProperties": {"type": "string"}},
            description="Route name → absolute URL.",
            examples=response_examples(
                (
                    "Links",
                    {
                        "subscribe": "https://shop.example.com/api/consent/subscribe/",
                        "schema": "https://shop.example.com/api/consent/schema/",
                        "docs": "https://shop.example.com/api/consent/docs/",
                    },
                )
            ),
        )
    },
)
class ApiRoot(Documented, APIView):
    """``GET /api/consent/``: where each endpoint is, the schema and its docs."""

    permission_classes = [AllowAny]
    #: The app's URL patterns (set by urls.py); those without a parameter are listed.
    routes: tuple[Any, ...] = ()

    def get(self, request: Request) -> Response:
        namespace = request.resolver_match.namespace
        return Response(
            {
                route.name: request.build_absolute_uri(reverse(f"{namespace}:{route.name}"))
                for route in self.routes
                if isinstance(route, URLPattern)
                and route.name
                and not getattr(route.pattern, "converters", None)
            }
        )
