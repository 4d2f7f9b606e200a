from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from klaviyo_consent.services import checkpoints, erasure_push, identity_push
from klaviyo_consent.services import sync as sync_service
from klaviyo_consent.services.erasure import erase_expired_evidence


class Command(BaseCommand):
    help = "Push every pending consent event to Klaviyo, verify what is due, and exit (or --loop)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--loop", action="store_true", help="Keep running as a worker.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between runs.")
        parser.add_argument(
            "--retry-failed",
            action="store_true",
            help="First put failed and dead-lettered events back in the outbox.",
        )
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="Exit at once even if retries are scheduled (default: wait for them).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["retry_failed"]:
            queued = sync_service.retry_failed()
            self.stdout.write(f"{queued} failed event(s) queued again")
            queued = identity_push.retry_failed()
            self.stdout.write(f"{queued} failed phone-number change(s) queued again")
            queued = erasure_push.retry_failed()
            self.stdout.write(f"{queued} failed Klaviyo deletion job(s) queued again")
        while True:
            report = sync_service.sync(wait=not (options["loop"] or options["no_wait"]))
            self.stdout.write(
                "pushed {pushed}, retried {retried}, failed {failed} in {jobs} jobs; "
                "verified {verified} {verdicts}".format(**report.as_dict())
            )
            if not options["loop"]:
                return
            if checkpoints.checkpoint_due():
                made = checkpoints.checkpoint().checkpoint
                if made is not None:
                    self.stdout.write(f"checkpoint {made.tree_size} root {made.root_hash}")
                # Evidence past EVIDENCE_RETENTION_DAYS goes once its events are in the ledger.
                expired = erase_expired_evidence()
                if expired is not None:
                    self.stdout.write(f"erased the evidence of {expired.events} events")
            time.sleep(options["interval"])
