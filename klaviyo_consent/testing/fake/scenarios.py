"""What people and Klaviyo do to an account outside the API, for tests to play out
(confirm a double opt-in, text STOP, bounce, click unsubscribe...).
"""

from __future__ import annotations

from typing import Any

from klaviyo_consent.testing.fake.records import (
    _LIST_ID_ALPHABET,
    _OPT_IN_PROCESSES,
    _SUBSCRIBED,
    _SUPPRESSION_REASONS,
    DEFAULT_BASE_URL,
    SMS_CONSENT_REMOVALS,
    SMS_OPT_OUT_KEYWORDS,
    _iso,
    _List,
    _phone_info,
)
from klaviyo_consent.testing.fake.state import AccountState


class AccountScenarios(AccountState):
    """Drive the account as people and Klaviyo would, outside the API."""

    # --- simulation helpers ----------------------------------------------------------------

    def add_list(
        self,
        list_id: str | None = None,
        name: str = "Newsletter",
        opt_in_process: str = "single_opt_in",
    ) -> str:
        """Create a list (Klaviyo's own default is double opt-in; tests usually want single)."""
        if opt_in_process not in _OPT_IN_PROCESSES:
            raise ValueError(f"opt_in_process must be one of {sorted(_OPT_IN_PROCESSES)}")
        with self._lock:
            if list_id is None:
                list_id = "".join(self._id_rng.choice(_LIST_ID_ALPHABET) for _ in range(6))
            moment = self.now()
            self._lists[list_id] = _List(list_id, name, opt_in_process, moment, moment)
            return list_id

    def list_ids(self) -> list[str]:
        """Ids of the lists this account has."""
        with self._lock:
            return list(self._lists)

    def list_members(self, list_id: str) -> list[str]:
        """Profile ids on a list (joined by a subscribe or a confirmed double opt-in)."""
        with self._lock:
            return list(self._lists[list_id].members)

    def add_profile(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> str:
        """Create a profile directly (as a form, import or the UI would); returns its id."""
        with self._lock:
            if phone_number is not None:
                phone_number = _phone_info(phone_number)[0] or phone_number
            profile = self._find(None, email, phone_number)
            if profile is None:
                profile = self._create_profile(email, phone_number, self.now())
            else:
                self._fill_identifiers(profile, email, phone_number)
            if external_id is not None:
                profile.external_id = external_id
            if first_name is not None:
                profile.first_name = first_name
            if last_name is not None:
                profile.last_name = last_name
            return profile.id

    def get_profile(
        self, email: str | None = None, phone_number: str | None = None
    ) -> dict[str, Any] | None:
        """The profile's id and attributes, ``subscriptions`` included, or None when unknown.

        Flattened from what ``GET /api/profiles?additional-fields[profile]=subscriptions``
        shows, so tests can write ``fake.get_profile(email=e)["subscriptions"]["email"]``.
        """
        with self._lock:
            profile = self._lookup(email, phone_number)
            if profile is None:
                return None
            resource = self._profile_resource(profile, DEFAULT_BASE_URL, with_subscriptions=True)
            return {"id": resource["id"], **resource["attributes"]}

    def confirm_double_optin(
        self, email: str | None = None, phone_number: str | None = None
    ) -> int:
        """The person confirms: by text (phone) SMS and email items, by email only email ones.

        Returns how many pending subscriptions were confirmed.
        """
        with self._lock:
            profile = self._require(email, phone_number)
            channels = {"sms", "email"} if phone_number is not None else {"email"}
            moment = self.now()
            stamp = _iso(moment)
            confirmed = 0
            for channel, purpose in (
                ("email", "marketing"),
                ("sms", "marketing"),
                ("sms", "transactional"),
            ):
                if channel not in channels:
                    continue
                waiting = self._pending.pop((profile.id, channel, purpose), {})
                if not waiting:
                    continue
                confirmed += len(waiting)
                if channel == "email":
                    source = next(iter(waiting.values())).custom_source
                    applied = self._subscribe_email(
                        profile, stamp, stamp, method="API", custom_source=source, double_optin=True
                    )
                else:
                    applied = self._subscribe_sms(
                        profile, purpose, stamp, stamp, method="TEXT", method_detail="JOIN"
                    )
                for list_id in waiting:
                    if applied and list_id in self._lists:
                        self._lists[list_id].members[profile.id] = None
            if confirmed:
                profile.updated = moment
            return confirmed

    def reply_stop(self, phone_number: str, keyword: str = "STOP") -> None:
        """The person texts an opt-out keyword: Klaviyo revokes SMS marketing consent itself
        (method TEXT, method_detail the keyword as texted: STOP, END, QUIT, ...)."""
        word = keyword.strip().upper()
        if word not in SMS_OPT_OUT_KEYWORDS:
            raise ValueError(f"keyword must be one of {sorted(SMS_OPT_OUT_KEYWORDS)}")
        with self._lock:
            profile = self._require(None, phone_number)
            moment = self.now()
            self._unsubscribe_sms(
                profile, "marketing", _iso(moment), method="TEXT", method_detail=word
            )
            self._drop_pending(profile.id, "sms", "marketing")
            profile.updated = moment

    def remove_sms_consent(self, phone_number: str, reason: str) -> None:
        """Klaviyo removes SMS consent on its own after a permanent delivery failure or a
        carrier deactivation (help centre, "Understanding SMS consent removal"): every SMS
        subscription of the number becomes UNSUBSCRIBED, with ``reason`` as Klaviyo's method
        (``PERMANENT_FAILURE`` or ``CARRIER_DEACTIVATION``; the exact method strings Klaviyo
        reports are unconfirmed, the point is that the inbound event carries them).
        """
        if reason not in SMS_CONSENT_REMOVALS:
            raise ValueError(f"reason must be one of {sorted(SMS_CONSENT_REMOVALS)}")
        with self._lock:
            profile = self._require(None, phone_number)
            moment = self.now()
            for purpose in ("marketing", "transactional"):
                if profile.sms(purpose).get("consent") == _SUBSCRIBED:
                    self._unsubscribe_sms(
                        profile,
                        purpose,
                        _iso(moment),
                        method=reason,
                        method_detail=SMS_CONSENT_REMOVALS[reason],
                    )
                self._drop_pending(profile.id, "sms", purpose)
            profile.updated = moment

    def change_phone_number(self, email: str, phone_number: str) -> None:
        """The profile's number is replaced on Klaviyo's side (e.g. a new number given at
        checkout): Klaviyo resets SMS consent, the new number starts NEVER_SUBSCRIBED (help
        centre, "How SMS affects profiles")."""
        phone = _phone_info(phone_number)[0] or phone_number
        with self._lock:
            profile = self._require(email, None)
            self._set_phone_number(profile, phone, self.now())

    def click_unsubscribe(self, email: str) -> None:
        """The person unsubscribes through the preference page / unsubscribe link."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            self._unsubscribe_email(
                profile, _iso(moment), method="PREFERENCE_PAGE", reason="UNSUBSCRIBE"
            )
            self._drop_pending(profile.id, "email", "marketing")
            profile.updated = moment

    def report_spam(self, email: str) -> None:
        """The person marks a campaign as spam: consent revoked and a SPAM_COMPLAINT suppression."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            self._unsubscribe_email(
                profile, _iso(moment), method="SPAM_COMPLAINT", reason="SPAM_COMPLAINT"
            )
            self._drop_pending(profile.id, "email", "marketing")
            profile.updated = moment

    def suppress(self, email: str, reason: str = "HARD_BOUNCE") -> str:
        """Klaviyo suppresses an address itself (bounce, invalid); consent is left as it was."""
        if reason not in _SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {sorted(_SUPPRESSION_REASONS)}")
        with self._lock:
            moment = self.now()
            profile = self._find(None, email, None) or self._create_profile(email, None, moment)
            self._add_suppression(profile, reason, _iso(moment))
            profile.updated = moment
            return profile.id

    def unsuppress(self, email: str, reason: str = "USER_SUPPRESSED") -> None:
        """Someone removes a suppression in Klaviyo's UI; consent is left as it was."""
        with self._lock:
            profile = self._require(email, None)
            moment = self.now()
            marketing = profile.email_marketing
            marketing["suppression"] = [
                item for item in marketing["suppression"] if item["reason"] != reason
            ]
            marketing["can_receive_email_marketing"] = not marketing["suppression"]
            marketing["last_updated"] = _iso(moment)
            profile.updated = moment
