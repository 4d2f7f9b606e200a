"""The drop-in form's one view: validate, throttle, record through the signup service, go back.

``{% consent_form %}`` posts here from any page; the answer is a redirect back to that page
(POST/redirect/GET), which shows the confirmation, or the form again with its errors, from the
session. Mount with ``path("consent/", include("klaviyo_consent.urls"))``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from klaviyo_consent.api.throttling import PublicSignupThrottle
from klaviyo_consent.evidence import evidence_from
from klaviyo_consent.exceptions import ConsentValidationError
from klaviyo_consent.forms import MESSAGES, ConsentForm, confirmation, refusal
from klaviyo_consent.services.signup import record_signup

logger = logging.getLogger("klaviyo_consent.signup")

#: Session keys: the outcome to confirm, or the submitted form and its errors to show again.
DONE_KEY = "klaviyo_consent_form_done"
FORM_KEY = "klaviyo_consent_form"
#: Fields kept to show the form again (never the CSRF token or the honeypot).
KEPT = ("email", "email_marketing", "country", "phone_number", "sms_marketing")


def page_of(request: HttpRequest) -> str:
    """The page the form was on (``next``), if it is on this site; else ``/``."""
    target = request.POST.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return "/"


@require_POST
def submit(request: HttpRequest) -> HttpResponseRedirect:
    page = page_of(request)
    back = HttpResponseRedirect(f"{page.split('#')[0]}#kc-consent-form")
    if not PublicSignupThrottle().allow_request(request, None):
        return _again(request, back, {"__all__": [MESSAGES["throttled"]]})
    form = ConsentForm(request.POST)
    if form.is_bot:  # thanked whatever it typed, so it learns nothing; nothing recorded
        request.session[DONE_KEY] = "Thank you!"
        return back
    if not form.is_valid():
        return _again(request, back, form.errors.get_json_data())
    evidence = evidence_from(request, page_url=request.build_absolute_uri(page))
    try:
        outcome = record_signup(form.to_signup(evidence=evidence))
    except ConsentValidationError:
        # Input the form accepted and the ledger refused (a DEFAULT_LIST_ID that is no list
        # id, a request that kept losing races): the shopper gets plain words, staff the log.
        logger.exception("The drop-in form could not record a signup")
        return _again(request, back, {"__all__": [MESSAGES["failed"]]})
    if not outcome.recorded:
        return _again(request, back, {"phone_number": [refusal(outcome)]})
    request.session[DONE_KEY] = confirmation(
        outcome,
        email=form.cleaned_data["email"] or None,
        phone=form.phone_display() if form.cleaned_data["sms_marketing"] else None,
    )
    return back


def _again(
    request: HttpRequest, back: HttpResponseRedirect, errors: dict[str, Any]
) -> HttpResponseRedirect:
    """Keep what was typed and why it was refused for the page to show; nothing recorded."""
    messages = {
        field: [e["message"] if isinstance(e, dict) else str(e) for e in found]
        for field, found in errors.items()
    }
    request.session[FORM_KEY] = {
        "data": {name: request.POST.get(name, "") for name in KEPT},
        "errors": messages,
    }
    return back
