"""Admin: each profile's mirrored Klaviyo subscriptions beside its local ledger, all read-only.

Actions call the same services as the API and the commands. Importing this package (Django's
admin autodiscovery does) registers every model admin.
"""

from klaviyo_consent.admin.base import ReadOnlyMixin, badge
from klaviyo_consent.admin.erasure import ErasureAdmin, ErasureDeliveryAdmin
from klaviyo_consent.admin.events import (
    ConsentEventAdmin,
    KlaviyoListAdmin,
    WebhookDeliveryAdmin,
)
from klaviyo_consent.admin.profiles import ProfileAdmin
from klaviyo_consent.admin.proofs import (
    CheckpointAdmin,
    ConsentTextAdmin,
    VerificationRunAdmin,
)

__all__ = [
    "CheckpointAdmin",
    "ConsentTextAdmin",
    "VerificationRunAdmin",
    "ConsentEventAdmin",
    "ErasureAdmin",
    "ErasureDeliveryAdmin",
    "KlaviyoListAdmin",
    "ProfileAdmin",
    "ReadOnlyMixin",
    "WebhookDeliveryAdmin",
    "badge",
]
