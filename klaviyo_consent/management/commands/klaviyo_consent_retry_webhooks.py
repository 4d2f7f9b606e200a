from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from klaviyo_consent.services.webhooks import retry_unprocessed


class Command(BaseCommand):
    help = "Process again every stored Klaviyo webhook delivery that was never processed."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--limit", type=int, default=None, help="At most this many.")

    def handle(self, *args: Any, **options: Any) -> None:
        reports = retry_unprocessed(limit=options["limit"])
        failed = sum(1 for report in reports if report.error)
        self.stdout.write(
            f"webhook deliveries retried {len(reports)}, processed {len(reports) - failed}, "
            f"still failing {failed}"
        )
