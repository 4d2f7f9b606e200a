"""The streamed import: rejects kept apart, idempotent, one push, history not the present."""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from klaviyo_consent.models import ConsentEvent, Delivery, IdentityEvent, Profile
from klaviyo_consent.services.ledger import ConsentRequest, latest_events, record_consent
from klaviyo_consent.services.ledger_state import ledger_for
from klaviyo_consent.services.sync import sync
from tests.helpers import SUBSCRIBE_JOBS, post_to_fake, profile_entry, subscribe_body

pytestmark = pytest.mark.django_db

HEADER = "email,phone_number,email_marketing,sms_marketing,consented_at,consent_text\n"


def write(tmp_path: Path, text: str, name: str = "old-crm.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + text, encoding="utf-8")
    return path


def run(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("klaviyo_consent_import", str(path), "--no-progress", *args, stdout=out)
    return out.getvalue()


def pushes(callbacks) -> int:
    return sum(1 for callback in callbacks if callback.__name__ == "enqueue_push")


GOOD = "a@example.org,,yes,no,2024-03-01T10:00:00Z,Footer\n"
BAD_EMAIL = "not-an-email,,yes,no,2024-03-01T10:00:00Z,Footer\n"
GOOD_2 = "b@example.org,+447400123456,yes,yes,2024-03-02T10:00:00Z,Checkout\n"


# --- rejects -------------------------------------------------------------------------------------


def test_bad_rows_go_to_the_rejects_file_with_line_and_reason_and_good_rows_are_kept(tmp_path):
    path = write(tmp_path, GOOD + BAD_EMAIL + GOOD_2 + "c@example.org,,maybe,no,,x\n")
    rejects = tmp_path / "rejects.csv"
    summary = run(path, "--historical-import", "--rejects", str(rejects))
    assert sorted(Profile.objects.values_list("email", flat=True)) == [
        "a@example.org",
        "b@example.org",
    ]
    rows = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert [(r["line"], r["email"], r["reason"].split(":")[0]) for r in rows] == [
        ("3", "not-an-email", "profile.email"),
        ("5", "c@example.org", "email_marketing"),
    ]
    assert "4 row(s) read; recorded 2 (3 event(s))" in summary
    assert "rejected 2." in summary


def test_a_rejected_row_is_written_as_read_so_the_fixed_file_imports_again(tmp_path):
    path = write(tmp_path, "x@example.org,+44 7400 123456,yes,yes,,=1+1\n")
    rejects = tmp_path / "rejects.csv"
    run(path, "--historical-import", "--rejects", str(rejects))
    [row] = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert (row["phone_number"], row["consent_text"]) == ("+44 7400 123456", "=1+1")
    assert row["reason"].startswith("consented_at: historical_import needs consented_at")


def test_a_row_naming_two_people_is_rejected_and_the_rest_kept(tmp_path):
    record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            subscriptions={"sms": {"marketing": True}},
            email="ada@example.org",
            phone_number="+447400123456",
        )
    )
    path = write(
        tmp_path,
        "grace@example.org,,yes,no,,x\n"
        "mallory@example.org,+447400123456,yes,no,,x\n"  # ada's number with another email
        "grace@example.org,+447400123457,no,yes,,x\n",  # adds a number to grace, row 2
    )
    rejects = tmp_path / "rejects.csv"
    run(path, "--rejects", str(rejects))
    [row] = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert (row["line"], row["reason"].split(":")[0]) == ("3", "profile.email")
    grace = Profile.objects.get(email="grace@example.org")
    assert grace.phone_number == "+447400123457"
    assert not Profile.objects.filter(email="mallory@example.org").exists()
    assert IdentityEvent.objects.filter(profile=grace, field="phone_number").count() == 1


def test_all_or_nothing_names_the_first_bad_line_and_records_nothing(tmp_path):
    path = write(tmp_path, GOOD + GOOD_2 + BAD_EMAIL)
    with pytest.raises(CommandError, match=r"line 4: profile.email: .*Nothing was imported"):
        run(path, "--historical-import", "--all-or-nothing", "--batch-size", "1")
    assert not ConsentEvent.objects.exists()
    assert not Profile.objects.exists()


def test_all_or_nothing_names_an_identity_conflict_before_a_later_bad_value(tmp_path):
    path = write(
        tmp_path,
        "grace@example.org,+447400123456,yes,no,,x\n"
        "grace@example.org,+447400123457,yes,no,,x\n"  # line 3: grace has another number
        "not-an-email,,yes,no,,x\n",
    )
    with pytest.raises(CommandError, match=r"line 3: profile.phone_number"):
        run(path, "--all-or-nothing")
    assert not Profile.objects.exists()


def test_by_default_good_rows_are_kept_and_bad_ones_go_to_a_rejects_file_beside_it(tmp_path):
    path = write(tmp_path, GOOD + BAD_EMAIL + GOOD_2)
    summary = run(path, "--historical-import")
    assert "3 row(s) read; recorded 2" in summary and "rejected 1." in summary
    rejects = path.with_name(f"{path.stem}.rejects.csv")
    rows = list(csv.DictReader(rejects.open(encoding="utf-8")))
    assert [(row["line"], row["reason"].split(":")[0]) for row in rows] == [("3", "profile.email")]
    assert Profile.objects.count() == 2


def test_a_fixed_rejects_file_imports_as_it_is(tmp_path):
    path = write(tmp_path, GOOD + BAD_EMAIL)
    run(path, "--historical-import")
    rejects = path.with_name(f"{path.stem}.rejects.csv")
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(rejects.read_text().replace("not-an-email", "c@example.org"))
    summary = run(fixed, "--historical-import")
    assert "recorded 1" in summary and "rejected 0." in summary
    assert Profile.objects.filter(email="c@example.org").exists()


def test_a_clean_import_leaves_no_rejects_file(tmp_path):
    path = write(tmp_path, GOOD + GOOD_2)
    run(path, "--historical-import")
    assert not path.with_name(f"{path.stem}.rejects.csv").exists()


def test_rejects_and_all_or_nothing_cannot_be_combined(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(CommandError, match="not allowed with argument"):
        run(path, "--rejects", str(tmp_path / "r.csv"), "--all-or-nothing")


def test_a_dry_run_reports_what_it_would_do_and_records_nothing(tmp_path):
    path = write(tmp_path, GOOD + BAD_EMAIL + GOOD_2)
    rejects = tmp_path / "rejects.csv"
    summary = run(path, "--historical-import", "--dry-run", "--rejects", str(rejects))
    assert "3 row(s) read; would record 2 (3 event(s))" in summary
    assert "rejected 1." in summary and "Dry run: nothing was recorded." in summary
    assert not Profile.objects.exists()
    assert not ConsentEvent.objects.exists()
    assert len(list(csv.DictReader(rejects.open(encoding="utf-8")))) == 1


# --- idempotency ----------------------------------------------------------------------------------


def test_the_same_file_twice_records_nothing_new_the_second_time(tmp_path):
    path = write(tmp_path, GOOD + GOOD_2)
    run(path, "--historical-import", "--batch-size", "1")
    before = ConsentEvent.objects.count()
    summary = run(path, "--historical-import")
    assert ConsentEvent.objects.count() == before == 3
    assert "recorded 0 (0 event(s)); skipped 2 already recorded" in summary


def test_the_same_rows_under_another_file_name_are_already_recorded(tmp_path):
    run(write(tmp_path, GOOD, "first.csv"), "--historical-import")
    summary = run(write(tmp_path, GOOD, "copy.csv"), "--historical-import")
    assert ConsentEvent.objects.count() == 1
    assert "skipped 1 already recorded" in summary


def test_a_row_repeated_in_one_file_is_one_event(tmp_path):
    repeated = GOOD + GOOD.replace("a@example.org", "A@Example.org ")
    summary = run(write(tmp_path, repeated + GOOD_2), "--historical-import")
    assert ConsentEvent.objects.filter(profile__email="a@example.org").count() == 1
    assert "recorded 2 (3 event(s)); skipped 1 already recorded" in summary


def test_another_list_or_another_date_is_another_consent(tmp_path):
    run(write(tmp_path, GOOD), "--historical-import")
    run(write(tmp_path, GOOD), "--historical-import", "--list-id", "Single")
    run(write(tmp_path, GOOD.replace("2024-03-01", "2024-03-05")), "--historical-import")
    assert ConsentEvent.objects.count() == 3


def test_an_undated_file_twice_records_nothing_new_but_a_later_withdrawal_makes_it_new(tmp_path):
    path = write(tmp_path, "a@example.org,,yes,no,,Footer\n")
    run(path)
    assert "skipped 1 already recorded" in run(path)
    assert ConsentEvent.objects.count() == 1
    record_consent(
        ConsentRequest(
            consent="UNSUBSCRIBED",
            subscriptions={"email": {"marketing": True}},
            email="a@example.org",
        )
    )
    assert "recorded 1 (1 event(s))" in run(path)
    assert ConsentEvent.objects.count() == 3


# --- one push -------------------------------------------------------------------------------------


def test_a_many_batch_import_schedules_one_push(tmp_path, django_capture_on_commit_callbacks):
    rows = "".join(f"p{n}@example.org,,yes,no,2024-03-01T10:00:00Z,x\n" for n in range(30))
    with django_capture_on_commit_callbacks() as callbacks:
        run(
            write(tmp_path, rows),
            "--historical-import",
            "--rejects",
            str(tmp_path / "r.csv"),
            "--batch-size",
            "7",
        )
    assert ConsentEvent.objects.count() == 30
    assert pushes(callbacks) == 1


def test_an_all_or_nothing_import_schedules_one_push(tmp_path, django_capture_on_commit_callbacks):
    rows = "".join(f"p{n}@example.org,,yes,no,,x\n" for n in range(30))
    with django_capture_on_commit_callbacks() as callbacks:
        run(write(tmp_path, rows), "--batch-size", "7")
    assert pushes(callbacks) == 1


def test_an_import_that_records_nothing_schedules_no_push(
    tmp_path, django_capture_on_commit_callbacks
):
    path = write(tmp_path, GOOD)
    run(path, "--historical-import")
    with django_capture_on_commit_callbacks() as callbacks:
        run(path, "--historical-import")
    assert pushes(callbacks) == 0


@pytest.mark.django_db(transaction=True)
def test_an_import_committing_many_batches_enqueues_one_push(tmp_path, monkeypatch):
    enqueued: list[str] = []
    monkeypatch.setattr("klaviyo_consent.receivers.enqueue_push", lambda: enqueued.append("push"))
    rows = "".join(f"p{n}@example.org,,yes,no,,x\n" for n in range(25))
    run(write(tmp_path, rows), "--rejects", str(tmp_path / "r.csv"), "--batch-size", "5")
    assert Delivery.objects.filter(status="pending").count() == 25
    assert enqueued == ["push"]


# --- history is not the present ------------------------------------------------------------------


def unsubscribe_now(email: str) -> None:
    record_consent(
        ConsentRequest(
            consent="UNSUBSCRIBED", subscriptions={"email": {"marketing": True}}, email=email
        )
    )


def test_an_old_opt_in_after_a_later_opt_out_is_history_and_never_pushed(tmp_path, fake):
    unsubscribe_now("a@example.org")
    sync()
    summary = run(write(tmp_path, GOOD), "--historical-import")
    imported = ConsentEvent.objects.select_related("delivery").get(method="import")
    assert imported.delivery.status == "history"
    assert "older than the ledger's latest event" in imported.delivery.reason
    assert "1 of them as history (not pushed)" in summary
    jobs_before = list(fake.jobs)
    sync()
    assert fake.jobs == jobs_before  # nothing sent
    leaf = ledger_for(imported.profile)["email"]["marketing"]
    assert leaf["consent"] == "UNSUBSCRIBED"


def test_a_consent_newer_than_the_ledger_is_pushed_as_a_historical_import(tmp_path, fake):
    run(write(tmp_path, GOOD.replace("2024-03-01", "2020-01-01")), "--historical-import")
    run(write(tmp_path, GOOD, "newer.csv"), "--historical-import", "--list-id", "Single")
    statuses = list(
        ConsentEvent.objects.order_by("id").values_list("consented_at__year", "delivery__status")
    )
    assert statuses == [(2020, "pending"), (2024, "pending")]
    sync()
    [job] = [j for j in fake.jobs if j["list_id"] == "Single"]
    assert job["historical_import"] is True
    call_command("klaviyo_consent_pull", "--profile", str(Profile.objects.get().pk))
    mirror = Profile.objects.get().subscriptions["email"]["marketing"]
    assert mirror["consent_timestamp"].startswith("2024-03-01T10:00:00")


def test_within_one_file_an_older_row_after_a_newer_one_is_history(tmp_path):
    rows = GOOD + GOOD.replace("2024-03-01", "2021-06-01")
    run(write(tmp_path, rows), "--historical-import")
    assert list(
        ConsentEvent.objects.order_by("id").values_list("consented_at__year", "delivery__status")
    ) == [(2024, "pending"), (2021, "history")]


def test_history_does_not_become_the_latest_event_of_its_key(tmp_path):
    unsubscribe_now("a@example.org")
    run(write(tmp_path, GOOD), "--historical-import")
    profile = Profile.objects.get()
    [latest] = latest_events([profile.pk])[profile.pk]
    assert latest.consent == "UNSUBSCRIBED"


# --- the command's output ------------------------------------------------------------------------


def test_the_progress_bar_counts_rows_on_stderr(tmp_path):
    err = StringIO()
    call_command(
        "klaviyo_consent_import",
        str(write(tmp_path, GOOD + GOOD_2)),
        "--historical-import",
        stdout=StringIO(),
        stderr=err,
    )
    assert "Importing old-crm.csv: 2 rows" in err.getvalue()


def test_a_value_longer_than_its_column_is_rejected_naming_the_column(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(
        "email,email_marketing,method_detail\n"
        f"a@example.org,yes,{'x' * 256}\nb@example.org,yes,ok\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    run(path, "--rejects", str(rejects))
    [row] = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert row["reason"].startswith("method_detail: At most 255 characters")
    assert Profile.objects.get().email == "b@example.org"


def test_a_broken_file_with_rejects_names_the_line_and_says_a_rerun_is_safe(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_bytes(
        b"email,email_marketing\n"
        + b"".join(f"p{n}@example.org,yes\n".encode() for n in range(5))
        + b"zo\xeb@example.org,yes\n"
    )
    with pytest.raises(CommandError, match=r"line 7: byte 0xeb .* run the import again"):
        run(path, "--rejects", str(tmp_path / "r.csv"), "--batch-size", "2")


# --- what Klaviyo's subscribe job accepts (the fake, as the facts file says) ----------------------


@pytest.mark.parametrize(
    "historical_import, consented_at, detail",
    [
        (False, "2024-03-01T10:00:00+00:00", "only be given when historical_import is true"),
        (True, None, "consented_at is required when historical_import is true"),
        (True, "2999-01-01T00:00:00+00:00", "consented_at must be in the past"),
    ],
)
def test_the_fake_refuses_consented_at_against_klaviyos_historical_import_rules(
    fake, historical_import, consented_at, detail
):
    answer = post_to_fake(
        fake,
        SUBSCRIBE_JOBS,
        subscribe_body(
            [profile_entry("a@example.org", consented_at=consented_at)],
            historical_import=historical_import,
        ),
    )
    assert answer.status == 400
    assert detail in answer.body.decode()


def test_the_fake_accepts_a_past_consented_at_with_historical_import(fake):
    answer = post_to_fake(
        fake,
        SUBSCRIBE_JOBS,
        subscribe_body(
            [profile_entry("a@example.org", consented_at="2024-03-01T10:00:00+00:00")],
            historical_import=True,
        ),
    )
    assert answer.status == 202
