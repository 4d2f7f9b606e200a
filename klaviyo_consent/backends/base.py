"""The backend contract and the request flow every backend shares.

``_request`` is a template method (as in anymail's ``_send``): build headers → ``send`` (the one
hook a transport overrides) → parse → raise for status. Operations are thin and typed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.views.decorators.debug import sensitive_variables

from klaviyo_consent import strict_json
from klaviyo_consent.conf import consent_settings
from klaviyo_consent.exceptions import (
    ConfigurationError,
    KlaviyoAPIError,
    KlaviyoAuthenticationError,
    KlaviyoClientError,
    KlaviyoMalformedResponse,
    KlaviyoRateLimited,
    KlaviyoServerError,
    PushDeferred,
)
from klaviyo_consent.klaviyo import PARTIAL_FAILURE_HEADER
from klaviyo_consent.ratelimit import get_limiter
from klaviyo_consent.validators import klaviyo_path

logger = logging.getLogger("klaviyo_consent.backends")

JSON_API = "application/vnd.api+json"


@dataclass
class RequestBudget:
    """What a push that must not wait may still spend on Klaviyo.

    ``left``: requests (None: no cap). ``deadline``: a ``clock()`` reading (seconds) after which
    nothing more is sent (None: no limit); each request gets only the time left as its timeout,
    so a Klaviyo that hangs costs the signup at most the budget, not ``TIMEOUT`` per request.
    """

    left: int | None = None
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic

    def seconds_left(self) -> float | None:
        """Seconds before the deadline (None: no deadline); never below 0."""
        if self.deadline is None:
            return None
        return max(self.deadline - self.clock(), 0.0)


_no_wait: ContextVar[RequestBudget | None] = ContextVar("klaviyo_consent_no_wait", default=None)


@contextmanager
def no_wait(
    max_requests: int | None = None,
    max_seconds: float | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[RequestBudget]:
    """Within this block no Klaviyo call waits: what would have to wait is not sent.

    A request the rate limiter would hold back, one past ``max_requests``, one after
    ``max_seconds`` (by ``clock``) have passed, or a read whose 429/5xx would be retried after a
    sleep raises :class:`PushDeferred` instead (the caller leaves the work queued); a request
    that goes out may take only the seconds left. Used by the push that runs on commit inside
    a signup, so that a signup's latency never grows with Klaviyo's faults, slowness or rate
    limits.
    """
    deadline = clock() + max_seconds if max_seconds is not None else None
    token = _no_wait.set(RequestBudget(max_requests, deadline, clock))
    try:
        yield _no_wait.get()  # type: ignore[misc]
    finally:
        _no_wait.reset(token)


def waiting_allowed() -> bool:
    """False inside :func:`no_wait`: callers must not sleep for Klaviyo there either."""
    return _no_wait.get() is None


@dataclass(frozen=True)
class JobAccepted:
    """Klaviyo's 202 for a bulk job: queued, not applied. ``partial_failure`` holds the fields
    the ``X-Klaviyo-Partial-Failure`` header names (Klaviyo ignored them, e.g. an invalid
    ``phone_number`` beside a valid email)."""

    partial_failure: tuple[str, ...] = ()

    @classmethod
    def from_response(cls, response: RawResponse) -> JobAccepted:
        header = ""
        for name, value in response.headers.items():
            if name.lower() == PARTIAL_FAILURE_HEADER.lower():
                header = value
        return cls(tuple(part.strip() for part in header.split(",") if part.strip()))


@dataclass
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The body read as strict JSON (None when empty): what the app stores from Klaviyo must
        be storable, so NaN, 1e400, NUL, lone surrogates and duplicate keys are refused
        (:class:`~klaviyo_consent.strict_json.UnsafeJSON`, a ``ValueError``)."""
        if not self.body:
            return None
        return strict_json.loads(self.body, max_bytes=MAX_RESPONSE_BYTES)

    def document(self, operation: str) -> Any:
        """The body as JSON (None when empty); a :class:`KlaviyoMalformedResponse` naming the
        operation when a body is there but is not JSON (HTML, cut short, not UTF-8)."""
        try:
            return self.json()
        except ValueError as exc:
            raise KlaviyoMalformedResponse(
                status=self.status,
                errors=[
                    {
                        "title": "Malformed response",
                        "detail": f"{operation}: the {self.status} answer is not JSON the app "
                        f"can store ({exc} {len(self.body)} bytes)",
                    }
                ],
            ) from None


def _expect(operation: str, document: Any, key: str, kind: type) -> Any:
    """``document[key]`` when the document is an object holding a ``kind`` there, else a
    :class:`KlaviyoMalformedResponse` naming the operation and what was missing."""
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind):
        raise KlaviyoMalformedResponse(
            errors=[
                {
                    "title": "Malformed response",
                    "detail": f"{operation}: the answer has no {key!r} {kind.__name__}",
                }
            ]
        )
    return value


#: The largest Klaviyo answer read, in bytes (a page of 100 profiles is well under 1 MiB).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Characters PostgreSQL text refuses (NUL) or a reason should not hold, in quoted error bodies.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

#: The Retry-After range honoured, in seconds: a larger value waits the maximum; a smaller one
#: (0, negative) the minimum, so one sync cannot spend every attempt in a hot loop.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 3600.0


def _retry_after(value: Any) -> float:
    """Retry-After as seconds within [MIN_RETRY_AFTER, MAX_RETRY_AFTER]; unreadable → 1 s."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 1.0
    if math.isnan(seconds):
        return 1.0
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def _errors(value: Any) -> list[dict[str, Any]]:
    """Klaviyo's ``errors[]`` kept to what the app reads: objects, with an object ``source`` of
    strings (``pointer``, ``parameter``).

    A list of anything else (strings, numbers, a ``source`` that is a string) would break the
    code that reads the pointers and quotes the details.
    """
    if not isinstance(value, list):
        return []
    errors = []
    for error in value:
        if not isinstance(error, dict):
            continue
        source = error.get("source")
        source = source if isinstance(source, dict) else {}
        source = {k: v for k, v in source.items() if isinstance(v, str)}
        errors.append({**error, "source": source})
    return errors


class RequestHeaders(dict):
    """Request headers whose repr hides the Authorization value.

    The DEBUG=True error page prints every frame's local variables (``sensitive_variables``
    only works with DEBUG off), so the headers, a local of every request frame, must never
    print the key.
    """

    def __repr__(self) -> str:
        return repr(
            {k: ("********" if k.lower() == "authorization" else v) for k, v in self.items()}
        )

    __str__ = __repr__


class BaseKlaviyoBackend:
    """Speaks Klaviyo's JSON:API; subclasses only move bytes (``send``)."""

    #: GETs are safe to repeat: retry them this many times on 429/5xx/connection errors.
    read_retries = 4
    #: Profiles a subscribe request may carry (None: Klaviyo's bulk job size).
    max_profiles_per_subscribe: int | None = None
    #: Why this backend cannot read Klaviyo back (None: it can). Pushed consent then keeps
    #: ``pushed`` with this reason instead of waiting for a read-back.
    cannot_read: str | None = None

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_url: str | None = None,
        revision: str | None = None,
        timeout: float | None = None,
        limiter: Any = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else consent_settings.API_KEY
        self.api_url = (api_url or consent_settings.API_URL).rstrip("/")
        self.revision = revision or consent_settings.REVISION
        self.timeout = timeout if timeout is not None else consent_settings.TIMEOUT
        if limiter is None:
            limiter = get_limiter()
        self.limiter = limiter

    def __repr__(self) -> str:
        # Never the key: a repr lands in logs, tracebacks and the DEBUG error page.
        key = "set" if self.api_key else "unset"
        return f"<{type(self).__name__} {self.api_url} revision={self.revision} api_key={key}>"

    def request_timeout(self) -> float:
        """Seconds one request may take: ``TIMEOUT``, or less inside :func:`no_wait` with a
        time budget (only what is left of it)."""
        budget = _no_wait.get()
        left = budget.seconds_left() if budget is not None else None
        return self.timeout if left is None else min(self.timeout, left)

    # -- the one transport hook ------------------------------------------------------------
    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
    ) -> RawResponse:
        raise NotImplementedError("subclasses of BaseKlaviyoBackend must provide a send() method")

    def close(self) -> None:
        """Release connections; the base holds none."""

    # -- flow ------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        """The request headers (a :class:`RequestHeaders`: its repr hides the key)."""
        if not self.api_key:
            raise ConfigurationError(
                'KLAVIYO_CONSENT["API_KEY"] is not set; the HTTP backend needs a private key.'
            )
        return RequestHeaders(
            {
                "Authorization": f"Klaviyo-API-Key {self.api_key}",
                "revision": self.revision,
                "Accept": JSON_API,
                "Content-Type": JSON_API,
            }
        )

    def _url(self, path: str) -> str:
        """The absolute URL of ``path`` (``/api/...``) or of a ``links.next`` URL Klaviyo gave.

        A full URL is followed only on the configured ``API_URL`` origin: a next link naming
        another host (a tampered or misrouted answer) would receive the private key.
        """
        if not path.startswith("/"):
            base = urlsplit(self.api_url)
            link = urlsplit(path)
            if (link.scheme, link.netloc) != (base.scheme, base.netloc):
                raise KlaviyoMalformedResponse(
                    errors=[
                        {
                            "title": "Malformed response",
                            "detail": "a pagination link points outside API_URL; not followed",
                        }
                    ]
                )
            return path
        return f"{self.api_url}{path}"

    @sensitive_variables("headers")
    def _request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> Any:
        url = self._url(path)
        body = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else None
        budget = _no_wait.get()
        if budget is not None:
            if budget.left is not None and budget.left <= 0:
                raise PushDeferred(f"{operation}: this push's request budget is spent")
            if budget.seconds_left() == 0.0:
                raise PushDeferred(f"{operation}: this push's time budget is spent")
            if self.limiter is not None and not self.limiter.acquire_now(operation):
                raise PushDeferred(f"{operation}: the rate limit would make this push wait")
            if budget.left is not None:
                budget.left -= 1
        elif self.limiter is not None:
            self.limiter.acquire(operation)
        headers = self.headers()
        response = self.send(method, url, headers=headers, params=params, body=body)
        self.raise_for_status(response)
        document = response.document(operation)  # a body that is not JSON: malformed
        return response if raw else document

    def _read(self, operation: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET with retries: reads are idempotent, so 429/5xx/timeouts are waited out here."""
        for attempt in range(self.read_retries + 1):
            try:
                return self._request(operation, "GET", path, params=params)
            except KlaviyoAPIError as exc:
                if not exc.retryable or attempt == self.read_retries or _no_wait.get():
                    raise
                # Retry-After (0 included) is a floor under the growing backoff, never a
                # replacement: a run of 429s still backs off.
                wait = float(min(2**attempt, 30))
                if exc.retry_after is not None:
                    wait = max(wait, exc.retry_after)
                logger.info("Klaviyo %s: %s; retrying in %.1fs", operation, exc, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    @staticmethod
    def raise_for_status(response: RawResponse) -> None:
        if response.status < 400:
            return
        try:
            data = response.json() or {}
            errors = _errors(data.get("errors") if isinstance(data, dict) else None)
        except ValueError:
            errors = []
        if not errors:
            text = _CONTROL.sub("\ufffd", response.body[:300].decode("utf-8", "replace"))
            errors = [{"status": response.status, "title": "HTTP error", "detail": text}]
        retry_after = None
        if response.status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After", "1"))
            raise KlaviyoRateLimited(status=429, errors=errors, retry_after=retry_after)
        if response.status >= 500:
            raise KlaviyoServerError(status=response.status, errors=errors)
        if response.status in (401, 403):
            raise KlaviyoAuthenticationError(status=response.status, errors=errors)
        raise KlaviyoClientError(status=response.status, errors=errors)

    # -- operations ------------------------------------------------------------------------
    def bulk_subscribe_profiles(self, payload: dict[str, Any]) -> JobAccepted:
        """POST a subscribe job (≤ 1000 profiles); Klaviyo answers 202, not yet applied."""
        response = self._request(
            "bulk_subscribe_profiles",
            "POST",
            "/api/profile-subscription-bulk-create-jobs",
            payload=payload,
            raw=True,
        )
        return JobAccepted.from_response(response)

    def bulk_unsubscribe_profiles(self, payload: dict[str, Any]) -> JobAccepted:
        """POST an unsubscribe job (≤ 100 profiles)."""
        response = self._request(
            "bulk_unsubscribe_profiles",
            "POST",
            "/api/profile-subscription-bulk-delete-jobs",
            payload=payload,
            raw=True,
        )
        return JobAccepted.from_response(response)

    def bulk_suppress_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST an email suppression job (≤ 100 emails); returns the job resource."""
        document = self._request(
            "bulk_suppress_profiles",
            "POST",
            "/api/profile-suppression-bulk-create-jobs",
            payload=payload,
        )
        _expect("bulk_suppress_profiles", document, "data", dict)
        return document

    def create_or_update_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``/api/profile-import`` (Create or Update Profile, 75/s, 750/m); returns
        Klaviyo's document, ``{"data": <profile resource>}`` (201 created, 200 updated)."""
        document = self._request(
            "create_or_update_profile", "POST", "/api/profile-import", payload=payload
        )
        _expect("create_or_update_profile", document, "data", dict)
        return document

    def request_profile_deletion(self, payload: dict[str, Any]) -> None:
        """POST ``/api/data-privacy-deletion-jobs`` (Request Profile Deletion, 3/s, 60/m):
        Klaviyo answers 202 and deletes every matching profile asynchronously."""
        self._request(
            "request_profile_deletion",
            "POST",
            "/api/data-privacy-deletion-jobs",
            payload=payload,
            raw=True,
        )

    def _page(self, operation: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        """One page of a collection: an object with a ``data`` list of resource objects."""
        page = self._read(operation, path, params)
        rows = _expect(operation, page, "data", list)
        if not all(isinstance(row, dict) for row in rows):
            raise KlaviyoMalformedResponse(
                errors=[
                    {
                        "title": "Malformed response",
                        "detail": f"{operation}: a row of 'data' is not a resource object",
                    }
                ]
            )
        links = page.get("links")
        if links is not None and not isinstance(links, dict):
            _expect(operation, {}, "links", dict)
        return page

    def bulk_unsuppress_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST an email unsuppression job (≤ 100 emails; lifts only USER_SUPPRESSED)."""
        return self._request(
            "bulk_unsuppress_profiles",
            "POST",
            "/api/profile-suppression-bulk-delete-jobs",
            payload=payload,
        )

    def get_profiles(self, params: Mapping[str, str]) -> dict[str, Any]:
        """One page of ``GET /api/profiles``."""
        return self._page("get_profiles", "/api/profiles", params)

    def iter_profiles(self, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Every page, following ``links.next`` (its cursor is opaque)."""
        page = self.get_profiles(params)
        while True:
            yield page
            next_url = (page.get("links") or {}).get("next")
            if not next_url:
                return
            page = self._page("get_profiles", next_url)

    def get_list(self, list_id: str, *, profile_count: bool = False) -> dict[str, Any]:
        """``GET /api/lists/{id}``; with ``profile_count`` its member count too, which Klaviyo
        limits to 1/s and 15/m (spec), counted under its own name by the limiter."""
        operation, params = "get_list", None
        if profile_count:
            operation = "get_list+profile_count"
            params = {"additional-fields[list]": "profile_count"}
        document = self._read(operation, klaviyo_path("/api/lists/{}", list_id), params)
        _expect("get_list", document, "data", dict)
        return document

    # -- list membership (spec: bulk_import_profiles, add_/remove_profiles_(to/from)_list) --
    def bulk_import_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST a bulk profile import job (≤ 10,000 profiles; 10/s, 150/m); returns the job
        resource document (202: queued, not applied)."""
        document = self._request(
            "bulk_import_profiles", "POST", "/api/profile-bulk-import-jobs", payload=payload
        )
        _expect("bulk_import_profiles", document, "data", dict)
        return document

    def add_profiles_to_list(self, list_id: str, payload: dict[str, Any]) -> None:
        """POST ≤ 1000 Klaviyo profile ids to the list (204; 10/s, 150/m)."""
        path = klaviyo_path("/api/lists/{}/relationships/profiles", list_id)
        self._request("add_profiles_to_list", "POST", path, payload=payload)

    def remove_profiles_from_list(self, list_id: str, payload: dict[str, Any]) -> None:
        """DELETE ≤ 1000 Klaviyo profile ids from the list (204; consent untouched)."""
        path = klaviyo_path("/api/lists/{}/relationships/profiles", list_id)
        self._request("remove_profiles_from_list", "DELETE", path, payload=payload)

    def get_profile_ids_for_list(self, list_id: str, params: Mapping[str, str]) -> list[str]:
        """Every Klaviyo profile id on the list matching ``params`` (its ``filter``)."""
        operation = "get_profile_ids_for_list"
        page = self._page(
            operation, klaviyo_path("/api/lists/{}/relationships/profiles", list_id), params
        )
        ids: list[str] = []
        while True:
            ids += [str(row.get("id")) for row in page["data"] if row.get("id")]
            next_url = (page.get("links") or {}).get("next")
            if not next_url:
                return ids
            page = self._page(operation, next_url)

    def get_lists(self) -> Iterator[dict[str, Any]]:
        page = self._page("get_lists", "/api/lists")
        while True:
            yield from page["data"]
            next_url = (page.get("links") or {}).get("next")
            if not next_url:
                return
            page = self._page("get_lists", next_url)
