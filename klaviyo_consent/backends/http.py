"""The real backend: Klaviyo over HTTPS with a ``requests.Session`` (keep-alive, pooled)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import requests

from klaviyo_consent.backends.base import BaseKlaviyoBackend, RawResponse
from klaviyo_consent.exceptions import KlaviyoConnectionError


class KlaviyoBackend(BaseKlaviyoBackend):
    """``KLAVIYO_CONSENT["BACKEND"] = "klaviyo_consent.backends.http.KlaviyoBackend"``."""

    def __init__(self, *, session: requests.Session | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session or requests.Session()

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
    ) -> RawResponse:
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, url, headers=headers, params=params, data=body, timeout=self.timeout
            )
        except requests.Timeout as exc:
            raise KlaviyoConnectionError(
                errors=[{"title": "Timeout", "detail": f"no answer within {self.timeout}s"}]
            ) from exc
        except requests.ConnectionError as exc:
            raise KlaviyoConnectionError(
                errors=[{"title": "Connection error", "detail": type(exc).__name__}]
            ) from exc
        return RawResponse(
            status=response.status_code,
            headers=response.headers,
            body=response.content,
            url=response.url,
            elapsed=time.perf_counter() - started,
        )

    def close(self) -> None:
        self.session.close()
