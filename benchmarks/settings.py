"""Django settings for the benchmark scripts.

SQLite file database in a fresh temporary directory by default; PostgreSQL database ``bench`` on
127.0.0.1:5432 (user postgres) with ``BENCH_DATABASE=postgres``. ``benchmarks/common.py`` sets
these variables from ``--database`` and creates the PostgreSQL database when it is missing.

Environment:
    BENCH_DATABASE      sqlite (default) | postgres
    BENCH_SQLITE_PATH   SQLite file (default: <new temp dir>/bench.sqlite3; common.setup()
                        exports it so child processes share one file)
    BENCH_PG_NAME       PostgreSQL database name (default bench)
    BENCH_PG_HOST, BENCH_PG_PORT, BENCH_PG_USER, BENCH_PG_PASSWORD
"""

from __future__ import annotations

import os
import tempfile

from klaviyo_consent.compat import TASKS_MODULE

SECRET_KEY = "benchmarks-only"
DEBUG = False  # DEBUG=True would keep every SQL query in memory
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "rest_framework.authtoken",
    "klaviyo_consent",
    "benchmarks",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "benchmarks.urls"
TEMPLATES: list[dict] = []

BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "sqlite")
if BENCH_DATABASE == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "bench"),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("BENCH_PG_PASSWORD", ""),
        }
    }
elif BENCH_DATABASE == "sqlite":
    SQLITE_PATH = os.environ.get("BENCH_SQLITE_PATH") or os.path.join(
        tempfile.mkdtemp(prefix="kc-bench-"), "bench.sqlite3"
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            # Django's defaults otherwise (rollback journal, synchronous=FULL): nothing tuned.
            "OPTIONS": {"timeout": 30},
        }
    }
else:
    raise ValueError(f"BENCH_DATABASE must be sqlite or postgres, not {BENCH_DATABASE!r}")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
}
TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"}}
KLAVIYO_CONSENT = {
    # The real HTTP client with the in-process fake Klaviyo mounted as its transport.
    "BACKEND": "klaviyo_consent.backends.fake.FakeKlaviyoBackend",
    # Pushing is asynchronous work: the scripts call the services themselves.
    "PUSH_ON_COMMIT": False,
    "VERIFY_DELAY": 0,
    # A fixed benchmark-only Ed25519 key (base64 of 32 bytes) and ledger secret.
    "LEDGER_SIGNING_KEY": "YmVuY2htYXJrLW9ubHktbGVkZ2VyLWtleS0zMmJ5dGU=",
    "LEDGER_SECRET": "benchmarks-only",
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"klaviyo_consent": {"handlers": ["console"], "level": "WARNING"}},
}
