from django.apps import AppConfig


class KlaviyoConsentConfig(AppConfig):
    name = "klaviyo_consent"
    verbose_name = "Klaviyo consent"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from klaviyo_consent import checks, receivers  # noqa: F401  (connects receivers, registers checks)
