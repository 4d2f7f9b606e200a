from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from klaviyo_consent.exceptions import ConfigurationError
from klaviyo_consent.services import checkpoints, signing


class Command(BaseCommand):
    help = "Append every committed consent event to the Merkle ledger and sign a checkpoint."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--generate-key",
            action="store_true",
            help="Print a new Ed25519 key for KLAVIYO_CONSENT['LEDGER_SIGNING_KEY'] and exit.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate_key"]:
            self.stdout.write(signing.generate_signing_key())
            return
        try:
            result = checkpoints.checkpoint()
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        if result.busy:
            self.stdout.write("another checkpointer is running; skipped")
        elif result.checkpoint is None:
            self.stdout.write(f"no new events; appended {result.appended}")
        else:
            cp = result.checkpoint
            self.stdout.write(
                f"checkpoint {cp.tree_size} root {cp.root_hash} key {cp.key_id} "
                f"(appended {result.appended})"
            )
