"""FakeKlaviyo, assembled from its rooms, and the process-wide default instance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from klaviyo_consent.testing.fake.client import ClientSubscriptions
from klaviyo_consent.testing.fake.lists import ListMemberships
from klaviyo_consent.testing.fake.privacy import DataPrivacy
from klaviyo_consent.testing.fake.profiles import ProfileImports
from klaviyo_consent.testing.fake.reads import Reads
from klaviyo_consent.testing.fake.routing import Routing
from klaviyo_consent.testing.fake.scenarios import AccountScenarios
from klaviyo_consent.testing.fake.subscriptions import SubscriptionJobs
from klaviyo_consent.testing.fake.suppressions import SuppressionJobs


class FakeKlaviyo(
    AccountScenarios,
    SubscriptionJobs,
    SuppressionJobs,
    ProfileImports,
    ListMemberships,
    ClientSubscriptions,
    DataPrivacy,
    Reads,
    Routing,
):
    """Klaviyo's consent endpoints, in memory and thread-safe (one RLock around all state).

    Settings mirror an account: ``sms_countries`` (phonenumbers regions Klaviyo texts),
    ``sms_enabled``, ``default_opt_in_process`` (used when a job names no list), ``api_key``
    (None accepts any key), ``public_api_key`` (the site id ``/client/`` calls must name;
    None accepts any). Test knobs: ``enforce_rate_limits``, ``time_scale`` (simulated
    seconds per real second), ``fault_rate`` with ``seed``, ``timeout_applies`` (a random
    timeout on a POST then applies the job half of the time), ``validate_responses``
    (check every answer with the SDK's models), ``now`` (a datetime or a callable).

    Tests and benchmarks read the public state directly: ``jobs``, ``request_log``,
    ``counts`` (requests per operation id), ``applied`` (consent applications by jobs,
    keyed by lower-cased email or E.164 phone, channel, purpose, consent), ``throttled``
    (rate-limit 429s), ``deletion_jobs`` (data-privacy deletions), ``injected_faults``,
    ``pending_confirmations`` and ``rejected_emails`` (fill it to make Klaviyo refuse
    addresses). ``clock`` (default ``time.monotonic``) can be replaced to drive the
    rate-limit windows by hand.
    """

    @contextmanager
    def editing(self) -> Iterator[FakeKlaviyo]:
        """Change the account outside the API (confirm, STOP, bounce, ``rejected_emails``) as
        one step; a file-backed fake reads its file first and saves it after."""
        with self._lock:
            yield self


_default_fake: FakeKlaviyo | None = None

_default_lock = threading.Lock()


def get_default_fake() -> FakeKlaviyo:
    """The process-wide fake shared by the adapter, the WSGI app and settings-driven code."""
    global _default_fake
    with _default_lock:
        if _default_fake is None:
            _default_fake = FakeKlaviyo()
        return _default_fake


def set_default_fake(fake: FakeKlaviyo | None) -> FakeKlaviyo | None:
    """Replace (or, with None, forget) the process-wide fake; returns the previous one."""
    global _default_fake
    with _default_lock:
        previous, _default_fake = _default_fake, fake
        return previous
