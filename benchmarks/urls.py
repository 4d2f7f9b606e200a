"""The consent API as a site mounts it; scripts may append their own routes before serving."""

from django.urls import include, path

urlpatterns = [path("api/consent/", include("klaviyo_consent.api.urls"))]
