"""Input rules every entry point shares: the API, the CSV import, the admin and the signup page.

Each rule raises :class:`~klaviyo_consent.exceptions.ConsentValidationError` naming the field,
so a serializer turns it into a 400 and a command into a ``CommandError`` naming the line.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.phone import phone_numbers_in

#: Klaviyo's ids are letters and digits: list ids like ``Y6nRLr``, profile ids are ULIDs like
#: ``01GSQPBF74KQ5YTDEPP41T1BZH`` (the examples of the OpenAPI spec, revision 2026-07-15, which
#: gives no pattern). 64 is our column's length.
KLAVIYO_ID = re.compile(r"[A-Za-z0-9]{1,64}")

#: RFC 5321 §4.5.3.1.1: a local part has at most 64 octets.
MAX_LOCAL_PART = 64


def clean_klaviyo_id(value: str, *, field: str) -> str:
    """``value`` when it is a Klaviyo id (ASCII letters and digits, 1–64), else raise naming
    ``field``. A list id goes into a Klaviyo URL path sent with the private key: ``/``, ``?``,
    ``..`` or ``%`` there would address another resource."""
    if not isinstance(value, str) or not KLAVIYO_ID.fullmatch(value):
        raise ConsentValidationError(
            f"{value!r} is not a Klaviyo id: letters and digits only, e.g. Y6nRLr.", field=field
        )
    return value


def klaviyo_path(template: str, *ids: str) -> str:
    """``template`` (``"/api/lists/{}"``) with each id URL-quoted as one path segment.

    The ids are validated where they enter the app (:func:`clean_klaviyo_id`); quoting here
    is the second guard, so no id can ever add a path segment or a query to a request that
    carries the private key.
    """
    return template.format(*(quote(str(value), safe="") for value in ids))


def check_deliverable_email(email: str, *, field: str) -> None:
    """Refuse an address Django's ``EmailValidator`` accepts but no marketing mail can reach.

    ``email`` is already normalised and valid per ``EmailValidator``. Refused: a local part
    over 64 characters (RFC 5321 §4.5.3.1.1); a domain literal (``[127.0.0.1]``); a domain
    without a dot (``localhost``, ``intranet``); the ``localhost`` names of RFC 6761
    (``x.localhost``); a domain whose last label is all digits (an IP address written
    without brackets, ``1.2.3.4``).
    """
    local, _, domain = email.rpartition("@")
    if len(local) > MAX_LOCAL_PART:
        raise ConsentValidationError(
            f"The part before @ has at most {MAX_LOCAL_PART} characters; this one has "
            f"{len(local)}.",
            field=field,
        )
    last = domain.rsplit(".", 1)[-1]
    if domain.startswith("[") or "." not in domain or last == "localhost" or last.isdigit():
        raise ConsentValidationError(
            f"{email!r} is not a deliverable address: its domain must be a public domain name "
            "(no localhost, no IP address).",
            field=field,
        )


def strict_bool(value: Any, *, field: str) -> bool:
    """``value`` when it is a JSON boolean, else raise naming ``field``: a legal record of
    consent admits no ``"yes"``, ``"on"`` or ``1``."""
    if value is True or value is False:
        return value
    raise ConsentValidationError("Must be true or false (a JSON boolean).", field=field)


#: An e-mail address inside free text (RFC 5322's addr-spec, loosely: ``local@domain.tld``).
EMAIL_IN_TEXT = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+\.[^\s@<>()\[\],;:\"']+")
#: Why a reason may not name a person (docs/erasure.md: what an erasure keeps).
REASON_NAMES_A_PERSON = (
    "a reason must not contain an email address or phone number: it is kept after erasure"
)


def clean_reason(value: str, *, field: str = "reason") -> str:
    """``value`` when it names no e-mail address and no phone number, else raise naming ``field``.

    A reason (an admin action's, an API call's ``method_detail``) is stored on append-only
    rows that an erasure cannot rewrite, so it must never hold an identifier. Phone numbers
    are found by libphonenumber (:func:`klaviyo_consent.phone.phone_numbers_in`).
    """
    text = value or ""
    if EMAIL_IN_TEXT.search(text) or phone_numbers_in(text):
        raise ConsentValidationError(f"{field}: {REASON_NAMES_A_PERSON}.", field=field)
    return value
