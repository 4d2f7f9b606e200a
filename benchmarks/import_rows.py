"""Issue 11: a historical import of 1,000,000 CSV rows: wall time and peak RSS, then the same
file a second time (nothing new to record), and the code before issue 11 as the baseline.

    .venv/bin/python benchmarks/import_rows.py [--rows 1000000] [--database sqlite|postgres]
        [--baseline-rows 20000] [--skip-baseline] [--batch-size 1000] [--profile FILE]
        [--baseline-tree DIR]

The file: one row per person, every row dated (``--historical-import``), 80 % email-only
(email.marketing), 20 % email + US mobile number (email.marketing and sms.marketing), four
consent texts, ``consented_at`` spread over 2019-2025 in ISO 8601. Each measured import runs
in a child process (``klaviyo_consent_import FILE --historical-import --rejects R
--no-progress``) so its peak RSS (``ru_maxrss``) is its own. Before the second run the
planner's statistics are refreshed (``ANALYZE``, not timed), as autovacuum would have.
``PUSH_ON_COMMIT`` is off for every run: the push (one for the whole import) is
``push_throughput.py``'s subject, and the old code's per-row pushes would measure Klaviyo, not
the import.

The baseline is ``klaviyo_consent_import`` as it was at commit ``BASELINE_COMMIT`` (one
``record_consent`` per row, all in one transaction), read with ``git show`` and run on the
first ``--baseline-rows`` rows of the same file, in the same run, on an emptied database.

``--baseline-tree DIR`` adds a second baseline: the whole file imported by another checkout of
this project (e.g. ``git worktree add DIR main``: the import before a change), its own
``benchmarks/import_rows.py --child`` run in DIR, on a fresh database, in the same run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    ROOT,
    analyze,
    arguments,
    database_label,
    emit,
    machine,
    setup,
)

#: main before issue 11's import work: its klaviyo_consent_import is the baseline.
BASELINE_COMMIT = "8694e30"

TEXTS = (
    "Yes, email me offers.",
    "Sign me up for the newsletter.",
    "Yes, text me offers. Reply STOP to cancel.",
    "I agree to receive marketing from the shop.",
)
HEADER = (
    "email",
    "phone_number",
    "email_marketing",
    "sms_marketing",
    "consented_at",
    "consent_text",
)


def write_csv(path: Path, rows: int) -> None:
    """``rows`` distinct people, as described in the module docstring; streamed to disk."""
    start = datetime(2019, 1, 1, tzinfo=UTC)
    step = (datetime(2025, 12, 31, tzinfo=UTC) - start) / max(rows, 1)
    with path.open("w", encoding="utf-8", newline="") as file:
        out = csv.writer(file)
        out.writerow(HEADER)
        for i in range(rows):
            moment = (start + step * i).strftime("%Y-%m-%dT%H:%M:%SZ")
            text = TEXTS[i % len(TEXTS)]
            email = f"person{i}@shop{i % 97}.example.com"
            if i % 5 == 0:
                out.writerow((email, f"+1212{2000000 + i:07d}", "yes", "yes", moment, text))
            else:
                out.writerow((email, "", "yes", "no", moment, text))


def child(kind: str, csv_path: str, database: str, batch_size: int, profile: str) -> None:
    """Run one import in this (fresh) process and print its figures as JSON."""
    setup(database, flush=False)  # migrates a new database; the second run finds the first's
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    from klaviyo_consent.models import ConsentEvent

    consent = {**settings.KLAVIYO_CONSENT, "PUSH_ON_COMMIT": False}
    if kind == "second":
        # Statistics of the first run's million rows, as PostgreSQL's autovacuum takes them
        # within a minute (the benchmark server runs with autovacuum off); not timed.
        analyze()
    out_dir = Path(csv_path).parent
    args = [csv_path, "--historical-import"]
    if kind == "old":
        command = _old_command()
    else:
        command = "klaviyo_consent_import"
        args += ["--rejects", str(out_dir / f"rejects-{kind}.csv"), "--no-progress"]
        args += ["--batch-size", str(batch_size)]
    with override_settings(KLAVIYO_CONSENT=consent):
        started = time.perf_counter()
        if profile:
            import cProfile

            cProfile.runctx("call_command(command, *args)", globals(), locals(), filename=profile)
        else:
            call_command(command, *args)
        seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                # This process's CPU (the machine is shared: wall time includes waiting for a
                # core); PostgreSQL's server CPU is not in it.
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "load_average": os.getloadavg()[0],
                "peak_rss_mb": usage.ru_maxrss / 1024,
                "events": ConsentEvent.objects.count(),
            }
        )
    )


def _old_command():
    source = subprocess.run(
        [
            "git",
            "show",
            f"{BASELINE_COMMIT}:klaviyo_consent/management/commands/klaviyo_consent_import.py",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="kc-old-import-")) / "old_import.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_import", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Command()


def fresh_database(args, folder: Path, name: str) -> dict[str, str]:
    """Environment for children using a new, empty database ``name`` (append-only tables
    cannot be flushed once they hold events)."""
    if args.database == "sqlite":
        return {"BENCH_SQLITE_PATH": str(folder / f"{name}.sqlite3")}
    import psycopg

    base = os.environ.get("BENCH_PG_NAME", "bench")
    full = f"{base}_{name}"
    conninfo = (
        f"host={os.environ.get('BENCH_PG_HOST', '127.0.0.1')} "
        f"port={os.environ.get('BENCH_PG_PORT', '5432')} "
        f"user={os.environ.get('BENCH_PG_USER', 'postgres')} dbname=postgres"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{full}"')
        conn.execute(f'CREATE DATABASE "{full}"')
    return {"BENCH_PG_NAME": full}


def measure(kind: str, csv_path: Path, args, env_extra: dict[str, str], tree: str = "") -> dict:
    """Run one import (``kind``) in a child process, by this tree's code or ``tree``'s."""
    env = {**os.environ, **env_extra}
    script = str(Path(tree).resolve() / "benchmarks" / "import_rows.py") if tree else __file__
    answer = subprocess.run(
        [
            sys.executable,
            script,
            "--child",
            kind,
            "--file",
            str(csv_path),
            "--database",
            args.database,
            "--batch-size",
            str(args.batch_size),
            "--profile",
            args.profile if kind == "first" else "",
        ],
        env=env,
        cwd=str(Path(script).parent.parent),
        capture_output=True,
        text=True,
    )
    if answer.returncode:
        raise SystemExit(f"{kind} run failed:\n{answer.stderr[-3000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], events=1_000_000)
    parser.add_argument("--rows", type=int, default=None, help="rows in the file (= --events)")
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--profile", default="")
    parser.add_argument("--baseline-tree", default="", help="a checkout to compare with")
    parser.add_argument("--child", default="")
    parser.add_argument("--file", default="")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file, args.database, args.batch_size, args.profile)
        return
    rows = args.rows or args.events
    folder = Path(tempfile.mkdtemp(prefix="kc-import-bench-"))
    os.environ["BENCH_SQLITE_PATH"] = str(folder / "facts.sqlite3")
    setup(args.database)
    info = machine()
    data: dict = {"rows": rows, "machine": info}
    if not args.skip_baseline:
        small = folder / "baseline.csv"
        write_csv(small, args.baseline_rows)
        data["baseline"] = measure("old", small, args, fresh_database(args, folder, "old"))
        data["baseline"]["rows_per_s"] = args.baseline_rows / data["baseline"]["seconds"]
        new_small = measure("small", small, args, fresh_database(args, folder, "small"))
        data["new_on_baseline_rows"] = {
            **new_small,
            "rows_per_s": args.baseline_rows / new_small["seconds"],
        }
    big = folder / "import.csv"
    write_csv(big, rows)
    data["file_mb"] = big.stat().st_size / 1e6
    env = fresh_database(args, folder, "new")
    data["first"] = measure("first", big, args, env)
    data["first"]["rows_per_s"] = rows / data["first"]["seconds"]
    data["second"] = measure("second", big, args, env)
    if args.baseline_tree:
        tree_env = fresh_database(args, folder, "tree")
        data["tree"] = measure("first", big, args, tree_env, tree=args.baseline_tree)
        data["tree"]["rows_per_s"] = rows / data["tree"]["seconds"]
    data["second"]["rows_per_s"] = rows / data["second"]["seconds"]
    first, second = data["first"], data["second"]
    ratio = ""
    if "baseline" in data:
        ratio = f" ({first['rows_per_s'] / data['baseline']['rows_per_s']:.0f}x the old code's "
        ratio += f"{data['baseline']['rows_per_s']:,.0f} rows/s)"
    row = (
        f"| import {rows:,} rows, {database_label(info)} | ≤ 90 s, ≤ 300 MB | "
        f"**{first['seconds']:.1f} s** (CPU {first['cpu_seconds']:.1f} s, load "
        f"{first['load_average']:.1f}), {first['peak_rss_mb']:.0f} MB, "
        f"{first['rows_per_s']:,.0f} rows/s{ratio}; second run {second['seconds']:.1f} s, "
        f"{second['peak_rss_mb']:.0f} MB, {second['events'] - first['events']} new events |"
    )
    if "tree" in data:
        tree = data["tree"]
        row += (
            f" {args.baseline_tree} on the same file: {tree['seconds']:.1f} s (CPU "
            f"{tree['cpu_seconds']:.1f} s, load {tree['load_average']:.1f}), "
            f"{tree['peak_rss_mb']:.0f} MB; CPU ratio "
            f"{tree['cpu_seconds'] / first['cpu_seconds']:.2f}×"
        )
    emit("import_rows", row, data)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    # (PostgreSQL: the databases <BENCH_PG_NAME>_old/_small/_new are kept for inspection.)


if __name__ == "__main__":
    main()
