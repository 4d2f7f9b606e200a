"""Does Klaviyo's mirrored state show the consent took effect? Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from klaviyo_consent.choices import Channel, Consent, DeliveryStatus, OptInProcess
from klaviyo_consent.phone import sms_unsupported_reason

#: Suppressions a subscribe job cannot lift (it lifts UNSUBSCRIBE, SPAM_REPORT, USER_SUPPRESSED).
STICKY_SUPPRESSIONS = frozenset({"HARD_BOUNCE", "INVALID_EMAIL"})


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str = ""

    @property
    def decided(self) -> bool:
        return self.status != DeliveryStatus.PUSHED


def _suppression_reason(leaf: dict[str, Any]) -> str | None:
    reasons = [s.get("reason") for s in leaf.get("suppression") or [] if s.get("reason")]
    if reasons:
        return f"profile is suppressed ({', '.join(reasons)})"
    return None


def judge(
    *,
    channel: str,
    consent: str,
    historical_import: bool,
    phone_number: str,
    leaf: dict[str, Any],
    profile_found: bool,
    opt_in_process: str | None,
    last_try: bool,
) -> Verdict:
    """The verdict for one pushed event from the mirrored ``subscriptions.<channel>.<purpose>``.

    ``last_try`` says whether Klaviyo has had its last chance; before that, "not yet" stays
    ``pushed`` (Klaviyo applies jobs asynchronously), after it becomes ``not_applied``.
    """
    shown = leaf.get("consent")
    if consent == Consent.SUBSCRIBED:
        if shown == Consent.SUBSCRIBED:
            return Verdict(DeliveryStatus.APPLIED)
        if channel == Channel.SMS and phone_number:
            unsupported = sms_unsupported_reason(phone_number, published_too=True)
            if unsupported:
                return Verdict(DeliveryStatus.NOT_APPLIED, unsupported)
        if channel == Channel.EMAIL:
            suppressed = _suppression_reason(leaf)
            if suppressed and any(
                s.get("reason") in STICKY_SUPPRESSIONS for s in leaf.get("suppression") or []
            ):
                return Verdict(DeliveryStatus.NOT_APPLIED, suppressed)
        if opt_in_process == OptInProcess.DOUBLE_OPT_IN and not historical_import:
            return Verdict(
                DeliveryStatus.PENDING_CONFIRMATION,
                "double opt-in list: waiting for the person to confirm",
            )
        if not last_try:
            return Verdict(DeliveryStatus.PUSHED)
        if not profile_found:
            return Verdict(DeliveryStatus.NOT_APPLIED, "unknown: Klaviyo has no such profile")
        if channel == Channel.EMAIL:
            suppressed = _suppression_reason(leaf)
            if suppressed:
                return Verdict(DeliveryStatus.NOT_APPLIED, suppressed)
        hint = (
            ""
            if opt_in_process
            else (
                "; no list was named, so the account's default opt-in process applied "
                "(double opt-in waits for the person to confirm)"
            )
        )
        return Verdict(
            DeliveryStatus.NOT_APPLIED,
            f"unknown: Klaviyo shows {shown or 'no consent'} after the job was accepted{hint}",
        )
    if shown in (Consent.UNSUBSCRIBED, Consent.NEVER_SUBSCRIBED):
        return Verdict(DeliveryStatus.APPLIED)
    if not last_try:
        return Verdict(DeliveryStatus.PUSHED)
    if not profile_found:
        return Verdict(DeliveryStatus.NOT_APPLIED, "unknown: Klaviyo has no such profile")
    return Verdict(
        DeliveryStatus.NOT_APPLIED, f"unknown: Klaviyo still shows {shown} after the withdrawal"
    )
