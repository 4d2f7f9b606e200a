"""Consent texts: find the exact version a person was shown, or store new words as one."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max

from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.models import ConsentText
from klaviyo_consent.receipts import text_sha256

#: The key new words get when the caller names none (texts sent as free text on the API):
#: ``text-`` and the first 12 hex digits of their SHA-256, so two requests storing different
#: new words at once never contend for one version number of a shared key.
DEFAULT_KEY_PREFIX = "text-"


def resolve_text(
    body: str = "", text_id: int | None = None, *, key: str = "", locale: str = ""
) -> ConsentText | None:
    """The ConsentText for ``text_id``, or the version whose SHA-256 is ``body``'s, else a new one.

    Returns None when neither is given. A ``text_id`` that names no text, or names one whose
    words differ from a ``body`` also given, raises :class:`ConsentValidationError` on
    ``consent_text_id``. New words become the next version of ``key`` (default: a key
    named after their hash, see DEFAULT_KEY_PREFIX).
    """
    if text_id is not None:
        text = ConsentText.objects.filter(pk=text_id).first()
        if text is None:
            raise ConsentValidationError(
                f"No consent text has id {text_id}.", field="consent_text_id"
            )
        if body and text.sha256 != text_sha256(body):
            raise ConsentValidationError(
                "consent_text differs from the words of consent_text_id.", field="consent_text_id"
            )
        return text
    if not body:
        return None
    digest = text_sha256(body)
    key = key or f"{DEFAULT_KEY_PREFIX}{digest[:12]}"
    found = ConsentText.objects.filter(sha256=digest).order_by("id").first()
    if found is not None:
        return found
    return new_version(key, body, locale=locale)


def active_text(key: str, default_body: str) -> ConsentText:
    """The words a form shows now for ``key``: its newest version not retired.

    A key with no such version gets ``default_body`` as its next version, so a drop-in form
    works on a fresh site; staff change the words by adding a version in the admin (and
    retiring the old one).
    """
    found = (
        ConsentText.objects.filter(key=key, retired_at__isnull=True).order_by("-version").first()
    )
    return found if found is not None else new_version(key, default_body)


def new_version(key: str, body: str, *, locale: str = "") -> ConsentText:
    """Store ``body`` as the next version of ``key``; the words of a version never change."""
    digest = text_sha256(body)
    for _ in range(3):
        try:
            with transaction.atomic():
                latest = ConsentText.objects.filter(key=key, locale=locale).aggregate(
                    v=Max("version")
                )["v"]
                return ConsentText.objects.create(
                    key=key, locale=locale, version=(latest or 0) + 1, body=body
                )
        except IntegrityError:  # another request took this version number: look again
            found = ConsentText.objects.filter(key=key, sha256=digest).order_by("id").first()
            if found is not None:
                return found
    raise ConsentValidationError("Could not store the consent text; retry.", field="consent_text")
