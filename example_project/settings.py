"""Example site settings, read from the environment with django-environ.

Unset ``KLAVIYO_PRIVATE_API_KEY`` → the embedded fake Klaviyo answers in-process (no key, no
network). Set it → the HTTP backend talks to ``KLAVIYO_API_URL``.
"""

from pathlib import Path

import environ

from klaviyo_consent.compat import TASKS_MODULE

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env(
    DEBUG=(bool, True),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    KLAVIYO_PRIVATE_API_KEY=(str, ""),
    KLAVIYO_API_URL=(str, "https://a.klaviyo.com"),
    KLAVIYO_LIST_ID=(str, "DemoLs"),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="insecure-demo-key-change-me")
DEBUG = env("DEBUG")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "klaviyo_consent",
    "example_project.signup",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "example_project" / "templates"],
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
WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'demo.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
LOGIN_URL = "/admin/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
}
# API_THROTTLE=off lifts the app's rate limits (make test-schema: the fuzzer sends thousands of
# requests as one user and must reach every rule, not only the 429).
if not env.bool("API_THROTTLE", default=True):
    REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
        "klaviyo_consent_write": None,
        "klaviyo_consent_check": None,
        "klaviyo_consent_webhook": None,
        "klaviyo_consent_public": None,
    }

# The immediate backend pushes right after each commit: fine for a demo. For production see
# docs/delivery.md (database worker, or Celery with Redis).
TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"}}

KLAVIYO_API_KEY = env("KLAVIYO_PRIVATE_API_KEY")
KLAVIYO_CONSENT = {
    "API_KEY": KLAVIYO_API_KEY or None,
    "API_URL": env("KLAVIYO_API_URL"),
    "DEFAULT_LIST_ID": env("KLAVIYO_LIST_ID") or None,
    "BACKEND": (
        "klaviyo_consent.backends.http.KlaviyoBackend"
        if KLAVIYO_API_KEY
        else "klaviyo_consent.backends.fake.FakeKlaviyoBackend"
    ),
    # Offline, the fake answers at once, so read back straight away.
    "VERIFY_DELAY": 30.0 if KLAVIYO_API_KEY else 0.0,
    "WRITE_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The countries this Klaviyo account has an SMS sending number for (check I001).
    "SMS_SENDING_COUNTRIES": env.list(
        "KLAVIYO_SMS_SENDING_COUNTRIES", default=["US", "CA", "GB", "IE", "AU", "NZ"]
    ),
    # Checkpoint signing key: from the environment, else a key the demo makes for itself.
    "LEDGER_SIGNING_KEY": env("LEDGER_SIGNING_KEY", default="") or None,
    "LEDGER_SECRET": env("LEDGER_SECRET", default="") or None,
    "CONTROLLER": {"name": "Demo Shop", "contact": "privacy@example.com", "address": "", "url": ""},
}
if not KLAVIYO_CONSENT["LEDGER_SIGNING_KEY"]:
    # An Ed25519 private key is any 32 random bytes; kept beside the demo's other state.
    _key_file = BASE_DIR / "demo-ledger-signing-key"
    if not _key_file.exists():
        import base64
        import secrets

        _key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        _key_file.chmod(0o600)
    KLAVIYO_CONSENT["LEDGER_SIGNING_KEY"] = _key_file.read_text().strip()
if not KLAVIYO_API_KEY:
    KLAVIYO_CONSENT["BACKEND_OPTIONS"] = {
        "fake": {
            # The browser test (tests/browser/) points a server of its own at a fresh file.
            "state_file": env(
                "KLAVIYO_FAKE_STATE_FILE", default=str(BASE_DIR / "demo-fake-klaviyo.json")
            ),
            "lists": {
                "DemoLs": ("Newsletter (single opt-in)", "single_opt_in"),
                "DblOpt": ("VIP (double opt-in)", "double_opt_in"),
            },
            "enforce_rate_limits": False,
        }
    }
