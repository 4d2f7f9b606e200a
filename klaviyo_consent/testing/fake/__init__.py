"""An in-memory imitation of the Klaviyo API endpoints this app relies on.

Why it exists: consent sync has to be exercised against Klaviyo's real behaviour (bulk jobs
answered with 202 and applied later, double opt-in, SMS country rules, suppressions, rate
limits, lost answers) in unit tests, benchmarks and local demos, without a network or an
account. Request bodies are checked with the official SDK's pydantic models (klaviyo-api),
so a payload the fake accepts has the shape Klaviyo documents.

The fake applies a job while answering it (Klaviyo queues it): a test can read the result
straight after the 202, as a poller would after the job has run.

Django is deliberately not imported: the fake also runs behind a plain WSGI server.

One room per job; import from here, the rooms are not public:

==================  ===========================================================================
``records``         constants, the records the account keeps, value helpers (phones, times)
``errors``          JSON:API error objects and the refusal that carries them
``filters``         ``filter=``, ``sort=`` and cursor pagination
``validation``      bodies checked with the klaviyo-api SDK models
``ratelimits``      Klaviyo's published limits (from :mod:`klaviyo_consent.klaviyo`), enforced
``state``           the account: settings, profiles, lists, and the rules that change them
``scenarios``       what people and Klaviyo do outside the API (confirm, STOP, bounce...)
``subscriptions``   bulk subscribe / unsubscribe jobs
``suppressions``    bulk suppress / unsuppress jobs and their status reads
``reads``           ``GET`` profiles and lists
``routing``         the HTTP entry point: routes, auth, revision, throttling, injected faults
``core``            :class:`FakeKlaviyo` assembled from the rooms; the process-wide default
``persistence``     a file-backed fake shared by several processes (the demo)
``transports``      the ``requests`` adapter and the WSGI app / server
``context``         :func:`klaviyo_fake` and :class:`KlaviyoFakeMixin` for ``unittest`` users
==================  ===========================================================================
"""

from klaviyo_consent.testing.fake.core import FakeKlaviyo, get_default_fake, set_default_fake
from klaviyo_consent.testing.fake.errors import error_object
from klaviyo_consent.testing.fake.filters import parse_filter
from klaviyo_consent.testing.fake.persistence import FileBackedFakeKlaviyo, get_file_backed_fake
from klaviyo_consent.testing.fake.ratelimits import RATE_LIMITS, RateLimit
from klaviyo_consent.testing.fake.records import (
    DEFAULT_BASE_URL,
    DEFAULT_SMS_COUNTRIES,
    FAULT_CHOICES,
    INVALID_EMAIL_DETAIL,
    INVALID_PHONE_DETAIL,
    NO_SENDING_NUMBER_DETAIL,
    PARTIAL_FAILURE_HEADER,
    REFUSES_UNSENDABLE_SMS_REVISION,
    SMS_CONFIGURATION_REQUIRED_DETAIL,
    FakeResponse,
    InjectedFault,
    LoggedRequest,
    PendingConfirmation,
)
from klaviyo_consent.testing.fake.transports import (
    FakeKlaviyoAdapter,
    FakeKlaviyoServer,
    make_server,
    make_wsgi_app,
    serve,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SMS_COUNTRIES",
    "FAULT_CHOICES",
    "INVALID_EMAIL_DETAIL",
    "INVALID_PHONE_DETAIL",
    "NO_SENDING_NUMBER_DETAIL",
    "PARTIAL_FAILURE_HEADER",
    "REFUSES_UNSENDABLE_SMS_REVISION",
    "RATE_LIMITS",
    "SMS_CONFIGURATION_REQUIRED_DETAIL",
    "FakeKlaviyo",
    "FakeKlaviyoAdapter",
    "FakeKlaviyoServer",
    "FakeResponse",
    "FileBackedFakeKlaviyo",
    "InjectedFault",
    "LoggedRequest",
    "PendingConfirmation",
    "RateLimit",
    "error_object",
    "get_default_fake",
    "get_file_backed_fake",
    "make_server",
    "make_wsgi_app",
    "parse_filter",
    "serve",
    "set_default_fake",
]
