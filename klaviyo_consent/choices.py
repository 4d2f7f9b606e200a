"""Choices in Klaviyo's own words, so nobody translates between the ledger and the API."""

from django.db import models


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"


class Purpose(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"


#: Klaviyo has email.marketing, sms.marketing and sms.transactional; no email.transactional.
CHANNEL_PURPOSES: dict[str, tuple[str, ...]] = {
    Channel.EMAIL: (Purpose.MARKETING,),
    Channel.SMS: (Purpose.MARKETING, Purpose.TRANSACTIONAL),
}


class Consent(models.TextChoices):
    SUBSCRIBED = "SUBSCRIBED", "Subscribed"
    UNSUBSCRIBED = "UNSUBSCRIBED", "Unsubscribed"
    NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED", "Never subscribed"


class Method(models.TextChoices):
    """How the consent reached the site; ``klaviyo`` marks changes that happened in Klaviyo."""

    FORM = "form", "Web form"
    API = "api", "API"
    IMPORT = "import", "Import"
    ADMIN = "admin", "Admin"
    KLAVIYO = "klaviyo", "Klaviyo (inbound)"


class Suppression(models.TextChoices):
    """A site request to Klaviyo's email suppression jobs (``profile-suppression-bulk-create-job``
    / ``…-delete-job``), recorded in the ledger beside consent."""

    SUPPRESS = "suppress", "Suppress"
    UNSUPPRESS = "unsuppress", "Unsuppress"


class Membership(models.TextChoices):
    """A list membership change without consent (Klaviyo's "added to a list without being
    subscribed"): recorded as a membership event, never as consent."""

    ADD = "add", "Add to list"
    REMOVE = "remove", "Remove from list"


class DeliveryStatus(models.TextChoices):
    """One state machine for an event's whole journey, from the outbox to Klaviyo's verdict."""

    PENDING = "pending", "Pending"
    PUSHED = "pushed", "Pushed"
    APPLIED = "applied", "Applied"
    PENDING_CONFIRMATION = "pending_confirmation", "Pending confirmation"
    NOT_APPLIED = "not_applied", "Not applied"
    FAILED = "failed", "Failed"


#: Verdicts after which no worker pushes the row again (until someone retries it). A read-back
#: still re-judges ``not_applied`` while it is its key's latest event (see docs/verdicts.md).
FINAL_DELIVERY = frozenset(
    {DeliveryStatus.APPLIED, DeliveryStatus.NOT_APPLIED, DeliveryStatus.FAILED}
)


class OptInProcess(models.TextChoices):
    DOUBLE_OPT_IN = "double_opt_in", "Double opt-in"
    SINGLE_OPT_IN = "single_opt_in", "Single opt-in"
