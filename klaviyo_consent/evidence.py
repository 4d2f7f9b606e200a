"""The evidence a request carries (IP address, user agent, page), cleaned before it is stored.

Headers and ``REMOTE_ADDR`` come from the client or a proxy: a NUL byte, control characters or
an address that is not an IP must never reach the ledger (PostgreSQL refuses NUL and non-IP
``inet`` values with a 500; SQLite would store the garbage as proof).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from klaviyo_consent.services.ledger import Evidence

#: Longest user agent or page URL kept, in characters; the rest is cut and marked with "…".
MAX_HEADER_LENGTH = 2048
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def clean_ip(value: Any) -> str | None:
    """``value`` as a canonical IPv4/IPv6 address (no zone id), or None when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return str(address)


def clean_header(value: Any) -> str:
    """A header as storable text: control characters (NUL included) become U+FFFD, so the
    record shows that something was there; longer than MAX_HEADER_LENGTH is cut."""
    if not isinstance(value, str):
        return ""
    text = _CONTROL.sub("\ufffd", value)
    if len(text) > MAX_HEADER_LENGTH:
        text = text[: MAX_HEADER_LENGTH - 1] + "…"
    return text


def evidence_from(request: Any, *, page_url: str | None = None) -> Evidence:
    """The request's evidence: REMOTE_ADDR, User-Agent and (unless given) the Referer, cleaned.

    ``request`` is a Django ``HttpRequest`` or DRF ``Request``; only its ``META`` is read.
    """
    meta = request.META
    return Evidence(
        ip_address=clean_ip(meta.get("REMOTE_ADDR")),
        user_agent=clean_header(meta.get("HTTP_USER_AGENT", "")),
        page_url=clean_header(meta.get("HTTP_REFERER", "") if page_url is None else page_url),
    )
