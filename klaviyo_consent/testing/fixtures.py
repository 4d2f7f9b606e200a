"""The fake Klaviyo for ``unittest`` / Django ``TestCase`` users, beside the pytest fixture.

``klaviyo_fake()`` is a context manager: inside it a fresh :class:`FakeKlaviyo` answers every
request the app sends (the real HTTP client runs, over a ``requests`` transport adapter)::

    from klaviyo_consent.testing.fixtures import klaviyo_fake

    with klaviyo_fake() as fake:
        fake.add_list("Y6nRLr")
        ...  # sign someone up
        assert fake.get_profile(email="a@example.com")["subscriptions"]["email"]...

``KlaviyoFakeMixin`` gives each test of a ``TestCase`` its own fake as ``self.klaviyo_fake``::

    class SignupTests(KlaviyoFakeMixin, TestCase):
        klaviyo_fake_options = {"default_opt_in_process": "single_opt_in"}

        def test_signup_reaches_klaviyo(self):
            ...

The pytest fixture ``klaviyo_fake`` (``pytest_plugin.py``) installs the fake the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from django.conf import settings
from django.test.utils import override_settings

from klaviyo_consent.backends import reset_backend
from klaviyo_consent.ratelimit import reset_limiters
from klaviyo_consent.testing.fake import FakeKlaviyo, set_default_fake

#: The backend that answers from the process-wide fake.
FAKE_BACKEND = "klaviyo_consent.backends.fake.FakeKlaviyoBackend"


def fake_consent_settings(current: dict[str, Any] | None) -> dict[str, Any]:
    """``KLAVIYO_CONSENT`` as given, but with the fake backend answering from the default fake.

    A ``fake`` in ``BACKEND_OPTIONS`` is dropped so the backend uses the installed one.
    """
    consent = dict(current or {})
    consent["BACKEND"] = FAKE_BACKEND
    options = consent.get("BACKEND_OPTIONS") or {}
    consent["BACKEND_OPTIONS"] = {key: value for key, value in options.items() if key != "fake"}
    return consent


@contextmanager
def installed(fake: FakeKlaviyo) -> Iterator[FakeKlaviyo]:
    """Make ``fake`` the process-wide fake, with fresh backends and rate limiters, for a block.

    Settings are the caller's job (``klaviyo_fake`` overrides them; the pytest fixture uses
    pytest-django's ``settings``); the previous default fake comes back on exit.
    """
    previous = set_default_fake(fake)
    reset_backend()
    reset_limiters()
    try:
        yield fake
    finally:
        reset_backend()
        reset_limiters()
        set_default_fake(previous)


@contextmanager
def klaviyo_fake(fake: FakeKlaviyo | None = None, **options: Any) -> Iterator[FakeKlaviyo]:
    """A fresh fake Klaviyo answering every request the app sends inside the block.

    ``options`` go to :class:`FakeKlaviyo` (default ``enforce_rate_limits=False``, as the
    pytest fixture); or pass a ``fake`` you built. ``KLAVIYO_CONSENT`` is overridden with the
    fake backend for the block (other keys kept) and restored on exit, with the backend
    instance, the client's rate limiters and the previous default fake.
    """
    if fake is None:
        fake = FakeKlaviyo(**{"enforce_rate_limits": False, **options})
    elif options:
        raise TypeError("give either a fake or options for a new one, not both")
    consent = fake_consent_settings(getattr(settings, "KLAVIYO_CONSENT", None))
    with override_settings(KLAVIYO_CONSENT=consent), installed(fake):
        yield fake


class KlaviyoFakeMixin:
    """For ``unittest.TestCase`` / Django ``TestCase``: each test gets ``self.klaviyo_fake``.

    Set ``klaviyo_fake_options`` on the class to configure the account (``FakeKlaviyo``
    keyword arguments). The fake is removed after the test, whatever its outcome.
    """

    klaviyo_fake_options: ClassVar[dict[str, Any]] = {}
    klaviyo_fake: FakeKlaviyo

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.klaviyo_fake = self.enterContext(  # type: ignore[attr-defined]
            klaviyo_fake(**self.klaviyo_fake_options)
        )
