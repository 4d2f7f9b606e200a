"""Issue 10: versioned consent texts, the signed Merkle ledger, receipts verified offline."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from klaviyo_consent import merkle
from klaviyo_consent.exceptions import LedgerMismatch
from klaviyo_consent.models import (
    Checkpoint,
    ConsentEvent,
    ConsentText,
    EventPersonalData,
    LedgerEntry,
    VerificationRun,
)
from klaviyo_consent.receipts import ReceiptError, text_sha256, verify_receipt
from klaviyo_consent.services import checkpoints as ledger
from klaviyo_consent.services import ledger_verify, proofs, signing
from klaviyo_consent.services.leaves import digest
from klaviyo_consent.services.ledger import ConsentRequest, Evidence, record_consent

ROOT = Path(__file__).resolve().parent.parent
OTHER_KEY = base64.b64encode(b"another-ledger-signing-key-32byt").decode()

pytestmark = pytest.mark.django_db


def subscribe(email: str = "ada@example.com", text: str = "Yes, email me offers.", **kw: Any):
    return record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email=email,
            consent_text=text,
            **kw,
        )
    ).events


def drop_append_only_trigger(cursor: Any) -> None:
    """What someone with the tables' owner role can do: switch the append-only trigger off."""
    if connection.vendor == "postgresql":
        cursor.execute("SET LOCAL session_replication_role = replica")
    else:
        cursor.execute("DROP TRIGGER klaviyo_consent_append_only")


def public_key() -> str:
    return signing.signer().public_key


# -- consent texts ---------------------------------------------------------------------------


def test_the_same_words_map_to_one_consent_text_version(fake):
    [first] = subscribe("a@example.com")
    [second] = subscribe("b@example.com")
    [other] = subscribe("c@example.com", text="Text me too.")
    assert first.consent_text_version_id == second.consent_text_version_id
    assert other.consent_text_version_id != first.consent_text_version_id
    assert first.consent_text_version.sha256 == text_sha256("Yes, email me offers.")


def test_subscribe_by_consent_text_id_records_that_exact_version(api, fake):
    text = ConsentText.objects.create(key="newsletter", version=3, locale="en-GB", body="Words.")
    response = api.post(
        "/api/consent/subscribe/",
        {
            "profile": {"email": "ada@example.com"},
            "subscriptions": {"email": {"marketing": True}},
            "consent_text_id": text.pk,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    [event] = response.json()["events"]
    assert event["consent_text"] == "Words."
    assert event["consent_text_version"] == text.pk
    assert event["consent_text_sha256"] == text.sha256


def test_an_unknown_consent_text_id_is_a_400_naming_the_field(api, fake):
    response = api.post(
        "/api/consent/subscribe/",
        {
            "profile": {"email": "ada@example.com"},
            "subscriptions": {"email": {"marketing": True}},
            "consent_text_id": 999,
        },
        format="json",
    )
    assert response.status_code == 400
    assert "consent_text_id" in json.dumps(response.json())
    assert not ConsentEvent.objects.exists()


def test_a_consent_text_is_never_edited_a_change_is_a_new_version():
    text = ConsentText.objects.create(key="newsletter", version=1, body="Old words.")
    text.body = "New words."
    with pytest.raises(Exception, match="new version"):
        text.save()
    text.refresh_from_db()
    assert text.body == "Old words."


# -- checkpoints -----------------------------------------------------------------------------


def test_a_checkpoint_covers_every_committed_event_and_its_signature_verifies(fake):
    events = subscribe("a@example.com") + subscribe("b@example.com")
    result = ledger.checkpoint()
    cp = result.checkpoint
    assert result.appended == 2 and cp is not None and cp.tree_size == 2
    leaves = [bytes.fromhex(e.ledger_entry.leaf_hash) for e in ConsentEvent.objects.order_by("id")]
    assert [e.pk for e in events] == list(
        LedgerEntry.objects.order_by("leaf_index").values_list("event_id", flat=True)
    )
    assert cp.root_hash == merkle.root_from_leaf_hashes(leaves).hex()
    from klaviyo_consent.receipts import verify_checkpoint

    verify_checkpoint(proofs.checkpoint_data(cp), public_key())
    assert ledger.checkpoint().checkpoint is None  # nothing new: no new head


def test_checkpoint_api_gives_the_latest_head_and_consistency_proofs(client, fake):
    assert client.get("/api/consent/checkpoints/latest/").status_code == 404
    subscribe("a@example.com")
    ledger.checkpoint()
    for i in range(5):
        subscribe(f"p{i}@example.com")
    ledger.checkpoint()
    latest = client.get("/api/consent/checkpoints/latest/").json()
    assert set(latest) == {
        "tree_size",
        "root_hash",
        "timestamp",
        "key_id",
        "signature",
        "public_key",
    }
    assert latest["tree_size"] == 6
    listed = client.get("/api/consent/checkpoints/?since=0").json()["checkpoints"]
    assert [c["tree_size"] for c in listed] == [1, 6]
    first, second = listed
    merkle.verify_consistency(
        1,
        6,
        bytes.fromhex(first["root_hash"]),
        bytes.fromhex(second["root_hash"]),
        [bytes.fromhex(h) for h in second["consistency_proof"]],
    )
    assert [
        c["tree_size"]
        for c in client.get("/api/consent/checkpoints/?since=2").json()["checkpoints"]
    ] == [6]
    assert client.get("/api/consent/checkpoints/?since=-1").status_code == 400


def test_the_public_checkpoint_list_is_paged_not_unbounded(client, fake):
    # Anyone may read it and each head costs a consistency proof: at most 100 an answer.
    for i in range(4):
        subscribe(f"p{i}@example.com")
        ledger.checkpoint()
    page = client.get("/api/consent/checkpoints/?since=0&limit=2").json()["checkpoints"]
    assert [c["tree_size"] for c in page] == [1, 2]
    following = f"/api/consent/checkpoints/?since={page[-1]['tree_size'] + 1}&limit=2"
    rest = client.get(following).json()["checkpoints"]
    assert [(c["tree_size"], c["consistency_from"]) for c in rest] == [(3, 2), (4, 3)]
    for limit in ("0", "101", "x"):
        response = client.get(f"/api/consent/checkpoints/?limit={limit}")
        assert response.status_code == 400 and "limit" in response.json()


def test_checkpoint_command_signs_and_verify_command_reports_ok(fake, capsys):
    subscribe("a@example.com")
    call_command("klaviyo_consent_checkpoint")
    subscribe("b@example.com")
    call_command("klaviyo_consent_checkpoint")
    call_command("klaviyo_consent_verify")
    assert capsys.readouterr().out.strip().endswith("OK: 2 events, 2 checkpoints")
    run = VerificationRun.objects.latest()
    assert run.ok is True and run.events == 2


def test_events_committed_out_of_id_order_are_each_included_exactly_once(fake):
    [a] = subscribe("a@example.com")

    def event_with_id(pk: int) -> ConsentEvent:
        event = ConsentEvent(
            pk=pk,
            profile=a.profile,
            email=a.email,
            channel="email",
            purpose="marketing",
            consent="SUBSCRIBED",
            consent_text_version=a.consent_text_version,
        )
        return ConsentEvent.objects.append([event])[0]

    b = event_with_id(a.pk + 10)
    assert ledger.checkpoint().appended == 2
    late = event_with_id(a.pk + 5)  # a lower id than b, committed after the checkpoint
    assert ledger.checkpoint().appended == 1
    assert ledger.checkpoint().appended == 0
    order = list(LedgerEntry.objects.order_by("leaf_index").values_list("event_id", flat=True))
    assert order == [a.pk, b.pk, late.pk]
    assert ledger_verify.verify_ledger().events == 3


def test_a_stored_event_changed_through_raw_sql_is_named_by_verify(fake):
    subscribe("a@example.com")
    [target] = subscribe("b@example.com")
    ledger.checkpoint()
    subscribe("c@example.com")
    ledger.checkpoint()
    table = ConsentEvent._meta.db_table
    with connection.cursor() as cursor:
        drop_append_only_trigger(cursor)
        cursor.execute(f"UPDATE {table} SET custom_source = 'rewritten' WHERE id = %s", [target.pk])
    with pytest.raises(CommandError) as caught:
        call_command("klaviyo_consent_verify")
    message = str(caught.value)
    assert f"Event {target.pk} " in message and "checkpoint 2" in message
    assert VerificationRun.objects.latest().ok is False


def test_a_changed_identifier_is_caught_against_its_digest(fake):
    [target] = subscribe("a@example.com")
    ledger.checkpoint()
    table = EventPersonalData._meta.db_table  # the erasable values, apart from the event row
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET email = 'eve@example.com' WHERE event_id = %s", [target.pk]
        )
    with pytest.raises(CommandError, match=f"Event {target.pk} .*email no longer matches"):
        call_command("klaviyo_consent_verify")


def test_an_erased_identifier_leaves_the_leaf_and_root_valid(fake):
    [target] = subscribe("a@example.com")
    ledger.checkpoint()
    table = EventPersonalData._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET email = '' WHERE event_id = %s", [target.pk])
    assert ledger_verify.verify_ledger().events == 1


def test_rotated_keys_keep_old_checkpoints_verifiable(fake, settings):
    subscribe("a@example.com")
    old = ledger.checkpoint().checkpoint
    old_public = public_key()
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_SIGNING_KEY": OTHER_KEY}
    subscribe("b@example.com")
    new = ledger.checkpoint().checkpoint
    assert new.key_id != old.key_id
    with pytest.raises(Exception, match=f"Checkpoint 1 is signed by key {old.key_id}"):
        ledger_verify.verify_ledger()
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_VERIFY_KEYS": [old_public]}
    assert ledger_verify.verify_ledger().checkpoints == 2


def test_the_sync_loop_checkpoints_only_after_the_interval_and_when_events_were_added(fake):
    now = timezone.now()
    assert ledger.checkpoint_due(now) is False  # no events
    subscribe("a@example.com")
    assert ledger.checkpoint_due(now) is True
    ledger.checkpoint(now=now)
    later = Checkpoint.objects.get().created_at + timedelta(seconds=301)
    assert ledger.checkpoint_due(later) is False  # nothing added
    subscribe("b@example.com")
    assert ledger.checkpoint_due(later - timedelta(seconds=2)) is False  # interval not over
    assert ledger.checkpoint_due(later) is True


def test_production_without_a_signing_key_fails_the_system_check(settings):
    settings.DEBUG = False
    settings.KLAVIYO_CONSENT = {"API_KEY": "pk_abc123", "PUSH_ON_COMMIT": False}
    ids = [m.id for m in checks.run_checks() if m.level >= checks.ERROR]
    assert "klaviyo_consent.E010" in ids
    settings.DEBUG = True
    assert "klaviyo_consent.E010" not in [m.id for m in checks.run_checks()]
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_SIGNING_KEY": "not a key"}
    assert "klaviyo_consent.E011" in [m.id for m in checks.run_checks()]


def test_production_without_a_ledger_secret_is_warned_about(settings):
    # Digests keyed with a SECRET_KEY-derived value all look tampered once SECRET_KEY rotates.
    settings.DEBUG = False
    consent = {"API_KEY": "pk_abc123", "PUSH_ON_COMMIT": False}
    consent["LEDGER_SIGNING_KEY"] = signing.generate_signing_key()
    settings.KLAVIYO_CONSENT = consent
    assert "klaviyo_consent.W011" in [m.id for m in checks.run_checks()]
    settings.KLAVIYO_CONSENT = {**consent, "LEDGER_SECRET": "a long random ledger secret"}
    assert "klaviyo_consent.W011" not in [m.id for m in checks.run_checks()]


def test_a_bad_old_public_key_is_named_by_the_check_and_closes_the_verification_run(
    fake, settings
):
    from klaviyo_consent.exceptions import ConfigurationError
    from klaviyo_consent.models import VerificationRun

    subscribe()
    ledger.checkpoint()
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_VERIFY_KEYS": ["not a key!"]}
    errors = [m for m in checks.run_checks() if m.id == "klaviyo_consent.E011"]
    assert errors and "LEDGER_VERIFY_KEYS" in errors[0].msg and "entry 1" in errors[0].msg
    with pytest.raises(ConfigurationError, match="LEDGER_VERIFY_KEYS"):
        ledger_verify.verify_ledger()
    run = VerificationRun.objects.get()
    assert run.finished_at is not None and run.ok is False and "LEDGER_VERIFY_KEYS" in run.message


# -- receipts --------------------------------------------------------------------------------


@pytest.fixture
def receipt(api, fake) -> dict[str, Any]:
    evidence = Evidence("203.0.113.9", "Mozilla/5.0", "https://shop.example/signup")
    [event] = subscribe("ada@example.com", evidence=evidence)
    subscribe("bob@example.com")
    ledger.checkpoint()
    response = api.get(f"/api/consent/events/{event.pk}/receipt/")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_receipt_verifies_offline_with_the_ledger_public_key(receipt):
    verify_receipt(receipt, public_key())
    assert receipt["subject"]["email"] == "ada@example.com"
    assert receipt["record"]["pii_principal_id"]["email"] == digest("email", "ada@example.com")
    assert receipt["notice"]["consent_text"] == "Yes, email me offers."
    assert receipt["proof"]["tree_size"] == 2
    assert receipt["evidence"]["ip_address"] == "203.0.113.9"
    assert receipt["record"]["evidence"]["ip_address"] == digest("ip_address", "203.0.113.9")


def flip(text: str, position: int = 0) -> str:
    """``text`` with one character changed (a hex or base64 digit, or a letter)."""
    old = text[position]
    new = "0" if old != "0" else "1"
    return text[:position] + new + text[position + 1 :]


@pytest.mark.parametrize(
    ("part", "mutate"),
    [
        ("content", lambda r: r["record"]["collection_method"].update(method="form")),
        ("content", lambda r: r["record"]["purpose"].update(list_id="X")),
        ("content", lambda r: r["record"].update(record_id=r["record"]["record_id"] + 1)),
        ("content", lambda r: r["notice"].update(consent_text=r["notice"]["consent_text"] + " ")),
        ("content", lambda r: r["proof"].update(leaf_hash=flip(r["proof"]["leaf_hash"]))),
        (
            "path",
            lambda r: r["proof"]["inclusion_path"].__setitem__(
                0, flip(r["proof"]["inclusion_path"][0], 5)
            ),
        ),
        ("path", lambda r: r["proof"].update(leaf_index=r["proof"]["leaf_index"] + 1)),
        # The path no longer leads to a changed root: that is the first check to fail.
        (
            "path",
            lambda r: r["proof"]["checkpoint"].update(
                root_hash=flip(r["proof"]["checkpoint"]["root_hash"], 7)
            ),
        ),
        (
            "signature",
            lambda r: r["proof"]["checkpoint"].update(
                signature=flip(r["proof"]["checkpoint"]["signature"], 3)
            ),
        ),
        (
            "signature",
            lambda r: r["proof"]["checkpoint"].update(
                timestamp=flip(r["proof"]["checkpoint"]["timestamp"], 3)
            ),
        ),
    ],
)
def test_a_one_byte_change_to_a_receipt_is_caught(receipt, part, mutate):
    changed = copy.deepcopy(receipt)
    mutate(changed)
    with pytest.raises(ReceiptError) as caught:
        verify_receipt(changed, public_key())
    assert caught.value.part == part


def test_a_receipt_signed_by_another_key_fails_against_the_published_key(receipt, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_SIGNING_KEY": OTHER_KEY}
    with pytest.raises(ReceiptError) as caught:
        verify_receipt(receipt, public_key())
    assert caught.value.part == "signature"


def test_the_offline_verifier_runs_without_django(receipt, tmp_path):
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    blocker = (
        "import sys; sys.modules['django'] = None; "
        "from klaviyo_consent.receipts.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    ok = subprocess.run(
        [sys.executable, "-c", blocker, "verify", str(path), "--public-key", public_key()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "valid"), ok.stderr
    receipt["proof"]["checkpoint"]["root_hash"] = flip(receipt["proof"]["checkpoint"]["root_hash"])
    path.write_text(json.dumps(receipt))
    bad = subprocess.run(
        [sys.executable, "-m", "klaviyo_consent.receipts", "verify", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 1 and "path:" in bad.stderr


def test_a_receipt_before_any_checkpoint_is_a_409(api, fake):
    [event] = subscribe()
    assert api.get(f"/api/consent/events/{event.pk}/receipt/").status_code == 409


def test_all_of_a_persons_receipts_verify_against_one_checkpoint(api, fake):
    events = subscribe("ada@example.com") + subscribe("ada@example.com", text="Other words.")
    subscribe("bob@example.com")
    ledger.checkpoint()
    body = api.get(f"/api/consent/profiles/{events[0].profile_id}/receipts/").json()
    assert [r["record"]["record_id"] for r in body["receipts"]] == [e.pk for e in events]
    for one in body["receipts"]:
        assert one["proof"]["checkpoint"] == body["checkpoint"]
        verify_receipt(one, public_key())


def test_a_persons_receipts_include_the_events_of_a_profile_merged_into_theirs(api, fake):
    from klaviyo_consent.models import Profile
    from klaviyo_consent.services.identity import merge_profiles

    [by_email] = subscribe("ada@example.com")
    [by_phone] = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"sms": {"marketing": True}},
            phone_number="+447400123456",
            consent_text="Yes, text me offers.",
        )
    ).events
    merge_profiles(
        Profile.objects.get(pk=by_email.profile_id), Profile.objects.get(pk=by_phone.profile_id)
    )
    ledger.checkpoint()
    body = api.get(f"/api/consent/profiles/{by_email.profile_id}/receipts/").json()
    assert [r["record"]["record_id"] for r in body["receipts"]] == [by_email.pk, by_phone.pk]


def test_receipts_of_a_large_tree_use_stored_subtrees_and_verify(api, fake, settings):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    events = [subscribe(f"p{i}@example.com")[0] for i in range(600)]
    ledger.checkpoint()
    for event in (events[0], events[300], events[-1]):
        verify_receipt(proofs.receipt(event), public_key())
    assert ledger_verify.verify_ledger().events == 600


# -- PostgreSQL: four writers, one checkpointer at a time ------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_concurrent_writers_yield_one_consistent_tree(fake, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent connections (set DATABASE_URL)")
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(n: int) -> None:
        try:
            for i in range(15):
                subscribe(f"w{n}-{i}@example.com")
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    def checkpointer() -> None:
        try:
            while not done.is_set():
                ledger.checkpoint()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    checkers = [threading.Thread(target=checkpointer) for _ in range(2)]
    for thread in writers + checkers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    done.set()
    for thread in checkers:
        thread.join(timeout=60)
    assert errors == []
    ledger.checkpoint()
    entries = list(LedgerEntry.objects.order_by("leaf_index").values_list("leaf_index", "event_id"))
    assert [index for index, _ in entries] == list(range(60))
    assert sorted(event for _, event in entries) == sorted(
        ConsentEvent.objects.values_list("id", flat=True)
    )
    result = ledger_verify.verify_ledger()
    assert result.events == 60 and result.checkpoints == Checkpoint.objects.count()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_checkpointer_skips_while_another_holds_the_lock(fake):
    if connection.vendor != "postgresql":
        pytest.skip("needs row locks (set DATABASE_URL)")
    from django.db import transaction

    from klaviyo_consent.models import LedgerState

    subscribe()
    LedgerState.objects.get_or_create(pk=1)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            LedgerState.objects.select_for_update().get(pk=1)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    try:
        assert ledger.checkpoint().busy is True
    finally:
        release.set()
        holder.join(10)
    assert ledger.checkpoint().appended == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_committing_after_a_higher_id_is_appended_by_the_next_run(fake, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent transactions (set DATABASE_URL)")
    from django.db import transaction

    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    inserted, release = threading.Event(), threading.Event()
    slow: list[int] = []

    def slow_writer() -> None:
        with transaction.atomic():
            slow.append(subscribe("slow@example.com", text="Slow words.")[0].pk)
            inserted.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    inserted.wait(10)
    [fast] = subscribe("fast@example.com")
    assert fast.pk > slow[0]
    assert ledger.checkpoint().appended == 1
    release.set()
    thread.join(10)
    assert ledger.checkpoint().appended == 1
    order = list(LedgerEntry.objects.order_by("leaf_index").values_list("event_id", flat=True))
    assert order == [fast.pk, slow[0]]
    assert ledger_verify.verify_ledger().events == 2


# -- admin -----------------------------------------------------------------------------------


def test_admin_event_page_shows_proof_state_and_downloads_the_receipt(admin_client, fake):
    [event] = subscribe("ada@example.com")
    page = admin_client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/change/")
    assert b"not yet in the ledger" in page.content
    ledger.checkpoint()
    page = admin_client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/change/")
    assert b"leaf 0 in checkpoint 1" in page.content and b"never verified" in page.content
    download = admin_client.get(f"/admin/klaviyo_consent/consentevent/{event.pk}/receipt/")
    assert download["Content-Disposition"].startswith("attachment")
    verify_receipt(json.loads(download.content), public_key())


def test_admin_profile_page_downloads_every_receipt(admin_client, fake):
    [event] = subscribe("ada@example.com")
    ledger.checkpoint()
    page = admin_client.get(f"/admin/klaviyo_consent/profile/{event.profile_id}/change/")
    assert b"Download all receipts" in page.content
    body = json.loads(
        admin_client.get(f"/admin/klaviyo_consent/profile/{event.profile_id}/receipts/").content
    )
    assert [r["record"]["record_id"] for r in body["receipts"]] == [event.pk]


def test_admin_starts_a_verification_and_shows_its_outcome(admin_client, fake):
    subscribe("ada@example.com")
    ledger.checkpoint()
    listing = admin_client.get("/admin/klaviyo_consent/verificationrun/")
    assert b"Verify the ledger now" in listing.content
    response = admin_client.post("/admin/klaviyo_consent/verificationrun/verify/", follow=True)
    assert b"OK: 1 events, 1 checkpoints" in response.content
    assert VerificationRun.objects.get().ok is True


def test_connecting_as_the_tables_owner_is_warned_about_on_postgresql(db):
    from klaviyo_consent.checks import check_table_owner

    ids = [m.id for m in check_table_owner(databases=["default"])]
    if connection.vendor == "postgresql":  # the test suite connects as the superuser postgres
        assert ids == ["klaviyo_consent.W010"]
    else:
        assert ids == []


def test_the_sync_worker_makes_a_checkpoint_when_events_were_added(fake, monkeypatch, capsys):
    from klaviyo_consent.management.commands import klaviyo_consent_sync

    class Stop(Exception):
        pass

    def stop(seconds: float) -> None:
        raise Stop

    monkeypatch.setattr(klaviyo_consent_sync.time, "sleep", stop)
    subscribe("a@example.com")
    with pytest.raises(Stop):
        call_command("klaviyo_consent_sync", "--loop")
    assert Checkpoint.objects.get().tree_size == 1
    assert "checkpoint 1 root" in capsys.readouterr().out
    with pytest.raises(Stop):
        call_command("klaviyo_consent_sync", "--loop")
    assert Checkpoint.objects.count() == 1  # nothing added, interval not over


def test_the_checkpointer_searches_only_above_its_commit_horizon_and_verify_names_a_straggler(
    fake, settings
):
    settings.KLAVIYO_CONSENT = {**settings.KLAVIYO_CONSENT, "LEDGER_COMMIT_HORIZON": 600}
    [first] = subscribe("a@example.com")

    def event_with_id(pk: int) -> ConsentEvent:
        event = ConsentEvent(
            pk=pk,
            profile=first.profile,
            email=first.email,
            channel="email",
            purpose="marketing",
            consent="SUBSCRIBED",
        )
        return ConsentEvent.objects.append([event])[0]

    t0 = timezone.now()
    top = event_with_id(first.pk + 100)
    assert ledger.checkpoint(now=t0).appended == 2
    event_with_id(first.pk + 200)
    assert ledger.checkpoint(now=t0 + timedelta(seconds=700)).appended == 1  # horizon: top
    # An event inserted with an id below the horizon, far too late: never searched for.
    straggler = event_with_id(top.pk - 50)
    assert ledger.checkpoint(now=t0 + timedelta(seconds=800)).appended == 0
    with pytest.raises(LedgerMismatch, match=f"Event {straggler.pk} is not in the ledger"):
        ledger_verify.verify_ledger()


def test_a_receipt_of_an_event_recorded_without_consent_text_verifies(api, fake):
    # Imports without text, suppressions and inbound events hold no words: their receipt
    # carries an empty text and no hash, and must still verify.
    [event] = subscribe("ada@example.com", text="")
    ledger.checkpoint()
    response = api.get(f"/api/consent/events/{event.pk}/receipt/")
    assert response.status_code == 200, response.content
    verify_receipt(response.json(), public_key())


def test_the_offline_verifier_refuses_to_call_nothing_valid(tmp_path):
    for content in ('{"receipts": []}', "[]", "[1, 2]", '"a string"'):
        path = tmp_path / "receipt.json"
        path.write_text(content)
        result = subprocess.run(
            [sys.executable, "-m", "klaviyo_consent.receipts", "verify", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 1 and result.stdout == "", (content, result.stderr)
        assert result.stderr.startswith("invalid: content:"), (content, result.stderr)


def test_the_external_id_named_at_the_event_enters_the_leaf_and_the_receipt(api, fake):
    # Issue 10: external id is one of the identifiers the leaf holds as a keyed digest; the
    # receipt names the one given at the event, whatever the profile holds later.
    [event] = subscribe("ada@example.com", external_id="cust-42")
    ledger.checkpoint()
    response = api.get(f"/api/consent/events/{event.pk}/receipt/")
    assert response.status_code == 200, response.content
    receipt = response.json()
    assert receipt["subject"]["external_id"] == "cust-42"
    assert receipt["record"]["pii_principal_id"]["external_id"] == digest("external_id", "cust-42")
    verify_receipt(receipt, public_key())
    assert ledger_verify.verify_ledger().events == 1
