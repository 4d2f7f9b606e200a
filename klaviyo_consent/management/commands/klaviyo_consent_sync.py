from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from klaviyo_consent.management.output import Output, klaviyo_retries_told
from klaviyo_consent.services import checkpoints, erasure_push, identity_push
from klaviyo_consent.services import sync as sync_service
from klaviyo_consent.services.erasure import erase_expired_evidence
from klaviyo_consent.services.reports import SyncReport


def summary(report: SyncReport) -> str:
    """The run's one-line summary: ``pushed 3, retried 0, failed 0 in 1 jobs; verified 3
    (applied 2, not_applied 1)``; the verdicts' part only when there were verdicts."""
    data = report.as_dict()
    line = "pushed {pushed}, retried {retried}, failed {failed} in {jobs} jobs; verified {verified}"
    verdicts = ", ".join(f"{name} {count}" for name, count in sorted(data["verdicts"].items()))
    return line.format(**data) + (f" ({verdicts})" if verdicts else "")


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
        out = Output(self.stdout)
        if options["retry_failed"]:
            queued = sync_service.retry_failed()
            out.line(f"{queued} failed event(s) queued again")
            queued = identity_push.retry_failed()
            out.line(f"{queued} failed phone-number change(s) queued again")
            queued = erasure_push.retry_failed()
            out.line(f"{queued} failed Klaviyo deletion job(s) queued again")
        passes = 0

        def on_pass(report: SyncReport) -> None:
            nonlocal passes
            passes += 1
            if passes > 1:  # the first pass is in the summary, or before a wait line
                out.line(f"  pass {passes}: {summary(report)}", style="dim")

        while True:
            passes = 0
            with klaviyo_retries_told(out):
                try:
                    report = sync_service.sync(
                        wait=not (options["loop"] or options["no_wait"]),
                        on_pass=on_pass,
                        on_wait=out.waiting,
                    )
                finally:
                    out.stop_waiting()
            out.line(summary(report))
            if report.unreachable and (left := sync_service.pending_count()):
                out.line(
                    f"Klaviyo could not be reached ({report.unreachable} request(s)); "
                    f"{left} event(s) stay in the outbox for the next run.",
                    style="yellow",
                )
            if not options["loop"]:
                return
            if checkpoints.checkpoint_due():
                made = checkpoints.checkpoint().checkpoint
                if made is not None:
                    out.line(f"checkpoint {made.tree_size} root {made.root_hash}")
                # Evidence past EVIDENCE_RETENTION_DAYS goes once its events are in the ledger.
                expired = erase_expired_evidence()
                if expired is not None:
                    out.line(f"erased the evidence of {expired.events} events")
            time.sleep(options["interval"])
