"""benchmarks.settings plus the Django admin, for benchmarks/admin_pages.py."""

from benchmarks.settings import *  # noqa: F403
from benchmarks.settings import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = ["django.contrib.admin", "django.contrib.messages", *INSTALLED_APPS]
MIDDLEWARE = [*MIDDLEWARE, "django.contrib.messages.middleware.MessageMiddleware"]
ROOT_URLCONF = "benchmarks.admin_urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
