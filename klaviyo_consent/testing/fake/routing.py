"""The HTTP entry point: routes, authentication, revision, rate limits and injected faults."""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from klaviyo_consent.testing.fake.errors import _Problem, _problem
from klaviyo_consent.testing.fake.ratelimits import RateLimited
from klaviyo_consent.testing.fake.records import (
    _REVISION_RE,
    DEFAULT_BASE_URL,
    FAULT_CHOICES,
    FakeResponse,
    InjectedFault,
    LoggedRequest,
    _Call,
)
from klaviyo_consent.testing.fake.state import AccountState


class Routing(RateLimited, AccountState):
    """One HTTP request in, Klaviyo's answer out: route, authenticate, throttle, inject faults."""

    # --- faults ----------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
        kind: str | None = None,
        applies: bool | None = None,
    ) -> None:
        """Replace the next ``count`` answers with a failure; the job is not applied.

        ``kind="connection"`` / ``"timeout"`` loses the answer instead (the requests adapter
        raises ``requests.ConnectionError`` / ``requests.Timeout``). A timeout on a POST may
        still apply the job, as when Klaviyo got the request but the answer was lost:
        ``applies`` forces that, None leaves it to ``timeout_applies`` (then a coin toss).
        """
        if kind not in (None, "http", "connection", "timeout"):
            raise ValueError("kind must be None, 'http', 'connection' or 'timeout'")
        with self._lock:
            fault = InjectedFault(
                status, retry_after, errors, None if kind == "http" else kind, applies
            )
            self._faults.extend([fault] * count)

    def _next_fault(self) -> InjectedFault | None:
        if self._faults:
            return self._faults.pop(0)
        if self.fault_rate and self._fault_rng.random() < self.fault_rate:
            choice = self._fault_rng.choice(FAULT_CHOICES)
            if isinstance(choice, str):
                return InjectedFault(kind=choice)
            return InjectedFault(status=choice, retry_after=1 if choice == 429 else None)
        return None

    # --- HTTP entry point ------------------------------------------------------------------

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FakeResponse:
        """Answer one HTTP request as Klaviyo would (``url`` may be absolute or just a path)."""
        method = method.upper()
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}" if parts.netloc else DEFAULT_BASE_URL
        raw_path = parts.path or "/"
        path = unquote(raw_path).rstrip("/") or "/"
        query = parse_qsl(parts.query, keep_blank_values=True)
        call = _Call(
            method=method,
            path=path,
            url=f"{base}{raw_path}" + (f"?{parts.query}" if parts.query else ""),
            base=base,
            query=query,
            params=dict(query),
            body=body,
            args={},
        )
        lowered = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            answer = self._dispatch(call, lowered)
            self.request_log.append(
                LoggedRequest(method, path, None if answer.fault else answer.status)
            )
            return answer

    def _dispatch(self, call: _Call, headers: dict[str, str]) -> FakeResponse:
        route = _route(call.path)
        if route is None:
            return self._error_response(_problem(404, f"The path {call.path} could not be found."))
        operations, args = route
        operation = operations.get(call.method)
        if operation is None:
            allowed = ", ".join(sorted(operations))
            problem = _problem(405, f'Method "{call.method}" not allowed.')
            problem.headers["Allow"] = allowed
            return self._error_response(problem)
        call.args = args
        self.counts[operation] += 1
        fault = self._next_fault()
        if fault is not None:
            return self._inject(fault, operation, call, headers)
        return self._serve(operation, call, headers)

    def _inject(
        self, fault: InjectedFault, operation: str, call: _Call, headers: dict[str, str]
    ) -> FakeResponse:
        if fault.kind in ("connection", "timeout"):
            self.injected_faults[fault.kind] += 1
            if fault.kind == "timeout" and call.method == "POST":
                applies = fault.applies
                if applies is None:
                    applies = self.timeout_applies and self._fault_rng.random() < 0.5
                if applies:
                    self._serve(operation, call, headers)
            return FakeResponse(0, {}, b"", fault=fault.kind)
        self.injected_faults[str(fault.status)] += 1
        if fault.errors is not None:
            answer = self._json_response(fault.status, {"errors": fault.errors})
        else:
            answer = self._error_response(_problem(fault.status))
        retry_after = fault.retry_after
        if retry_after is None and fault.status == 429:
            retry_after = 1
        if retry_after is not None:
            answer.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return answer

    def _serve(self, operation: str, call: _Call, headers: dict[str, str]) -> FakeResponse:
        try:
            if operation in PUBLIC_KEY_OPERATIONS:
                self._authenticate_public(call)  # type: ignore[attr-defined]
            else:
                self._authenticate(headers)
            revision = headers.get("revision")
            if not revision or not _REVISION_RE.match(revision):
                raise _problem(
                    400,
                    "The revision header is missing or not in the format YYYY-MM-DD[.suffix].",
                    parameter="revision",
                )
            limit_headers = self._take_quota(_quota_name(operation, call))
        except _Problem as problem:
            return self._error_response(problem)
        call.revision = revision
        try:
            answer = getattr(self, f"_op_{operation}")(call)
        except _Problem as problem:
            answer = self._error_response(problem)
        answer.headers.update(limit_headers)
        return answer

    def _authenticate(self, headers: dict[str, str]) -> None:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme != "Klaviyo-API-Key" or not key:
            raise _problem(
                401, "Missing or invalid authorization scheme. Please use Klaviyo-API-Key."
            )
        if self.api_key is not None and not hmac.compare_digest(
            key.encode(), self.api_key.encode()
        ):
            raise _problem(
                401,
                "Incorrect authentication credentials.",
                code="authentication_failed",
                title="Incorrect authentication credentials.",
            )


_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (
        re.compile(r"^/api/profile-subscription-bulk-create-jobs$"),
        {"POST": "bulk_subscribe_profiles"},
    ),
    (
        re.compile(r"^/api/profile-subscription-bulk-delete-jobs$"),
        {"POST": "bulk_unsubscribe_profiles"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-create-jobs$"),
        {"POST": "bulk_suppress_profiles", "GET": "get_bulk_suppress_profiles_jobs"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-create-jobs/(?P<id>[^/]+)$"),
        {"GET": "get_bulk_suppress_profiles_job"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-delete-jobs$"),
        {"POST": "bulk_unsuppress_profiles", "GET": "get_bulk_unsuppress_profiles_jobs"},
    ),
    (
        re.compile(r"^/api/profile-suppression-bulk-delete-jobs/(?P<id>[^/]+)$"),
        {"GET": "get_bulk_unsuppress_profiles_job"},
    ),
    (re.compile(r"^/api/data-privacy-deletion-jobs$"), {"POST": "request_profile_deletion"}),
    (re.compile(r"^/api/profiles$"), {"GET": "get_profiles"}),
    (re.compile(r"^/api/profile-import$"), {"POST": "create_or_update_profile"}),
    (re.compile(r"^/api/profiles/(?P<id>[^/]+)$"), {"GET": "get_profile"}),
    (re.compile(r"^/api/lists$"), {"GET": "get_lists"}),
    (re.compile(r"^/api/lists/(?P<id>[^/]+)$"), {"GET": "get_list"}),
    (
        re.compile(r"^/api/lists/(?P<id>[^/]+)/relationships/profiles$"),
        {
            "GET": "get_profile_ids_for_list",
            "POST": "add_profiles_to_list",
            "DELETE": "remove_profiles_from_list",
        },
    ),
    (re.compile(r"^/api/profile-bulk-import-jobs$"), {"POST": "bulk_import_profiles"}),
    (
        re.compile(r"^/api/profile-bulk-import-jobs/(?P<id>[^/]+)$"),
        {"GET": "get_bulk_import_profiles_job"},
    ),
    (re.compile(r"^/client/subscriptions$"), {"POST": "create_client_subscription"}),
]

#: Operations authenticated by the public key (``company_id``), not a private key.
PUBLIC_KEY_OPERATIONS = frozenset({"create_client_subscription"})


def _quota_name(operation: str, call: _Call) -> str:
    """The rate-limit counter a request spends: ``get_list`` asking for ``profile_count`` has
    its own, lower limits (klaviyo.ADDITIONAL_FIELD_RATE_LIMITS)."""
    if operation == "get_list" and "profile_count" in call.params.get(
        "additional-fields[list]", ""
    ):
        return "get_list+profile_count"
    return operation


def _route(path: str) -> tuple[dict[str, str], dict[str, str]] | None:
    for pattern, operations in _ROUTES:
        match = pattern.match(path)
        if match:
            return operations, match.groupdict()
    return None
