"""Does Klaviyo's mirrored state show the consent took effect? Pure functions, no I/O.

A reason only names what Klaviyo's state shows: a suppression a subscribe lifts (UNSUBSCRIBE,
SPAM_COMPLAINT/SPAM_REPORT, USER_SUPPRESSED, per the subscribe job's contract) is never given
as the cause of a subscribe that did not take; a country is only blamed when Klaviyo shows no
SMS consent at all; a confirmation is only awaited while nothing in Klaviyo's state says
otherwise, and not longer than ``CONFIRMATION_WINDOW``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils.dateparse import parse_datetime

from klaviyo_consent.choices import Channel, Consent, DeliveryStatus, OptInProcess
from klaviyo_consent.klaviyo import LIFTED_BY_SUBSCRIBE, STICKY_SUPPRESSIONS
from klaviyo_consent.phone import sms_unsupported_reason


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str = ""

    @property
    def decided(self) -> bool:
        return self.status != DeliveryStatus.PUSHED


def suppression_reasons(leaf: dict[str, Any]) -> list[str]:
    """The ``reason`` of each entry in ``subscriptions.email.marketing.suppression``."""
    return [s["reason"] for s in leaf.get("suppression") or [] if s.get("reason")]


def _sticky_reason(leaf: dict[str, Any]) -> str | None:
    sticky = [r for r in suppression_reasons(leaf) if r in STICKY_SUPPRESSIONS]
    if sticky:
        return f"profile is suppressed ({', '.join(sticky)})"
    return None


def _changed_after(leaf: dict[str, Any], moment: datetime | None) -> datetime | None:
    """Klaviyo's consent_timestamp when it is later than ``moment``."""
    stamp = parse_datetime(str(leaf.get("consent_timestamp") or ""))
    if stamp is None or moment is None or stamp <= moment:
        return None
    return stamp


def _how(leaf: dict[str, Any]) -> str:
    parts = [str(p) for p in (leaf.get("method"), leaf.get("method_detail")) if p]
    return f" ({' / '.join(parts)})" if parts else ""


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
    pushed_at: datetime | None = None,
    now: datetime | None = None,
    confirmation_window: timedelta | None = None,
) -> Verdict:
    """The verdict for one pushed event from the mirrored ``subscriptions.<channel>.<purpose>``.

    ``last_try`` says whether Klaviyo has had its last chance; before that, "not yet" stays
    ``pushed`` (Klaviyo applies jobs asynchronously), after it becomes ``not_applied``.
    ``pushed_at``/``now``/``confirmation_window``: a double opt-in waits for the person at most
    that long after the push; past it the verdict is ``not_applied`` "never confirmed" (a later
    read-back that shows the consent still turns it ``applied``).
    """
    shown = leaf.get("consent")
    if consent == Consent.SUBSCRIBED:
        if shown == Consent.SUBSCRIBED:
            return Verdict(DeliveryStatus.APPLIED)
        later = _changed_after(leaf, pushed_at)
        awaiting = opt_in_process == OptInProcess.DOUBLE_OPT_IN and not historical_import
        if later is not None and shown and (last_try or awaiting):
            # Klaviyo's own later change (a STOP, an unsubscribe link): that is the evidence,
            # and it is not consistent with a confirmation still pending.
            return Verdict(
                DeliveryStatus.NOT_APPLIED,
                f"Klaviyo shows {shown}{_how(leaf)} since {later.isoformat()}, after the push",
            )
        if channel == Channel.SMS and phone_number and shown in (None, Consent.NEVER_SUBSCRIBED):
            unsupported = sms_unsupported_reason(phone_number, published_too=True)
            if unsupported:
                return Verdict(DeliveryStatus.NOT_APPLIED, unsupported)
        if channel == Channel.EMAIL:
            sticky = _sticky_reason(leaf)
            if sticky:
                return Verdict(DeliveryStatus.NOT_APPLIED, sticky)
        if awaiting:
            if (
                pushed_at is not None
                and now is not None
                and confirmation_window is not None
                and now >= pushed_at + confirmation_window
            ):
                return Verdict(
                    DeliveryStatus.NOT_APPLIED,
                    "the person never confirmed: double opt-in list, no confirmation within "
                    f"{_duration(confirmation_window)} of the push (CONFIRMATION_WINDOW)",
                )
            return Verdict(
                DeliveryStatus.PENDING_CONFIRMATION,
                "double opt-in list: waiting for the person to confirm",
            )
        if not last_try:
            return Verdict(DeliveryStatus.PUSHED)
        if not profile_found:
            return Verdict(DeliveryStatus.NOT_APPLIED, "unknown: Klaviyo has no such profile")
        lifted = [r for r in suppression_reasons(leaf) if r in LIFTED_BY_SUBSCRIBE]
        still = (
            f"; the {', '.join(lifted)} suppression a subscribe lifts is still listed, "
            "so Klaviyo has not applied the job"
            if channel == Channel.EMAIL and lifted
            else ""
        )
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
            f"unknown: Klaviyo shows {shown or 'no consent'} after the job was accepted"
            f"{still}{hint}",
        )
    if shown in (Consent.UNSUBSCRIBED, Consent.NEVER_SUBSCRIBED):
        return Verdict(DeliveryStatus.APPLIED)
    if not last_try:
        return Verdict(DeliveryStatus.PUSHED)
    later = _changed_after(leaf, pushed_at)
    if later is not None and shown:
        return Verdict(
            DeliveryStatus.NOT_APPLIED,
            f"Klaviyo shows {shown}{_how(leaf)} since {later.isoformat()}, after the push",
        )
    if not profile_found:
        return Verdict(DeliveryStatus.NOT_APPLIED, "unknown: Klaviyo has no such profile")
    return Verdict(
        DeliveryStatus.NOT_APPLIED, f"unknown: Klaviyo still shows {shown} after the withdrawal"
    )


def judge_suppression(
    *, suppression: str, leaf: dict[str, Any], profile_found: bool, last_try: bool
) -> Verdict:
    """The verdict for a site suppression request from the mirrored ``email.marketing`` leaf.

    Klaviyo's suppress job adds a ``USER_SUPPRESSED`` suppression; its delete job lifts only
    that one (not HARD_BOUNCE, INVALID_EMAIL or an unsubscribe), per the spec.
    """
    shown = "USER_SUPPRESSED" in suppression_reasons(leaf)
    wanted = suppression == "suppress"
    if shown == wanted:
        return Verdict(DeliveryStatus.APPLIED)
    if not last_try:
        return Verdict(DeliveryStatus.PUSHED)
    if not profile_found:
        return Verdict(DeliveryStatus.NOT_APPLIED, "unknown: Klaviyo has no such profile")
    if wanted:
        return Verdict(
            DeliveryStatus.NOT_APPLIED,
            "unknown: Klaviyo shows no USER_SUPPRESSED suppression after the job was accepted",
        )
    return Verdict(
        DeliveryStatus.NOT_APPLIED,
        "unknown: Klaviyo still shows the USER_SUPPRESSED suppression after the job was accepted",
    )


def _duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds} s"


def history_entry(
    *, at: datetime, previous: str, status: str, reason: str, source: str
) -> dict[str, Any]:
    """One line of a delivery's verdict history: when, from what, to what, why, seen where.

    ``source``: what showed the evidence (``pull``, ``webhook``, ``verify``, ``drift``).
    """
    return {
        "at": at.isoformat(),
        "from": previous,
        "status": status,
        "reason": reason,
        "source": source,
    }
