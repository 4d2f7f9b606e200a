"""Settings for worker subprocesses in tests and benchmarks: the test settings, from env vars.

Why a separate module: a worker (``klaviyo_consent_sync --loop``, ``db_worker``, a Celery worker)
is its own process, so the test process hands it everything through the environment:

``DATABASE_URL``
    The database to share with the test (pytest-django's test database); PostgreSQL.
``KLAVIYO_API_URL``
    The fake Klaviyo's HTTP server; the real HTTP backend talks to it.
``KLAVIYO_CONSENT_JSON``
    A JSON object merged into ``KLAVIYO_CONSENT`` (``LEASE_SECONDS``, ``RATE_LIMITER``, ...).
``TASKS_ENGINE``
    ``immediate`` (default), ``database`` (django-tasks-db) or ``celery`` (klaviyo_consent.celery).
``CELERY_BROKER_URL``
    Broker and result backend for ``celery`` (default: the suite's Redis, db 5).
``RATE_LIMIT_TIME_SCALE``
    Simulated seconds per real second for a ``redis://`` ``RATE_LIMITER``, matching a fake
    that runs with the same ``time_scale`` (so a test sees many rate windows in a few seconds).
``RATE_LIMIT_MARGIN``
    Overrides ``KLAVIYO_CONSENT["RATE_LIMIT_MARGIN"]`` (real seconds added to each window).

The three ``TASKS`` blocks below are the engine snippets of docs/delivery.md.
"""

import json
import os

from klaviyo_consent.compat import TASKS_MODULE
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, KLAVIYO_CONSENT

_overrides = json.loads(os.environ.get("KLAVIYO_CONSENT_JSON") or "{}")
KLAVIYO_CONSENT = {
    **KLAVIYO_CONSENT,
    "BACKEND": "klaviyo_consent.backends.http.KlaviyoBackend",
    "API_URL": os.environ.get("KLAVIYO_API_URL", "http://127.0.0.1:8765"),
    "API_KEY": "pk_worker_tests",
    "TIMEOUT": 5.0,
    **_overrides,
}

if os.environ.get("RATE_LIMIT_MARGIN"):
    KLAVIYO_CONSENT["RATE_LIMIT_MARGIN"] = float(os.environ["RATE_LIMIT_MARGIN"])
_time_scale = float(os.environ.get("RATE_LIMIT_TIME_SCALE") or 1.0)
_limiter = KLAVIYO_CONSENT.get("RATE_LIMITER")
if _time_scale != 1.0 and isinstance(_limiter, str) and _limiter.startswith("redis"):
    from klaviyo_consent.ratelimit import RedisRateLimiter

    KLAVIYO_CONSENT["RATE_LIMITER"] = RedisRateLimiter(
        _limiter, time_scale=_time_scale, margin=KLAVIYO_CONSENT.get("RATE_LIMIT_MARGIN", 0.1)
    )

ENGINE = os.environ.get("TASKS_ENGINE", "immediate")
if ENGINE == "immediate":
    TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"}}
elif ENGINE == "database":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
elif ENGINE == "celery":
    # Celery without Django's Tasks: klaviyo_consent.celery's task, enqueued on commit.
    KLAVIYO_CONSENT["ENQUEUE_PUSH"] = "klaviyo_consent.celery.enqueue_push"
    CELERY_IMPORTS = ["klaviyo_consent.celery"]
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
    CELERY_RESULT_BACKEND = CELERY_BROKER_URL
    CELERY_RESULT_EXTENDED = True
    CELERY_TASK_ACKS_LATE = True
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
else:
    raise ValueError(f"TASKS_ENGINE must be immediate, database or celery, not {ENGINE!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"klaviyo_consent": {"handlers": ["console"], "level": "WARNING"}},
}
