"""The real HTTP backend with the in-process fake Klaviyo mounted as its transport.

Everything but the socket is exercised: headers, JSON:API bodies, status handling. No key and no
network are needed. ``BACKEND_OPTIONS`` go to the backend; under ``fake`` they configure the
fake: any ``FakeKlaviyo`` argument, plus ``lists`` ({id: (name, opt_in_process)}) and
``state_file`` (share one fake account between processes, as the demo does). Without them the
process-wide default fake answers (the one the ``klaviyo_fake`` pytest fixture replaces).
"""

from __future__ import annotations

from typing import Any

from klaviyo_consent.backends.http import KlaviyoBackend
from klaviyo_consent.exceptions import ConfigurationError

try:
    from klaviyo_consent.testing.fake import (
        FakeKlaviyo,
        FakeKlaviyoAdapter,
        get_default_fake,
        get_file_backed_fake,
    )
except ImportError as exc:  # the SDK the fake validates with is a test extra
    raise ConfigurationError(
        "The fake Klaviyo backend needs the test extra: pip install 'django-klaviyo-consent[test]'"
        f" ({exc})."
    ) from exc


def build_fake(options: dict[str, Any]) -> FakeKlaviyo:
    options = dict(options)
    lists = options.pop("lists", {}) or {}
    state_file = options.pop("state_file", None)
    fake = get_file_backed_fake(state_file, **options) if state_file else FakeKlaviyo(**options)
    missing = {k: v for k, v in lists.items() if k not in fake.list_ids()}
    for list_id, (name, opt_in_process) in missing.items():
        fake.add_list(list_id, name, opt_in_process)
    if missing and state_file:
        fake.save()
    return fake


class FakeKlaviyoBackend(KlaviyoBackend):
    def __init__(self, *, fake: FakeKlaviyo | dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("api_key", "pk_fake_offline")
        super().__init__(**kwargs)
        if isinstance(fake, dict):
            fake = build_fake(fake)
        self.fake = fake or get_default_fake()
        self.session.mount(self.api_url, FakeKlaviyoAdapter(self.fake))
