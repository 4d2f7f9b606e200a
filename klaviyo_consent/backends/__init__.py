"""Pluggable Klaviyo backends, chosen by ``KLAVIYO_CONSENT["BACKEND"]`` like ``EMAIL_BACKEND``."""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed

from klaviyo_consent.backends.base import BaseKlaviyoBackend
from klaviyo_consent.conf import consent_settings

_local = threading.local()


def get_backend() -> BaseKlaviyoBackend:
    """This thread's backend instance (a requests.Session is not shared across threads)."""
    backend = getattr(_local, "backend", None)
    if backend is None:
        backend = consent_settings.BACKEND(**consent_settings.BACKEND_OPTIONS)
        _local.backend = backend
    return backend


def reset_backend() -> None:
    """Forget this thread's instance so the next call reads the settings again."""
    backend = getattr(_local, "backend", None)
    if backend is not None:
        backend.close()
    _local.backend = None


def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # Connected after ``conf``'s own receiver (this module imports it), so the next backend
    # is built from the reloaded settings.
    if setting == "KLAVIYO_CONSENT":
        reset_backend()


setting_changed.connect(_reset_on_setting_changed)
