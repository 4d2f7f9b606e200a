"""Klaviyo's published facts that the app and its fake both rely on, written down once.

Everything here is Klaviyo's, not ours: the revision we pin, where Klaviyo texts, how many
profiles a bulk job takes, how large a page may be, each operation's published rate limits,
which suppressions a subscribe cannot lift. The app (``conf.py``, ``phone.py``,
``services/payloads.py``, ``services/verdicts.py``, ``ratelimit.py``) and the fake Klaviyo
(``testing/fake/``) import these names instead of typing the values again, and
``tests/test_klaviyo_facts.py`` checks them against the OpenAPI spec of :data:`REVISION`
(klaviyo/openapi, ``openapi/stable/apis/<operationId>.json``).

Sources: "spec" is the OpenAPI document of the pinned revision; "docs" Klaviyo's developer
docs or help centre; "announced" Klaviyo staff in the developer community.

No Django here: the fake imports this module behind a plain WSGI server too.
"""

from __future__ import annotations

from typing import NamedTuple

#: The API revision every request pins (spec ``info.version``); bump deliberately.
REVISION = "2026-07-15"
#: Klaviyo's API host (spec ``servers[0].url``).
BASE_URL = "https://a.klaviyo.com"
#: Where a person's profile opens in Klaviyo's web app (the admin's "View in Klaviyo").
PROFILE_URL = "https://www.klaviyo.com/profile/{klaviyo_id}"

#: Where Klaviyo sends SMS, as ISO 3166 alpha-2 region codes as phonenumbers gives them
#: (docs, help centre "Where is Klaviyo SMS available"). "US" means the 50 states only:
#: phonenumbers gives Puerto Rico and the other territories their own regions (PR, VI, GU...).
SMS_COUNTRIES: tuple[str, ...] = (
    "US", "CA", "GB", "IE", "DE", "NL", "FR", "BE", "AT", "ES",
    "CH", "DK", "SE", "NO", "FI", "IT", "PT", "AU", "NZ",
)  # fmt: skip

#: Profiles per ``bulk_subscribe_profiles`` job (spec: "Maximum number of profiles can be
#: submitted for subscription: 1000").
MAX_SUBSCRIBE_PROFILES = 1000
#: Profiles per ``bulk_unsubscribe_profiles`` job (spec: "Maximum number of profiles per call").
MAX_UNSUBSCRIBE_PROFILES = 100
#: Emails per ``bulk_suppress_profiles`` job (spec: "Email address per request limit").
MAX_SUPPRESS_PROFILES = 100
#: Emails per ``bulk_unsuppress_profiles`` job (spec: "Email address per request limit").
MAX_UNSUPPRESS_PROFILES = 100
#: Profiles per ``bulk_import_profiles`` job (spec: "Accepts up to 10,000 profiles per
#: request"; also at most 5 MB a request and 100 KB a profile).
MAX_IMPORT_PROFILES = 10000
#: Profiles per ``add_profiles_to_list`` / ``remove_profiles_from_list`` call (spec: "accepts
#: a maximum of 1000 profiles per call").
MAX_LIST_MEMBERS = 1000
#: Profiles per ``create_client_subscription`` call: one (spec: the body holds one
#: ``profile``; the endpoint is for browsers, one signup at a time).
MAX_CLIENT_SUBSCRIPTION_PROFILES = 1
#: Largest ``page[size]`` of ``get_profiles`` and the suppression-job listings (spec schema
#: ``maximum``); Klaviyo's default is :data:`DEFAULT_PAGE_SIZE`.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
#: ``get_lists`` pages: at most (and by default) 10 (spec schema ``maximum`` / ``default``).
MAX_LIST_PAGE_SIZE = 10

#: Klaviyo's rate-limit windows, in seconds: burst (per second) and steady (per minute),
#: fixed windows counted per account (docs, "Rate limits").
BURST_SECONDS = 1.0
STEADY_SECONDS = 60.0


class RateLimit(NamedTuple):
    """Klaviyo's two fixed windows for one operation: calls per second (burst) and per minute
    (steady), as the spec's per-operation rate-limit extension publishes them."""

    burst: int
    steady: int

    def windows(self) -> tuple[tuple[int, float], ...]:
        """``((calls, seconds), ...)``: the burst window, then the steady one."""
        return ((self.burst, BURST_SECONDS), (self.steady, STEADY_SECONDS))


#: Published limits of every operation the app calls or the fake serves (spec, per operation).
RATE_LIMITS: dict[str, RateLimit] = {
    "bulk_subscribe_profiles": RateLimit(75, 750),
    "bulk_unsubscribe_profiles": RateLimit(75, 750),
    "bulk_suppress_profiles": RateLimit(75, 750),
    "bulk_unsuppress_profiles": RateLimit(75, 750),
    "get_bulk_suppress_profiles_jobs": RateLimit(75, 750),
    "get_bulk_suppress_profiles_job": RateLimit(75, 750),
    "get_bulk_unsuppress_profiles_jobs": RateLimit(75, 750),
    "get_bulk_unsuppress_profiles_job": RateLimit(75, 750),
    "get_profiles": RateLimit(75, 750),
    "get_profile": RateLimit(75, 750),
    "create_or_update_profile": RateLimit(75, 750),
    "request_profile_deletion": RateLimit(3, 60),
    "get_lists": RateLimit(75, 750),
    "get_list": RateLimit(75, 750),
    "bulk_import_profiles": RateLimit(10, 150),
    "get_bulk_import_profiles_job": RateLimit(10, 150),
    "add_profiles_to_list": RateLimit(10, 150),
    "remove_profiles_from_list": RateLimit(10, 150),
    "get_profile_ids_for_list": RateLimit(75, 750),
    "create_client_subscription": RateLimit(350, 750),
}

#: Operations whose limits drop when an ``additional-fields`` value is asked for (spec,
#: operation descriptions): ``get_list`` with ``additional-fields[list]=profile_count`` is
#: 1/s, 15/m. Counted under their own name, ``<operation>+<field>``.
ADDITIONAL_FIELD_RATE_LIMITS: dict[str, RateLimit] = {
    "get_list+profile_count": RateLimit(1, 15),
}

#: Email suppression reasons a profile shows (spec, ``suppression[].reason``).
SUPPRESSION_REASONS = frozenset(
    {"HARD_BOUNCE", "INVALID_EMAIL", "SPAM_COMPLAINT", "UNSUBSCRIBE", "USER_SUPPRESSED"}
)
#: Suppressions a subscribe job lifts (spec: "will remove any UNSUBSCRIBE, SPAM_REPORT or
#: USER_SUPPRESSED suppressions"; profiles show the spam one as SPAM_COMPLAINT).
LIFTED_BY_SUBSCRIBE = frozenset({"UNSUBSCRIBE", "SPAM_REPORT", "SPAM_COMPLAINT", "USER_SUPPRESSED"})
#: Suppressions neither a subscribe nor an unsuppress job lifts (spec, bulk_unsuppress_profiles:
#: "suppressed profiles with reason INVALID_EMAIL or HARD_BOUNCE remain unchanged").
STICKY_SUPPRESSIONS = frozenset({"HARD_BOUNCE", "INVALID_EMAIL"})

#: A list's ``opt_in_process`` values (spec, list attributes).
OPT_IN_PROCESSES = frozenset({"double_opt_in", "single_opt_in"})

#: From this revision on, SMS consent for a number in a region the account has no sending
#: number for is refused (400 at the entry's phone_number) instead of dropped silently
#: (announced: Klaviyo staff, community thread 12192).
REFUSES_UNSENDABLE_SMS_REVISION = "2024-05-15"
#: The response header naming an identifier Klaviyo ignored in an accepted job (e.g.
#: ``phone_number`` for an invalid phone beside a valid email) (announced; not in the spec).
PARTIAL_FAILURE_HEADER = "X-Klaviyo-Partial-Failure"
