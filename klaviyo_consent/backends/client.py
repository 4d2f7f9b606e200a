"""The backend for sites that hold only a public key (site id): Create Client Subscription.

``KLAVIYO_CONSENT = {"BACKEND": "klaviyo_consent.backends.client.ClientBackend",
"PUBLIC_API_KEY": "AbC123", "DEFAULT_LIST_ID": "Y6nRLr"}``.

Klaviyo's one public-key consent call is ``POST /client/subscriptions?company_id=`` (spec
revision 2026-07-15, ``create_client_subscription``): one profile a request, 350/s and 750/m,
``relationships.list`` required, 202 with no body. So this backend sends each profile of a
subscribe job as its own request (the pusher builds jobs of one, ``max_profiles_per_subscribe``)
and can do nothing else: no withdrawal, suppression, list membership or historical import
(each refused per profile with :data:`PUBLIC_KEY_ONLY`, so the events fail loudly), and no read
(``cannot_read``: pushed consent stays ``pushed`` with that reason). System check W014 says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from klaviyo_consent.backends.base import JSON_API, JobAccepted, RequestHeaders
from klaviyo_consent.backends.http import KlaviyoBackend
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import ConfigurationError, KlaviyoClientError
from klaviyo_consent.klaviyo import MAX_CLIENT_SUBSCRIPTION_PROFILES

#: The reason a pushed consent keeps under this backend (issue 13's words).
CANNOT_READ_REASON = "no private key: Klaviyo's state cannot be read"

#: Why an operation other than a subscribe is refused under this backend.
PUBLIC_KEY_ONLY = (
    "no private key: Klaviyo has no public-key endpoint for this ({operation}); "
    'set KLAVIYO_CONSENT["API_KEY"] and the http backend'
)
_ENTRIES = "/data/attributes/profiles/data"


def _each_entry(payload: Mapping[str, Any], operation: str) -> KlaviyoClientError:
    """A refusal naming every profile of a job, so the pusher fails each one with the reason."""
    entries = (((payload.get("data") or {}).get("attributes") or {}).get("profiles") or {}).get(
        "data"
    ) or [None]
    detail = PUBLIC_KEY_ONLY.format(operation=operation)
    return KlaviyoClientError(
        status=400,
        errors=[
            {
                "title": "Not possible with a public key",
                "detail": detail,
                "source": {"pointer": f"{_ENTRIES}/{index}"},
            }
            for index in range(len(entries))
        ],
    )


class ClientBackend(KlaviyoBackend):
    """Pushes consent with Create Client Subscription; reads nothing back."""

    #: One profile per Create Client Subscription request (spec).
    max_profiles_per_subscribe = MAX_CLIENT_SUBSCRIPTION_PROFILES
    cannot_read = CANNOT_READ_REASON

    def __init__(self, *, public_api_key: str | None = None, **kwargs: Any) -> None:
        kwargs["api_key"] = ""  # never send a private key to a /client/ endpoint
        super().__init__(**kwargs)
        self.public_api_key = (
            public_api_key if public_api_key is not None else consent_settings.PUBLIC_API_KEY
        )

    def __repr__(self) -> str:
        key = "set" if self.public_api_key else "unset"
        return (
            f"<{type(self).__name__} {self.api_url} revision={self.revision} public_api_key={key}>"
        )

    def headers(self) -> dict[str, str]:
        """No Authorization: the public key travels as ``company_id`` (spec)."""
        return RequestHeaders(
            {"revision": self.revision, "Accept": JSON_API, "Content-Type": JSON_API}
        )

    def create_client_subscription(self, payload: dict[str, Any]) -> None:
        """``POST /client/subscriptions?company_id=<PUBLIC_API_KEY>`` (one profile; 202)."""
        if not self.public_api_key:
            raise ConfigurationError(
                'KLAVIYO_CONSENT["PUBLIC_API_KEY"] is not set; the client backend needs the '
                "site's public key (company id)."
            )
        self._request(
            "create_client_subscription",
            "POST",
            "/client/subscriptions",
            params={"company_id": self.public_api_key},
            payload=payload,
        )

    def bulk_subscribe_profiles(self, payload: dict[str, Any]) -> JobAccepted:
        """A subscribe job sent profile by profile as client subscriptions.

        The pusher sends jobs of one (``max_profiles_per_subscribe``); a refusal's pointer is
        moved from ``/data/attributes/profile/data`` to the job's entry, so the pusher fails
        the part Klaviyo named, as for a bulk job.
        """
        data = payload["data"]
        attributes = data["attributes"]
        entries = attributes["profiles"]["data"]
        if attributes.get("historical_import"):
            raise _each_entry(payload, "historical_import")
        list_data = ((data.get("relationships") or {}).get("list") or {}).get("data") or {}
        if not list_data.get("id"):
            # Names no profile: the pusher keeps the consents and retries after the fix.
            raise KlaviyoClientError(
                status=400,
                errors=[
                    {
                        "title": "A list is required",
                        "detail": "Create Client Subscription requires a list: set "
                        'KLAVIYO_CONSENT["DEFAULT_LIST_ID"] or give list_id',
                        "source": {"pointer": "/data/relationships/list"},
                    }
                ],
            )
        for index, entry in enumerate(entries):
            body = client_subscription(
                entry, list_id=list_data["id"], custom_source=attributes.get("custom_source")
            )
            try:
                self.create_client_subscription(body)
            except KlaviyoClientError as error:
                error.errors = [_entry_pointer(err, index) for err in error.errors]
                raise
        return JobAccepted()

    def bulk_unsubscribe_profiles(self, payload: dict[str, Any]) -> JobAccepted:
        raise _each_entry(payload, "bulk_unsubscribe_profiles")

    def bulk_suppress_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise _each_entry(payload, "bulk_suppress_profiles")

    def bulk_unsuppress_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise _each_entry(payload, "bulk_unsuppress_profiles")

    def _private(self, operation: str) -> ConfigurationError:
        return ConfigurationError(PUBLIC_KEY_ONLY.format(operation=operation))

    def create_or_update_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise _each_entry(payload, "create_or_update_profile")

    def get_profiles(self, params: Mapping[str, str]) -> dict[str, Any]:
        raise self._private("get_profiles")

    def get_list(self, list_id: str, *, profile_count: bool = False) -> dict[str, Any]:
        raise self._private("get_list")

    def get_lists(self) -> Any:
        raise self._private("get_lists")

    def bulk_import_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise self._private("bulk_import_profiles")

    def add_profiles_to_list(self, list_id: str, payload: dict[str, Any]) -> None:
        raise self._private("add_profiles_to_list")

    def remove_profiles_from_list(self, list_id: str, payload: dict[str, Any]) -> None:
        raise self._private("remove_profiles_from_list")

    def get_profile_ids_for_list(self, list_id: str, params: Mapping[str, str]) -> list[str]:
        raise self._private("get_profile_ids_for_list")


def _entry_pointer(error: dict[str, Any], index: int) -> dict[str, Any]:
    source = error.get("source") if isinstance(error.get("source"), dict) else {}
    pointer = source.get("pointer") or ""
    prefix = "/data/attributes/profile/data"
    if pointer.startswith(prefix):
        source = {**source, "pointer": f"{_ENTRIES}/{index}{pointer[len(prefix) :]}"}
    return {**error, "source": source}


def client_subscription(
    entry: dict[str, Any], *, list_id: str, custom_source: str | None = None
) -> dict[str, Any]:
    """``POST /client/subscriptions``'s body for one profile entry of a subscribe job.

    The entry's identifiers and ``subscriptions`` carry over; a lookup ``id`` does not (a
    public key cannot know it). ``relationships.list`` is required by this endpoint (spec,
    ``OnsiteSubscriptionCreateQuery``).
    """
    attributes = dict(entry.get("attributes") or {})
    body: dict[str, Any] = {
        "type": "subscription",
        "attributes": {"profile": {"data": {"type": "profile", "attributes": attributes}}},
        "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
    }
    if custom_source:
        body["attributes"]["custom_source"] = custom_source
    return {"data": body}
