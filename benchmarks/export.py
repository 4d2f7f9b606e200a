"""Issue 11: exporting a large ledger (default 1,000,000 events), against the database's own dump.

In one run on one database:
  * seed: events with profiles, versioned texts, evidence and outbox rows (half of them
    ``applied``), and one ledger entry per event, bulk-inserted by ``INSERT … SELECT`` (leaf
    hashes and digests of real length; an export does not check their values, so the
    checkpointer's minutes are skipped);
  * export: ``manage.py klaviyo_consent_export --format F --output /dev/null`` (its count, its
    progress bar on a non-terminal standard error, the keyset chunks, the CSV/JSON writing), in
    a child process per format, so its peak RSS (``ru_maxrss``) is the export's alone;
  * baseline: the same SELECT (``services.export.select``: the same columns and joins, in id
    order) dumped by the database itself: PostgreSQL ``COPY (…) TO STDOUT (FORMAT csv)`` read
    through psycopg and discarded; on SQLite (which has no COPY), the same SELECT fetched
    through the sqlite3 driver and dropped. ratio = export rows/s ÷ baseline rows/s.

    .venv/bin/python benchmarks/export.py [--events N] [--database sqlite|postgres]
        [--formats csv,jsonl]
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time

import common


def seed_ledger(events: int) -> None:
    """``events`` email consents, one profile each, with outbox rows (half ``applied``) and a
    ledger entry each, written by ``INSERT … SELECT`` over a generated series: a million rows in
    seconds, where ORM batches took minutes on this shared machine. Values as ``ledger.seed``
    writes them (three versioned texts, evidence); leaf hashes and digests are placeholders of
    real length: an export copies them, it does not check them."""
    from django.db import connection, transaction
    from django.utils import timezone

    from klaviyo_consent.models import ConsentText

    texts = [
        ConsentText.objects.create(key="bench", version=v, body=f"Bench consent words v{v}.")
        for v in (1, 2, 3)
    ]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    digests = json.dumps(
        {
            name: hashlib.sha256(name.encode()).hexdigest()
            for name in ("email", "ip_address", "user_agent", "page_url", "recorded_by")
        }
    )
    if connection.vendor == "postgresql":
        series = "generate_series(1, %s) AS s(n)"
        leaf = "lpad(to_hex(n), 64, '0')"
        false = "false"
    else:
        series = (
            "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %s) "
            "SELECT n FROM s)"
        )
        leaf = "printf('%%064x', n)"
        false = "0"
    text = "CASE n %% 3 WHEN 0 THEN {} WHEN 1 THEN {} ELSE {} END"
    bodies = text.format(*(f"'{t.body}'" for t in texts))
    ids = text.format(*(t.pk for t in texts))
    statements = [
        (
            "INSERT INTO klaviyo_consent_profile (id, email, klaviyo_id, subscriptions, "
            f"created_at, updated_at) SELECT n, 'p' || n || '@bench.example', '', '{{}}', "
            f"%s, %s FROM {series}",
            [now, now, events],
        ),
        (
            "INSERT INTO klaviyo_consent_consentevent (id, profile_id, "
            "channel, purpose, consent, method, method_detail, custom_source, consent_text, "
            "consent_text_version_id, recorded_at, list_id, historical_import, "
            "klaviyo_data, recorded_by_label) SELECT n, n, "
            "'email', 'marketing', 'SUBSCRIBED', 'form', '', "
            f"'footer', {bodies}, {ids}, %s, '', {false}, '{{}}', '' FROM {series}",
            [now, events],
        ),
        (
            # The events' erasable raw values live apart from them (docs/erasure.md).
            "INSERT INTO klaviyo_consent_eventpersonaldata (event_id, email, phone_number, "
            "ip_address, user_agent, page_url) SELECT n, 'p' || n || '@bench.example', '', "
            "'203.0.113.7', 'Mozilla/5.0 (bench)', 'https://shop.example/signup' "
            f"FROM {series}",
            [events],
        ),
        (
            "INSERT INTO klaviyo_consent_delivery (event_id, profile_id, channel, purpose, "
            "status, reason, errors, attempts, deferrals, next_attempt_at, lease_token, "
            "verified_at, verify_attempts, history, updated_at) SELECT n, n, 'email', "
            "'marketing', CASE WHEN n <= %s THEN 'applied' ELSE 'pending' END, '', '[]', 0, 0, "
            "%s, '', CASE WHEN n <= %s THEN %s END, 0, '[]', %s "
            f"FROM {series}",
            [events // 2, now, events // 2, now, now, events],
        ),
        (
            "INSERT INTO klaviyo_consent_ledgerentry (leaf_index, event_id, leaf_hash, digests, "
            f"sequenced_at) SELECT n - 1, n, {leaf}, %s, %s FROM {series}",
            [digests, now, events],
        ),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def child(database: str, fmt: str) -> None:
    """Run the export command once in this process and print its figures as JSON."""
    common.setup(database, flush=False)
    from django.core.management import call_command

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(os.devnull, "w") as sink:
        started = time.perf_counter()
        call_command(
            "klaviyo_consent_export", format=fmt, output=os.devnull, stdout=sink, stderr=sink
        )
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_mb": peak / 1024, "rss_before_mb": before / 1024}))


def baseline(rows: int) -> dict:
    """The export's own SELECT (``services.export.select``) dumped without our formatting:
    PostgreSQL ``COPY (…) TO STDOUT (FORMAT csv)`` read through psycopg; on SQLite (no COPY)
    the rows fetched through the sqlite3 driver, 5,000 at a time, and dropped."""
    from django.db import connection

    from klaviyo_consent.services import export

    sql, params = export.select(export.ExportFilters()).query.sql_with_params()
    connection.ensure_connection()
    raw = connection.connection
    started = time.perf_counter()
    size = 0
    if connection.vendor == "postgresql":
        import psycopg

        literal = psycopg.ClientCursor(raw).mogrify(sql, params)
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY ({literal}) TO STDOUT (FORMAT csv)") as copy,
        ):
            for block in copy:
                size += len(block)
        what = "PostgreSQL COPY (SELECT …) TO STDOUT (FORMAT csv)"
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            while chunk := cursor.fetchmany(5000):
                size += len(chunk)
        what = "sqlite3 driver fetch of the same SELECT"
    seconds = time.perf_counter() - started
    return {"what": what, "seconds": seconds, "per_second": rows / seconds, "bytes": size}


def main() -> None:
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--database") + 1], sys.argv[sys.argv.index("--child") + 1])
        return
    parser = common.arguments(__doc__.splitlines()[0], events=1_000_000)
    parser.add_argument("--formats", default="csv,jsonl")
    parser.add_argument(
        "--keep", action="store_true", help="PostgreSQL: reuse a database seeded with --events"
    )
    args = parser.parse_args()
    common.setup(args.database, flush=not args.keep)
    info = common.machine()
    result: dict = {"machine": info, "events": args.events}
    from klaviyo_consent.models import ConsentEvent, LedgerEntry

    seeded = ConsentEvent.objects.count() == LedgerEntry.objects.count() == args.events
    if not (args.keep and seeded):
        if args.keep:
            from django.core.management import call_command

            call_command("flush", verbosity=0, interactive=False)
        with common.timer() as t:
            seed_ledger(args.events)
        result["seed_seconds"] = t["seconds"]
    common.analyze()

    from django.db import connection

    connection.close()  # the children read a quiet database
    for fmt in args.formats.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--child", fmt, "--database", args.database],
            env=os.environ,
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["per_second"] = args.events / figures["seconds"]
        result[fmt] = figures
    result["baseline"] = baseline(args.events)
    for fmt in args.formats.split(","):
        result[fmt]["ratio"] = result[fmt]["per_second"] / result["baseline"]["per_second"]

    cells = " | ".join(
        f"{fmt}: {result[fmt]['per_second']:,.0f} rows/s, {result[fmt]['rss_mb']:.0f} MB, "
        f"ratio {result[fmt]['ratio']:.2f}"
        for fmt in args.formats.split(",")
    )
    row = (
        f"| {info['date']} | {common.database_label(info)} | {args.events:,} | {cells} | "
        f"{result['baseline']['what']}: {result['baseline']['per_second']:,.0f} rows/s |"
    )
    common.emit("export", row, result)


if __name__ == "__main__":
    main()
