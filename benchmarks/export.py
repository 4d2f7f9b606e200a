"""Issue 11: exporting a large ledger (default 1,000,000 events), against the database's own dump.

In one run on one database:
  * seed: ``ledger.seed`` (bulk-inserted events with profiles, versioned texts, evidence and
    outbox rows), half the deliveries given an ``applied`` verdict, and one ledger entry per
    event bulk-inserted (leaf hash and identifier digests of real length; their values are not
    checked by an export, so the checkpointer's two minutes are skipped);
  * export: ``manage.py klaviyo_consent_export --format F --output /dev/null`` (its count, its
    progress bar on a non-terminal standard error, the keyset chunks, the CSV/JSON writing), in
    a child process per format, so its peak RSS (``ru_maxrss``) is the export's alone;
  * baseline: the same SELECT (``services.export.select``: the same columns and joins, in id
    order) dumped by the database itself: PostgreSQL ``COPY (…) TO STDOUT (FORMAT csv)`` read
    through psycopg and discarded; on SQLite, the ``sqlite3`` shell's ``-csv`` output to
    /dev/null. ratio = export rows/s ÷ baseline rows/s.

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


def seed_ledger(events: int, batch: int = 20_000) -> None:
    """Events (``ledger.seed``), verdicts on half of them, and a ledger entry for each."""
    import ledger
    from django.db import transaction
    from django.utils import timezone

    from klaviyo_consent.models import ConsentEvent, Delivery, LedgerEntry

    ledger.seed(events, batch=batch)
    now = timezone.now()
    ids = list(ConsentEvent.objects.order_by("id").values_list("id", flat=True)[:1])
    first = ids[0]
    Delivery.objects.filter(event_id__lt=first + events // 2).update(
        status="applied", verified_at=now
    )
    fake = hashlib.sha256(b"bench").hexdigest()
    digests = {
        name: fake for name in ("email", "ip_address", "user_agent", "page_url", "recorded_by")
    }
    for start in range(0, events, batch):
        with transaction.atomic():
            LedgerEntry.objects.bulk_create(
                [
                    LedgerEntry(
                        leaf_index=i,
                        event_id=first + i,
                        leaf_hash=hashlib.sha256(str(i).encode()).hexdigest(),
                        digests=digests,
                        sequenced_at=now,
                    )
                    for i in range(start, min(start + batch, events))
                ]
            )


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
    """The database's own dump of the export's SELECT: rows/s."""
    from django.db import connection

    from klaviyo_consent.services import export

    sql, params = export.select(export.ExportFilters()).query.sql_with_params()
    assert not params
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        raw = connection.connection
        started = time.perf_counter()
        size = 0
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
                for block in copy:
                    size += len(block)
        seconds = time.perf_counter() - started
        what = "PostgreSQL COPY ... TO STDOUT (FORMAT csv)"
    else:
        path = connection.settings_dict["NAME"]
        started = time.perf_counter()
        with open(os.devnull, "w") as sink:
            subprocess.run(["sqlite3", "-csv", str(path), sql], stdout=sink, check=True)
        seconds = time.perf_counter() - started
        size = None
        what = "sqlite3 shell -csv"
    return {"what": what, "seconds": seconds, "per_second": rows / seconds, "bytes": size}


def main() -> None:
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--database") + 1], sys.argv[sys.argv.index("--child") + 1])
        return
    parser = common.arguments(__doc__.splitlines()[0], events=1_000_000)
    parser.add_argument("--formats", default="csv,jsonl")
    args = parser.parse_args()
    common.setup(args.database)
    info = common.machine()
    result: dict = {"machine": info, "events": args.events}
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
