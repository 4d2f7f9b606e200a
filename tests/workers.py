"""Helpers for tests (and benchmarks) that push through real processes to one fake Klaviyo.

Why this exists: the delivery guarantees of issue 4 (faults, crashes, several workers, real task
engines) are only worth something when they hold across process boundaries. So the fake Klaviyo
runs in the test process behind a real HTTP server (we count at the fake object directly), and
workers are subprocesses started with ``tests.worker_settings``, pointed at the same database and
at the server through environment variables.

Also runnable as a tiny producer for engine tests, with the worker settings of the environment::

    DJANGO_SETTINGS_MODULE=tests.worker_settings python -m tests.workers record a@example.com
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
#: Redis the suite may use; db 5 is ours alone, so flushing it never touches anyone else's data.
REDIS_URL = os.environ.get("KLAVIYO_CONSENT_TEST_REDIS", "redis://127.0.0.1:6379/5")
#: The list every bulk-made event joins; tests create it on the fake as single opt-in.
LIST_ID = "Single"


def list_fake(**options: Any) -> Any:
    """A fake Klaviyo (``options`` as FakeKlaviyo takes them) holding ``LIST_ID``, single opt-in."""
    from klaviyo_consent.testing.fake import FakeKlaviyo

    fake = FakeKlaviyo(**options)
    fake.add_list(LIST_ID, "Newsletter", "single_opt_in")
    return fake


# --- services ------------------------------------------------------------------------------


def redis_answers(url: str = REDIS_URL) -> bool:
    """True when Redis at ``url`` answers a PING within a second."""
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except Exception:
        return False


def flush_redis(url: str = REDIS_URL) -> None:
    """Empty the suite's own Redis database (only the db number in ``url``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def database_url(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL that gives a subprocess the very database ``settings_dict`` points at.

    Under pytest-django that is the test database (``test_<name>``), which is what makes workers
    see the rows a ``transactional_db`` test committed.
    """
    if "postgresql" not in settings_dict["ENGINE"]:
        raise ValueError("worker processes need PostgreSQL: SQLite in-memory is per-process")
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"


# --- the fake over HTTP --------------------------------------------------------------------


class PostLog:
    """When POSTs reached the fake (per path), and how many it has answered.

    The fake counts requests but not when they came; a rate-limit test needs arrival times to
    show the limit was reached, not merely respected by a slow client. A crash test waits on
    ``answered`` to kill a worker right after Klaviyo accepted a job, before the worker knows.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.arrivals: dict[str, list[float]] = {}
        self.answered = 0

    def arrived(self, path: str) -> None:
        with self._changed:
            self.arrivals.setdefault(path, []).append(time.monotonic())

    def answer(self) -> None:
        with self._changed:
            self.answered += 1
            self._changed.notify_all()

    def wait_answered(self, count: int, timeout: float) -> bool:
        """Block until the fake has answered ``count`` POSTs in all (False on timeout)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.answered >= count, timeout)

    def busiest(self, path: str, window: float) -> int:
        """Most POSTs to ``path`` that arrived within any span of ``window`` seconds."""
        times = sorted(self.arrivals.get(path, []))
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best


def _instrumented(
    app: Callable[..., Iterable[bytes]], latency: float, posts: PostLog | None
) -> Callable[..., Iterable[bytes]]:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        is_post = posts is not None and environ.get("REQUEST_METHOD") == "POST"
        if is_post:
            posts.arrived(environ.get("PATH_INFO", ""))
        if latency:
            time.sleep(latency)
        answer = app(environ, start_response)
        if is_post:
            # The fake has decided (and applied the job); the answer is not yet on the wire.
            posts.answer()
        return answer

    return wrapped


@contextmanager
def serving(
    fake: Any,
    *,
    timeout_delay: float = 5.0,
    latency: float = 0.0,
    posts: PostLog | None = None,
) -> Iterator[Any]:
    """Serve ``fake`` over real HTTP from a background thread; yields the server (``.url``).

    ``latency`` holds each request before the fake sees it, so requests are spread out in time;
    ``posts`` records when POSTs came in and counts the answers.
    """
    from klaviyo_consent.testing.fake import make_server

    server = make_server(fake, port=0, timeout_delay=timeout_delay)
    if latency or posts is not None:
        server.set_app(_instrumented(server.get_app(), latency, posts))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- worker subprocesses -------------------------------------------------------------------


def worker_env(
    *,
    db_url: str,
    api_url: str,
    consent: dict[str, Any] | None = None,
    engine: str = "immediate",
    rate_limit_time_scale: float | None = None,
    rate_limit_margin: float | None = None,
) -> dict[str, str]:
    """The environment ``tests.worker_settings`` reads (see that module for each variable)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.worker_settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=db_url,
        KLAVIYO_API_URL=api_url,
        KLAVIYO_CONSENT_JSON=json.dumps(consent or {}),
        TASKS_ENGINE=engine,
        CELERY_BROKER_URL=REDIS_URL,
    )
    if rate_limit_time_scale is not None:
        env["RATE_LIMIT_TIME_SCALE"] = repr(rate_limit_time_scale)
    if rate_limit_margin is not None:
        env["RATE_LIMIT_MARGIN"] = repr(rate_limit_margin)
    return env


#: ``python -m django klaviyo_consent_sync --loop``: the plain worker.
SYNC_LOOP = ("-m", "django", "klaviyo_consent_sync", "--loop", "--interval", "0.2")
#: django-tasks-db's worker, polling often so tests are quick.
DB_WORKER = ("-m", "django", "db_worker", "--interval", "0.1", "--no-startup-delay", "--no-reload")


def celery_worker(name: str) -> tuple[str, ...]:
    """A real Celery worker on the example app; ``solo`` pool keeps one process to kill."""
    return (
        "-m",
        "celery",
        "-A",
        "example_project.celery",
        "worker",
        "--pool",
        "solo",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname",
        f"{name}@%h",
    )


class Worker:
    """One worker subprocess with its output in a log file (quoted when a test fails)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.args = tuple(args)
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, exactly what a crash looks like."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def run(args: Sequence[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Run a one-shot command (migrate, the producer) to completion; its output, or raise."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- data ----------------------------------------------------------------------------------


def bulk_record(
    addresses: Sequence[str],
    *,
    consent: str = "SUBSCRIBED",
    list_id: str = LIST_ID,
    custom_source: Callable[[int], str] | None = None,
    batch_size: int = 2000,
) -> list[int]:
    """Write the rows ``record_consent`` writes (profile, event, outbox row), in bulk.

    ``record_consent`` costs a few milliseconds an event (about 24 s for 10,000 on PostgreSQL
    here); the delivery tests need tens of thousands, and only the outbox rows matter to them.
    Email marketing only; profiles are reused by email. Returns the event ids in order.
    """
    from django.db import transaction
    from django.utils import timezone

    from klaviyo_consent.choices import Method
    from klaviyo_consent.models import ConsentEvent, Profile

    now = timezone.now()
    with transaction.atomic():
        known = dict(Profile.objects.filter(email__in=list(addresses)).values_list("email", "pk"))
        Profile.objects.bulk_create(
            [Profile(email=email) for email in dict.fromkeys(addresses) if email not in known],
            batch_size=batch_size,
        )
        known = dict(Profile.objects.filter(email__in=list(addresses)).values_list("email", "pk"))
        events = ConsentEvent.objects.append(
            [
                ConsentEvent(
                    profile_id=known[email],
                    email=email,
                    channel="email",
                    purpose="marketing",
                    consent=consent,
                    method=Method.API,
                    custom_source=custom_source(index) if custom_source else "",
                    list_id=list_id,
                    recorded_at=now,
                )
                for index, email in enumerate(addresses)
            ],
            batch_size=batch_size,
            next_attempt_at=now,
        )
    return [event.pk for event in events]


def emails(count: int, prefix: str = "p") -> list[str]:
    """``count`` distinct addresses, lower-case as Klaviyo keys them."""
    return [f"{prefix}{index}@example.com" for index in range(count)]


# --- producer entry point ------------------------------------------------------------------


def _record(email: str) -> None:
    """Record one email subscription the way a site does (record_consent, push on commit)."""
    import django

    if os.environ.get("TASKS_ENGINE") == "celery":
        # A site imports its Celery app in the project package, so enqueues use its broker.
        import example_project.celery  # noqa: F401
    django.setup()
    from klaviyo_consent.services.ledger import ConsentRequest, record_consent

    result = record_consent(
        ConsentRequest(
            consent="SUBSCRIBED",
            email=email,
            subscriptions={"email": {"marketing": True}},
            list_id=LIST_ID,
        )
    )
    print(json.dumps({"event_ids": [event.pk for event in result.events]}))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python -m tests.workers record EMAIL")
    _record(sys.argv[2])
