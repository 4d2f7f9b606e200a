"""Concurrent requests for one person, any mix of identifiers: one profile or a clean 409.

Four threads, each with its own PostgreSQL connection, wait at a barrier and then post the
same new person with different identifier combinations, for many rounds. No answer may be a
5xx; every 201 must name a profile that holds every identifier its request sent (a person is
never split over two profiles by a request that named both identifiers); each identifier is
held by one profile at most.
"""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from klaviyo_consent.models import Profile
from tests.helpers import SUBSCRIBE, UNSUBSCRIBE

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 4
ROUNDS = 60
#: The identifier combinations a person's requests may carry (at least email or phone).
MIXES = [
    ("email",),
    ("phone_number",),
    ("email", "phone_number"),
    ("email", "external_id"),
    ("phone_number", "external_id"),
    ("email", "phone_number", "external_id"),
]


def _profile(mix: tuple[str, ...], person: int) -> dict[str, str]:
    values = {
        "email": f"person{person}@example.com",
        "phone_number": f"+4474009{person:05d}",
        "external_id": f"cust-{person}",
    }
    return {name: values[name] for name in mix}


def _subscriptions(mix: tuple[str, ...]) -> dict[str, Any]:
    if "phone_number" in mix:
        return {"sms": {"marketing": True}}
    return {"email": {"marketing": True}}


def test_four_clients_naming_one_person_at_once_never_split_them_nor_get_a_5xx(
    staff, fake, settings
):
    if connection.vendor != "postgresql":
        pytest.skip("needs real row locks and concurrent connections (set DATABASE_URL)")
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"klaviyo_consent_write": None},
    }
    chooser = random.Random(8)  # fixed: the same mixes every run
    barrier = threading.Barrier(THREADS, timeout=30)
    answers: list[tuple[int, dict[str, str], int, Any]] = []
    lock = threading.Lock()

    def client() -> APIClient:
        api = APIClient()
        api.force_authenticate(staff)
        return api

    def post(api: APIClient, person: int, mix: tuple[str, ...], path: str) -> None:
        sent = _profile(mix, person)
        barrier.wait()
        try:
            response = api.post(
                path,
                {"profile": sent, "subscriptions": _subscriptions(mix)},
                format="json",
            )
            status, data = response.status_code, response.json()
        except Exception as error:  # noqa: BLE001 - an escaped exception is a 500
            status, data = 500, repr(error)
        with lock:
            answers.append((person, sent, status, data))

    def run(slot: int, plan: list[tuple[tuple[str, ...], str]]) -> None:
        api = client()
        try:
            for person, (mix, path) in enumerate(plan):
                post(api, person, mix, path)
        finally:
            connection.close()

    plans: list[list[tuple[tuple[str, ...], str]]] = [[] for _ in range(THREADS)]
    for _ in range(ROUNDS):
        mixes = chooser.sample(MIXES, THREADS)
        for slot, mix in enumerate(mixes):
            path = UNSUBSCRIBE if chooser.random() < 0.2 else SUBSCRIBE
            plans[slot].append((mix, path))
    threads = [threading.Thread(target=run, args=(n, plans[n])) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(answers) == THREADS * ROUNDS
    statuses = sorted({status for _, _, status, _ in answers})
    server_errors = [a for a in answers if a[2] >= 500]
    assert server_errors == [], server_errors[:3]
    assert set(statuses) <= {201, 400, 409}, statuses
    profiles = {p.pk: p for p in Profile.objects.all()}
    for _person, sent, status, data in answers:
        if status != 201:
            continue
        profile = profiles[data["profile"]["id"]]
        held = {name: getattr(profile, name) for name in sent}
        assert held == sent, (sent, held)  # every identifier sent is on the profile named
    for name in ("email", "phone_number", "external_id"):
        values = [getattr(p, name) for p in profiles.values() if getattr(p, name)]
        assert len(values) == len(set(values))
    # Rounds where nobody got a 409 end in exactly one profile for the person.
    by_person = itertools.groupby(sorted(answers, key=lambda a: a[0]), key=lambda a: a[0])
    for person, group in by_person:
        group = list(group)
        if all(status == 201 for _, _, status, _ in group):
            ids = {data["profile"]["id"] for _, _, _, data in group}
            together = any(len(sent) > 1 and "external_id" not in sent for _, sent, _, _ in group)
            if together:
                assert len(ids) == 1, (person, group)


def test_merges_number_changes_and_consents_on_the_same_profiles_at_once_never_a_5xx(
    staff, fake, settings
):
    if connection.vendor != "postgresql":
        pytest.skip("needs real row locks and concurrent connections (set DATABASE_URL)")
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"klaviyo_consent_write": None},
    }
    rounds = 30
    pairs = []
    for n in range(rounds):
        a = Profile.objects.create(email=f"a{n}@example.com")
        b = Profile.objects.create(phone_number=f"+4474008{n:05d}")
        pairs.append((a.pk, b.pk, n))
    barrier = threading.Barrier(THREADS, timeout=30)
    answers: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def requests_for(slot: int, a: int, b: int, n: int) -> tuple[str, dict[str, Any]]:
        new_number = f"+4474007{n:05d}"
        return [
            (f"/api/consent/profiles/{a}/merge/", {"other": b}),
            (f"/api/consent/profiles/{b}/merge/", {"other": a}),
            (f"/api/consent/profiles/{a}/phone-number/", {"phone_number": new_number}),
            (
                SUBSCRIBE,
                {
                    "profile": {"email": f"a{n}@example.com", "phone_number": new_number},
                    "subscriptions": {"sms": {"marketing": True}},
                },
            ),
        ][slot]

    def run(slot: int) -> None:
        api = APIClient()
        api.force_authenticate(staff)
        try:
            for a, b, n in pairs:
                path, data = requests_for(slot, a, b, n)
                barrier.wait()
                try:
                    response = api.post(path, data, format="json")
                    status, content = response.status_code, response.content[:300]
                except Exception as error:  # noqa: BLE001 - an escaped exception is a 500
                    status, content = 500, repr(error)
                with lock:
                    answers.append((path, status, content))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(answers) == THREADS * rounds
    server_errors = [a for a in answers if a[1] >= 500]
    assert server_errors == [], server_errors[:3]
    for name in ("email", "phone_number"):
        values = [getattr(p, name) for p in Profile.objects.all() if getattr(p, name)]
        assert len(values) == len(set(values))
    # A merged profile never holds identifiers, and points at a live profile.
    for merged in Profile.objects.filter(merged_into__isnull=False).select_related("merged_into"):
        assert merged.email is None and merged.phone_number is None
        assert merged.merged_into.merged_into_id is None
