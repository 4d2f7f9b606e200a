from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from klaviyo_consent.exceptions import KlaviyoAPIError
from klaviyo_consent.management.output import Output, klaviyo_retries_told
from klaviyo_consent.models import Profile
from klaviyo_consent.services.lists import mirror_lists
from klaviyo_consent.services.verify import pull_all, pull_profiles


class Command(BaseCommand):
    help = "Refresh mirrored subscriptions from Klaviyo and give pushed events their verdicts."

    def add_arguments(self, parser: Any) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--all", action="store_true", help="Page through every Klaviyo profile.")
        group.add_argument("--profile", type=int, action="append", help="Local profile id.")
        group.add_argument(
            "--lists",
            action="store_true",
            help="Mirror every list with its member count (Klaviyo allows 15 counts a minute).",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with klaviyo_retries_told(Output(self.stdout)):
                self.pull(options)
        except KlaviyoAPIError as error:
            # Pages already read are stored; an unreachable or refusing Klaviyo is said in its
            # own words (never the key), not as a traceback.
            raise CommandError(f"Klaviyo could not be read: {error}") from error

    def pull(self, options: dict[str, Any]) -> None:
        if options["lists"]:
            lists = mirror_lists(profile_counts=True)
            self.stdout.write(f"lists mirrored {len(lists)} with their member counts")
            return
        if options["all"]:
            lists = mirror_lists()
            self.stdout.write(f"lists mirrored {len(lists)}")
            report = self._pull_all(show=not options["no_progress"])
        else:
            ids = options["profile"]
            profiles = list(Profile.objects.filter(pk__in=ids))
            missing = sorted(set(ids) - {p.pk for p in profiles})
            if missing:
                raise CommandError(f"No local profile with id {', '.join(map(str, missing))}.")
            report = pull_profiles(profiles)
        self.stdout.write(
            "profiles read {profiles_read}, mirrored {profiles_mirrored}, drifts found {drifts}, "
            "verdicts changed {verdicts_changed}, requests {requests}".format(**report.as_dict())
        )

    def _pull_all(self, show: bool) -> Any:
        if not show:
            return pull_all()
        try:
            from rich.progress import Progress
        except ImportError:  # the optional "progress" extra is not installed
            return pull_all(progress=self._plain_progress())
        with Progress(transient=False) as progress:
            bar = progress.add_task("Reading Klaviyo profiles", total=None)
            return pull_all(progress=lambda n: progress.advance(bar, n))

    def _plain_progress(self) -> Any:
        seen = [0]

        def advance(n: int) -> None:
            seen[0] += n
            if seen[0] % 1000 < n:
                self.stderr.write(f"{seen[0]} profiles read")

        return advance
