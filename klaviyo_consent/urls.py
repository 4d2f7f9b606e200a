"""The drop-in form's endpoint. Mount with ``path("consent/", include("klaviyo_consent.urls"))``."""

from django.urls import path

from klaviyo_consent import views

app_name = "klaviyo_consent_forms"

urlpatterns = [path("signup/", views.submit, name="signup")]
