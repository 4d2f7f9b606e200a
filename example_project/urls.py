from django.contrib import admin
from django.urls import include, path

from example_project.signup import views

urlpatterns = [
    path("", views.signup, name="signup"),
    path("admin/", admin.site.urls),
    path("api/consent/", include("klaviyo_consent.api.urls")),
    path("consent/", include("klaviyo_consent.urls")),
]
