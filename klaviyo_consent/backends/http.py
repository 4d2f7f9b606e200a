"""The real backend: Klaviyo over HTTPS with a ``requests.Session`` (keep-alive, pooled)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import requests
from django.views.decorators.debug import sensitive_variables

from klaviyo_consent.backends.base import BaseKlaviyoBackend, RawResponse
from klaviyo_consent.exceptions import ConfigurationError, KlaviyoConnectionError


class KlaviyoBackend(BaseKlaviyoBackend):
    """``KLAVIYO_CONSENT["BACKEND"] = "klaviyo_consent.backends.http.KlaviyoBackend"``."""

    def __init__(self, *, session: requests.Session | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session or requests.Session()

    @sensitive_variables("headers")
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
        timeout = self.request_timeout()
        try:
            response = self.session.request(
                method, url, headers=headers, params=params, data=body, timeout=timeout
            )
        # ``from None`` throughout: the chained traceback's frames inside requests hold the
        # prepared headers (the key) as local variables, which the DEBUG error page prints.
        except requests.Timeout:
            raise KlaviyoConnectionError(
                errors=[{"title": "Timeout", "detail": f"no answer within {timeout:g}s"}]
            ) from None
        except requests.ConnectionError as exc:
            raise KlaviyoConnectionError(
                errors=[{"title": "Connection error", "detail": type(exc).__name__}]
            ) from None
        except requests.exceptions.InvalidHeader:
            # requests quotes the header value, i.e. the key: never pass its message on.
            raise ConfigurationError(
                'A request header is not valid: KLAVIYO_CONSENT["API_KEY"] or "REVISION" holds '
                "whitespace or a control character (see system check klaviyo_consent.E004)."
            ) from None
        except (requests.RequestException, ValueError) as exc:
            raise KlaviyoConnectionError(
                errors=[{"title": "Request error", "detail": type(exc).__name__}]
            ) from None
        return RawResponse(
            status=response.status_code,
            headers=response.headers,
            body=response.content,
            url=response.url,
            elapsed=time.perf_counter() - started,
        )

    def close(self) -> None:
        self.session.close()
