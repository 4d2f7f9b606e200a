"""System checks: catch a misconfiguration at start-up, not at the first consent."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import connections
from rest_framework.permissions import AllowAny

from klaviyo_consent.backends.client import ClientBackend
from klaviyo_consent.backends.http import KlaviyoBackend
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError
from klaviyo_consent.models import ConsentEvent
from klaviyo_consent.services.signing import trusted_keys
from klaviyo_consent.tasks import sync_task
from klaviyo_consent.validators import KLAVIYO_ID

#: A Klaviyo private API key: ``pk_`` then letters and digits (Klaviyo's keys are hexadecimal).
_PRIVATE_KEY = re.compile(r"pk_[A-Za-z0-9]+")
_UNSAFE_KEY_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f]")


@checks.register("klaviyo_consent")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    try:
        backend = consent_settings.BACKEND
    except ConfigurationError as exc:
        return [checks.Error(str(exc), id="klaviyo_consent.E001")]
    is_fake = backend.__module__.startswith("klaviyo_consent.backends.fake")
    is_client = issubclass(backend, ClientBackend)
    if is_client:
        messages += _check_client_backend()
    elif issubclass(backend, KlaviyoBackend) and not is_fake and not consent_settings.API_KEY:
        messages.append(
            checks.Error(
                'KLAVIYO_CONSENT["API_KEY"] is not set but BACKEND is the HTTP backend.',
                hint="Set a private key, or use klaviyo_consent.backends.fake.FakeKlaviyoBackend "
                "to run offline.",
                id="klaviyo_consent.E002",
            )
        )
    key = consent_settings.API_KEY or ""
    if not isinstance(key, str):
        key = ""
    if key and _UNSAFE_KEY_CHARACTER.search(key):
        # The key is never stripped silently: a pasted newline is a mistake to fix, and
        # requests would quote the whole header (the key) in its error.
        messages.append(
            checks.Error(
                'KLAVIYO_CONSENT["API_KEY"] contains whitespace or a control character.',
                hint="Remove the spaces or line breaks around the key (often a trailing newline "
                "from a secrets file).",
                id="klaviyo_consent.E004",
            )
        )
    elif key and not _PRIVATE_KEY.fullmatch(key) and not is_fake:
        messages.append(
            checks.Warning(
                "KLAVIYO_CONSENT['API_KEY'] does not look like a private key (pk_…).",
                id="klaviyo_consent.W001",
            )
        )
    try:
        enqueue = consent_settings.ENQUEUE_PUSH
    except ConfigurationError as exc:
        messages.append(
            checks.Error(
                str(exc),
                hint='Celery sites: "klaviyo_consent.celery.enqueue_push" with the celery extra '
                "installed; None: Django's Tasks framework (TASK_BACKEND).",
                id="klaviyo_consent.E040",
            )
        )
        enqueue = exc
    if consent_settings.PUSH_ON_COMMIT and enqueue is None:
        alias = consent_settings.TASK_BACKEND
        try:
            sync_task().get_backend()
        except Exception as exc:  # noqa: BLE001 - whatever the Tasks framework raises, say it
            messages.append(
                checks.Error(
                    f'KLAVIYO_CONSENT["TASK_BACKEND"] = {alias!r} is not a usable task backend: '
                    f"{exc}",
                    hint="Name a backend of TASKS, or set PUSH_ON_COMMIT to False and run "
                    "klaviyo_consent_sync --loop.",
                    id="klaviyo_consent.E003",
                )
            )
    if not consent_settings.SMS_COUNTRIES:
        messages.append(
            checks.Warning(
                "KLAVIYO_CONSENT['SMS_COUNTRIES'] is empty: every SMS consent will be refused.",
                id="klaviyo_consent.W002",
            )
        )
    list_id = consent_settings.DEFAULT_LIST_ID
    if list_id is not None and not (isinstance(list_id, str) and KLAVIYO_ID.fullmatch(list_id)):
        messages.append(
            checks.Error(
                f'KLAVIYO_CONSENT["DEFAULT_LIST_ID"] = {list_id!r} is not a Klaviyo list id.',
                hint="A list id is letters and digits, e.g. Y6nRLr (Klaviyo: Lists → list "
                "settings).",
                id="klaviyo_consent.E005",
            )
        )
    messages += _check_sending_countries()
    messages += _check_public_writes()
    messages += _check_ledger(is_production=issubclass(backend, KlaviyoBackend) and not is_fake)
    days = consent_settings.EVIDENCE_RETENTION_DAYS
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        messages.append(
            checks.Error(
                f'KLAVIYO_CONSENT["EVIDENCE_RETENTION_DAYS"] must be None or a whole number of '
                f"days (1 or more), not {days!r}.",
                id="klaviyo_consent.E012",
            )
        )
    return messages


def _check_client_backend() -> list[checks.CheckMessage]:
    """The client backend (a public key only): what it cannot do, and what it needs."""
    messages: list[checks.CheckMessage] = [
        checks.Warning(
            "BACKEND is the client backend (a public key only): it subscribes through Create "
            "Client Subscription, one profile a request, and can do nothing else. Withdrawals, "
            "suppressions, list membership and historical imports fail with the reason, and "
            "Klaviyo's state cannot be read: verdicts stay 'pushed'.",
            hint='Set KLAVIYO_CONSENT["API_KEY"] (a private key) and the HTTP backend to '
            "withdraw consent and read verdicts back.",
            id="klaviyo_consent.W130",
        )
    ]
    if not consent_settings.PUBLIC_API_KEY:
        messages.append(
            checks.Error(
                'KLAVIYO_CONSENT["PUBLIC_API_KEY"] is not set but BACKEND is the client backend.',
                hint="Set the site's public API key (site id, Klaviyo: Settings → API keys).",
                id="klaviyo_consent.E130",
            )
        )
    if not consent_settings.DEFAULT_LIST_ID:
        messages.append(
            checks.Warning(
                'KLAVIYO_CONSENT["DEFAULT_LIST_ID"] is not set: Create Client Subscription '
                "requires a list, so a consent naming no list_id waits in the outbox.",
                hint="Set DEFAULT_LIST_ID to the list signups join.",
                id="klaviyo_consent.W131",
            )
        )
    return messages


def _check_public_writes() -> list[checks.CheckMessage]:
    """``AllowAny`` on the staff writes lets strangers learn who is on file (a 409
    ``identity_conflict`` says an identifier they sent is someone else's) and store words of
    their choosing as consent texts; the public signup paths never do either."""
    try:
        classes = consent_settings.WRITE_PERMISSION_CLASSES
    except ConfigurationError:
        return []
    if not any(isinstance(c, type) and issubclass(c, AllowAny) for c in classes):
        return []
    return [
        checks.Warning(
            'KLAVIYO_CONSENT["WRITE_PERMISSION_CLASSES"] lets anyone call subscribe/ and '
            "unsubscribe/: their 409 identity_conflict tells a stranger that an email or a "
            "number is on file.",
            hint="For a public signup use the drop-in {% consent_form %} or POST "
            "public/subscribe/, which answer a stranger as they answer a new person.",
            id="klaviyo_consent.W020",
        )
    ]


def _check_ledger(*, is_production: bool) -> list[checks.CheckMessage]:
    """The checkpoint keys: a signing key required in production; it and every
    LEDGER_VERIFY_KEYS entry valid whenever given.

    "Production" is DEBUG=False with the HTTP backend: a site really talking to Klaviyo.
    """
    try:
        trusted_keys()  # the signing key's and the old public keys'
    except ConfigurationError as exc:
        return [checks.Error(str(exc), id="klaviyo_consent.E011")]
    messages: list[checks.CheckMessage] = []
    if is_production and not settings.DEBUG and not consent_settings.LEDGER_SECRET:
        messages.append(
            checks.Warning(
                'KLAVIYO_CONSENT["LEDGER_SECRET"] is not set: identifier digests are keyed '
                "with a value derived from SECRET_KEY, so rotating SECRET_KEY makes every "
                "digest look tampered to klaviyo_consent_verify.",
                hint="Set LEDGER_SECRET once, keep it in your secrets store and never rotate it "
                "(docs/receipts.md).",
                id="klaviyo_consent.W011",
            )
        )
    if consent_settings.LEDGER_SIGNING_KEY:
        return messages
    if is_production and not settings.DEBUG:
        return messages + [
            checks.Error(
                'KLAVIYO_CONSENT["LEDGER_SIGNING_KEY"] is not set: the consent ledger cannot '
                "sign checkpoints, so no receipt can be proven.",
                hint="Run `manage.py klaviyo_consent_checkpoint --generate-key` and keep the "
                "key in your secrets store; publish its public key (docs/receipts.md).",
                id="klaviyo_consent.E010",
            )
        ]
    return messages


def _check_sending_countries() -> list[checks.CheckMessage]:
    """``SMS_SENDING_COUNTRIES`` (this account's numbers) against ``SMS_COUNTRIES`` (Klaviyo's)."""
    sending = consent_settings.SMS_SENDING_COUNTRIES
    if sending is None:
        return [
            checks.Info(
                "KLAVIYO_CONSENT['SMS_SENDING_COUNTRIES'] is not set: SMS consent is accepted "
                "for every country Klaviyo texts (SMS_COUNTRIES), as if this account had a "
                "sending number in each.",
                hint="List the countries your Klaviyo account has an SMS sending number for; "
                "Klaviyo refuses SMS consent elsewhere (revision 2024-05-15 on) or drops it.",
                id="klaviyo_consent.I001",
            )
        ]
    untexted = sorted(sending - consent_settings.SMS_COUNTRIES)
    if untexted:
        return [
            checks.Warning(
                f"KLAVIYO_CONSENT['SMS_SENDING_COUNTRIES'] names {', '.join(untexted)}, where "
                "Klaviyo does not text (not in SMS_COUNTRIES): SMS consent there is still "
                "refused as 'SMS is not available in …'.",
                hint="A sending number only helps in a country Klaviyo texts; remove them, or "
                "add them to SMS_COUNTRIES if Klaviyo now texts there.",
                id="klaviyo_consent.W003",
            )
        ]
    return []


@checks.register(checks.Tags.database)
def check_table_owner(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list:
    """W010: on PostgreSQL, the app's role owns the consent ledger and so can drop its triggers.

    Runs with ``manage.py check --database default`` (Django runs database checks only then).
    The Merkle proof catches a rewrite anyway; a role that does not own the tables prevents it
    (docs/receipts.md, "Database roles").
    """
    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            # Owning the table, or being a member of the role that owns it, is enough to
            # drop its triggers; the table is looked up as the app's search path resolves it.
            cursor.execute(
                "SELECT pg_has_role(current_user, c.relowner, 'USAGE'), "
                "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
                "FROM pg_class c WHERE c.oid = to_regclass(%s)",
                [connection.ops.quote_name(ConsentEvent._meta.db_table)],
            )
            row = cursor.fetchone()
        if row and (row[0] or row[1]):
            messages.append(
                checks.Warning(
                    f"Database {alias!r}: the app connects as a role that "
                    f"{'is a superuser' if row[1] else 'owns the consent tables'}, so it can "
                    "disable or drop the append-only triggers.",
                    hint="Run migrations as the owner and serve the app as a role with only "
                    "SELECT/INSERT/UPDATE on the tables (docs/receipts.md, 'Database roles'). "
                    "klaviyo_consent_verify still catches any rewrite.",
                    id="klaviyo_consent.W010",
                )
            )
    return messages


#: What the API's docs page (``api/consent/docs/``) loads: drf-spectacular's Swagger UI
#: template and the sidecar's static copy of Swagger UI (no CDN).
DOCS_APPS = ("drf_spectacular", "drf_spectacular_sidecar")


@checks.register("klaviyo_consent", checks.Tags.urls)
def check_api_docs(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W040: the site mounts the API (its docs page resolves) without the apps the page needs."""
    from django.apps import apps
    from django.urls import NoReverseMatch, reverse

    try:
        reverse("klaviyo_consent:docs")
    except NoReverseMatch:
        return []  # the API is not mounted (or not under the app's namespace)
    missing = [name for name in DOCS_APPS if not apps.is_installed(name)]
    if not missing:
        return []
    return [
        checks.Warning(
            f"The API docs page (klaviyo_consent:docs) needs {', '.join(missing)} in "
            "INSTALLED_APPS.",
            hint='INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar"] '
            "(README, Install in your project).",
            id="klaviyo_consent.W040",
        )
    ]
