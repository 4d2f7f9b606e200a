from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from klaviyo_consent.exceptions import ConfigurationError, LedgerMismatch
from klaviyo_consent.services import ledger_verify


class Command(BaseCommand):
    help = (
        "Recompute every ledger leaf from the stored events, every checkpoint's root and "
        "signature, and the consistency between consecutive checkpoints."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = ledger_verify.verify_ledger()
        except (LedgerMismatch, ConfigurationError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"OK: {result.events} events, {result.checkpoints} checkpoints")
