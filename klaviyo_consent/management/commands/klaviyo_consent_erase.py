"""Erase a person (GDPR Art. 17) keeping the proof, or the evidence past its retention."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from klaviyo_consent.exceptions import ConfigurationError, ConsentValidationError, ErasureRefused
from klaviyo_consent.models import Profile, parse_row_id
from klaviyo_consent.services.erasure import (
    ErasureRequest,
    erase_expired_evidence,
    erase_profile,
    find_person,
)


class Command(BaseCommand):
    help = (
        "Erase a person's identifiers and evidence everywhere (events keep their proof) and "
        "queue Klaviyo's data-privacy deletion job; or, with --expired-evidence, erase the "
        "evidence older than EVIDENCE_RETENTION_DAYS."
    )

    def add_arguments(self, parser: Any) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--email")
        who.add_argument("--phone-number")
        who.add_argument("--profile", help="The profile id.")
        who.add_argument(
            "--expired-evidence",
            action="store_true",
            help="Erase the IP address, user agent and page URL of events older than "
            "EVIDENCE_RETENTION_DAYS.",
        )
        parser.add_argument("--reason", default="", help="Why (e.g. a ticket number).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["expired_evidence"]:
            try:
                erasure = erase_expired_evidence(source="command")
            except ConfigurationError as error:
                raise CommandError(str(error)) from None
            self.stdout.write(
                f"erased the evidence of {erasure.events} events recorded before "
                f"{erasure.evidence_before:%Y-%m-%d} (erasure {erasure.pk})"
                if erasure
                else "no evidence due for erasure (EVIDENCE_RETENTION_DAYS unset or nothing due)"
            )
            return
        try:
            profile = self._profile(options)
            erasure = erase_profile(
                ErasureRequest(profile_id=profile.pk, source="command", reason=options["reason"])
            )
        except (ErasureRefused, ConsentValidationError, ConfigurationError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"erased profile {profile.pk}: {erasure.events} events (erasure {erasure.pk}); "
            f"{erasure.deliveries.count()} Klaviyo deletion job(s) queued"
        )

    def _profile(self, options: dict[str, Any]) -> Profile:
        if options["profile"] is not None:
            pk = parse_row_id(str(options["profile"]))
            profile = Profile.objects.filter(pk=pk).first() if pk is not None else None
            if profile is None:
                raise CommandError(f"--profile {options['profile']}: no such profile.")
            return profile
        return find_person(email=options["email"], phone_number=options["phone_number"])
