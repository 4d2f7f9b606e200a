from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the fake Klaviyo API over HTTP (offline testing of the real HTTP backend)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--no-rate-limits", action="store_true")
        parser.add_argument("--fault-rate", type=float, default=0.0)
        parser.add_argument(
            "--list",
            action="append",
            default=[],
            metavar="ID:single_opt_in|double_opt_in",
            help="Create a list, e.g. --list Y6nRLr:double_opt_in",
        )

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        from klaviyo_consent.testing.fake import FakeKlaviyo, serve

        fake = FakeKlaviyo(
            enforce_rate_limits=not options["no_rate_limits"], fault_rate=options["fault_rate"]
        )
        for spec in options["list"]:
            list_id, _, process = spec.partition(":")
            fake.add_list(list_id, list_id, process or "single_opt_in")
        self.stdout.write(f"Fake Klaviyo on http://{host}:{port} (Ctrl-C to stop)")
        serve(fake, host, port)
