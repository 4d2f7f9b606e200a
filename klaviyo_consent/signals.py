"""Public signals: facts in the past tense, sent with the model class as sender.

Connect to them like Django's own::

    from klaviyo_consent.signals import consent_recorded

    @receiver(consent_recorded)
    def audit(sender, events, **kwargs): ...
"""

from django.dispatch import Signal

#: kwargs: events (list[ConsentEvent]), profile (Profile). Sent inside the recording transaction.
consent_recorded = Signal()

#: kwargs: events (list[ConsentEvent]), operation ("subscribe" | "unsubscribe"), list_id.
#: Klaviyo accepted a job with these events (202: accepted, not yet applied).
consent_pushed = Signal()

#: kwargs: events (list[ConsentEvent]), error (KlaviyoAPIError), final (bool).
#: ``final`` is True when the events ended ``failed``; False when they will be retried.
consent_push_failed = Signal()

#: kwargs: events (list[ConsentEvent]), error (KlaviyoAPIError), operation ("subscribe" |
#: "unsubscribe"), retry_at (datetime). Klaviyo refused a request as a whole (401/403, or an
#: error that names no profile): nothing was judged, the events stay pending and are retried.
klaviyo_request_refused = Signal()

#: kwargs: profile (Profile), subscriptions (dict): Klaviyo's object, just mirrored.
subscriptions_mirrored = Signal()

#: kwargs: event (ConsentEvent), delivery (Delivery). Klaviyo shows the consent took effect.
consent_applied = Signal()

#: kwargs: event (ConsentEvent), delivery (Delivery), reason (str). Klaviyo does not show it.
consent_not_applied = Signal()

#: kwargs: profile (Profile), event (ConsentEvent): the inbound event recording a change made
#: in Klaviyo (STOP reply, unsubscribe link, spam complaint, double opt-in confirmed).
drift_detected = Signal()

#: kwargs: erasure (Erasure): a person was erased (their raw identifiers and evidence gone,
#: Klaviyo's deletion job queued). Sent inside the transaction.
profile_erased = Signal()

#: kwargs: profile (Profile), identity_events (list[IdentityEvent]): a profile's identifiers
#: changed (an identifier added, a number replaced, a merge). Sent inside the transaction.
identity_changed = Signal()

#: kwargs: events (list[MembershipEvent]), list_id (str), action ("add" | "remove"): list
#: membership without consent was recorded. Sent inside the transaction; the push runs on commit.
membership_recorded = Signal()
