from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/consent/", include("klaviyo_consent.api.urls")),
    path("consent/", include("klaviyo_consent.urls")),
]
